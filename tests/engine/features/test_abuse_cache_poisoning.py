"""Feature abuse (issue 14): cache-key poisoning through headers the cache does not key on.

The upstream builds an absolute link from every header that frameworks read to learn
"where am I" (Host, X-Forwarded-Host/-Proto/-Port/-Scheme/-Prefix, X-Original-URL,
X-Rewrite-URL, X-Host, Forwarded, X-HTTP-Method-Override) and says the page may be
cached for ten minutes. An attacker asks first, with one of those headers set; then a
victim asks plainly. The victim must get the page the upstream makes for a plain request,
never the attacker's.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from tests.engine.conftest import Proxy, StartBackend, StartProxy, fetch, make_config, site

HOST = "app.test"

#: The request headers the upstream reflects (what it sees of each, None if absent).
REFLECTED = (
    "Host",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Scheme",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Original-Host",
    "X-Host",
    "Forwarded",
    "X-HTTP-Method-Override",
)


async def reflecting(request: web.BaseRequest) -> web.StreamResponse:
    """A page whose every link depends on the forwarding headers; cacheable for 10 minutes."""
    seen = {name: request.headers.get(name) for name in REFLECTED}
    return web.json_response(seen, headers={"Cache-Control": "max-age=600"})


@pytest.fixture
async def upstream(backend: StartBackend) -> str:
    return (await backend(reflecting)).url


async def page(
    session: aiohttp.ClientSession, p: Proxy, path: str, **headers: str
) -> tuple[dict[str, str | None], str]:
    got = await fetch(session, p, path, host=headers.pop("Host", HOST), headers=headers)
    assert got.status == 200, got.body[:200]
    return json.loads(got.body), got.headers.get("X-Cache", "")


async def test_abuse_poison_x_forwarded_host_from_a_client_is_replaced_by_host(
    proxy: StartProxy, upstream: str, session: aiohttp.ClientSession
) -> None:
    """homeproxy sets X-Forwarded-Host (and -Proto, -Port) itself: a client's are never passed on."""
    p = await proxy(make_config(site("app", [HOST], [upstream], cache=True)))
    attacked, _ = await page(
        session,
        p,
        "/xfh",
        **{"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "1"},
    )
    assert attacked["X-Forwarded-Host"] == HOST
    assert attacked["X-Forwarded-Proto"] == "http"
    assert attacked["X-Forwarded-Port"] == str(p.port)
    victim, status = await page(session, p, "/xfh")
    assert status == "HIT"
    assert victim == attacked  # the same page: nothing of the attacker's in it


ATTACKS = [
    ("X-Forwarded-Scheme", "nothttps"),
    ("X-Forwarded-Prefix", "/evil"),
    ("X-Forwarded-Server", "evil.example"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X-Original-Host", "evil.example"),
    ("X-Host", "evil.example"),
    ("Forwarded", "host=evil.example;proto=https"),
    ("X-HTTP-Method-Override", "DELETE"),
]


@pytest.mark.parametrize(("name", "value"), ATTACKS, ids=[name for name, _ in ATTACKS])
async def test_abuse_poison_unkeyed_headers_never_reach_the_cached_page(
    proxy: StartProxy, upstream: str, session: aiohttp.ClientSession, name: str, value: str
) -> None:
    p = await proxy(make_config(site("app", [HOST], [upstream], cache=True)))
    # Cold cache: the attacker's answer would be the one stored.
    attacked, status = await page(session, p, "/cold", **{name: value})
    assert attacked[name] == value  # passed on to the upstream as sent ...
    assert status == "BYPASS"  # ... so its answer is neither stored nor served from the cache
    victim, status = await page(session, p, "/cold")
    assert victim[name] is None
    assert status == "MISS"
    # Warm cache: the attacker gets a fresh answer of its own; the stored page stays clean.
    again, status = await page(session, p, "/cold", **{name: value})
    assert (again[name], status) == (value, "BYPASS")
    victim, status = await page(session, p, "/cold")
    assert (victim[name], status) == (None, "HIT")


async def test_abuse_poison_a_port_in_host_is_part_of_the_key(
    proxy: StartProxy, upstream: str, session: aiohttp.ClientSession
) -> None:
    """`Host: app.test:1337` routes like `app.test`, and X-Forwarded-Host quotes it as sent."""
    p = await proxy(make_config(site("app", [HOST], [upstream], cache=True)))
    attacked, status = await page(session, p, "/port", Host=f"{HOST}:1337")
    assert (attacked["X-Forwarded-Host"], status) == (f"{HOST}:1337", "MISS")
    victim, status = await page(session, p, "/port")
    assert (victim["X-Forwarded-Host"], status) == (HOST, "MISS")
    # Each spelling has its own entry; both are served from the cache.
    assert (await page(session, p, "/port", Host=f"{HOST}:1337")) == (attacked, "HIT")
    assert (await page(session, p, "/port")) == (victim, "HIT")
    # An unsafe request on one spelling invalidates the bare host's entry too.
    await fetch(session, p, "/port", host=f"{HOST}:1337", method="POST")
    assert (await page(session, p, "/port"))[1] == "MISS"
    assert (await page(session, p, "/port", Host=f"{HOST}:1337"))[1] == "MISS"
    # A purge names a host name: every spelling of it goes.
    assert await asyncio.to_thread(p.engine.purge, "app", f"http://{HOST}/port") == 2


async def test_abuse_poison_a_trusted_proxys_forwarded_host(
    proxy: StartProxy, upstream: str, session: aiohttp.ClientSession
) -> None:
    """From a trusted proxy X-Forwarded-Host is believed and passed on: an answer made for
    another host than Host is not stored; the usual case (the same host) is cached."""
    p = await proxy(make_config(site("app", [HOST], [upstream], cache=True), trusted_proxies=["127.0.0.1/32"]))
    attacked, status = await page(session, p, "/t", **{"X-Forwarded-Host": "evil.example"})
    assert (attacked["X-Forwarded-Host"], status) == ("evil.example", "BYPASS")
    victim, status = await page(session, p, "/t")
    assert (victim["X-Forwarded-Host"], status) == (HOST, "MISS")
    same, status = await page(session, p, "/t", **{"X-Forwarded-Host": HOST.upper()})
    assert (same, status) == (victim, "HIT")


async def test_abuse_poison_site_owners_own_request_headers_stay_cacheable(
    proxy: StartProxy, upstream: str, session: aiohttp.ClientSession
) -> None:
    """A forwarding header the site's `headers.request.set` gives every request is no attack."""
    p = await proxy(
        make_config(
            site(
                "app",
                [HOST],
                [upstream],
                cache=True,
                headers={"request": {"set": {"X-Forwarded-Prefix": "/app"}, "remove": ["X-Original-URL"]}},
            )
        )
    )
    first, status = await page(session, p, "/own", **{"X-Forwarded-Prefix": "/evil", "X-Original-URL": "/admin"})
    assert (first["X-Forwarded-Prefix"], first["X-Original-URL"], status) == ("/app", None, "MISS")
    assert (await page(session, p, "/own"))[1] == "HIT"
