"""Feature abuse (issue 14): `Vary` explosions.

An upstream varies on headers that every client sends differently (User-Agent, Cookie,
Accept-Language), or on `*`; a client makes every request a new variant. The cache must
keep a bounded number of variants per URL (`MAX_VARIANTS`, the least recently used go
first) on top of its byte bound, and store nothing for `Vary: *`.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from homeproxy.engine.features.cache import SharedCache
from homeproxy.engine.features.cache.store import MAX_VARIANTS
from tests.engine.conftest import Proxy, StartBackend, StartProxy, make_config, site

HOST = "app.test"
REQUESTS = 10_000
#: Requests in flight at once (one keep-alive session: the test is about the cache, not sockets).
IN_FLIGHT = 32


def shared(p: Proxy) -> SharedCache:
    cache = p.engine.features.cache
    assert cache is not None
    return cache


async def varying(request: web.BaseRequest) -> web.StreamResponse:
    vary = request.query.get("vary", "User-Agent, Accept-Language, Cookie")
    return web.Response(
        text=f"for {request.headers.get('User-Agent')}",
        headers={"Cache-Control": "max-age=600", "Vary": vary},
    )


@pytest.fixture
async def proxied(proxy: StartProxy, backend: StartBackend) -> Proxy:
    upstream = await backend(varying)
    return await proxy(make_config(site("app", [HOST], [upstream.url], cache=True)))


async def storm(session: aiohttp.ClientSession, p: Proxy, path: str, count: int) -> list[str]:
    """`count` requests for `path`, each with a User-Agent (and Cookie) of its own; the X-Cache values."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> str:
        headers = {"Host": HOST, "User-Agent": f"bot/{i}", "Cookie": f"id={i}", "Accept-Language": f"x-{i % 7}"}
        async with gate, session.get(p.url + path, headers=headers) as resp:
            assert resp.status == 200
            assert await resp.text() == f"for bot/{i}"
            return resp.headers["X-Cache"]

    return await asyncio.gather(*(one(i) for i in range(count)))


async def test_abuse_vary_ten_thousand_user_agents_keep_a_bounded_number_of_variants(
    proxied: Proxy, session: aiohttp.ClientSession
) -> None:
    cache = shared(proxied)
    statuses = await storm(session, proxied, "/page", REQUESTS)
    assert statuses.count("MISS") == REQUESTS  # every one a variant of its own
    assert len(cache) == MAX_VARIANTS
    entries, held = cache.usage()["app"]
    assert entries == MAX_VARIANTS
    # Small answers, counted with headers, key and overhead: under 4 KiB each, so the URL
    # holds ~100 KiB however many clients come.
    assert cache.bytes == held <= MAX_VARIANTS * 4096
    # The cache still works: the latest variants are served from it, the oldest are gone.
    latest = await storm(session, proxied, "/page", 1)
    assert latest == ["MISS"]  # bot/0 was evicted long ago
    headers = {"Host": HOST, "User-Agent": f"bot/{REQUESTS - 1}", "Cookie": f"id={REQUESTS - 1}"}
    headers["Accept-Language"] = f"x-{(REQUESTS - 1) % 7}"
    async with session.get(proxied.url + "/page", headers=headers) as resp:
        assert resp.headers["X-Cache"] == "HIT"
    assert len(cache) == MAX_VARIANTS


async def test_abuse_vary_star_is_never_stored(proxied: Proxy, session: aiohttp.ClientSession) -> None:
    statuses = await storm(session, proxied, "/star?vary=*", 200)
    assert set(statuses) == {"MISS"}
    assert len(shared(proxied)) == 0
