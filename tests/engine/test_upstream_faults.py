"""Upstream faults with the cache on the path (issue 14): an answer cut short is never stored,
never served later as a clean one, and the pool goes on working with the same upstream."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.engine.conftest import StartProxy, StartRawBackend, make_config, site
from tests.engine.test_h1_framing import Scripted, ok

BIG = 300_000  # over the 64 KiB read whole: streamed to the client (and teed into the cache)


def cut(n: int) -> bytes:
    """A cacheable answer that promises BIG bytes and closes after half of them."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nCache-Control: max-age=600\r\n\r\n" % BIG
    return head + b"a" * (BIG // 2)


def cut_chunked(n: int) -> bytes:
    """A cacheable chunked answer that closes without its last chunk."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=600\r\n\r\n"
    return head + b"%x\r\n%s\r\n" % (BIG, b"b" * BIG)


def whole(n: int) -> bytes:
    return ok(b"whole", b"Cache-Control: max-age=600\r\n")


@pytest.mark.parametrize("broken", [cut, cut_chunked], ids=["content-length", "chunked"])
async def test_an_answer_cut_short_is_never_cached_and_the_next_request_is_whole(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession, broken: object
) -> None:
    script = Scripted(lambda n: broken(n) if n == 0 else whole(n), close_after=True)  # type: ignore[operator]
    up = await raw_backend(script)
    p = await proxy(make_config(site("c", ["c.lan"], [up.url], cache=True)))

    async with session.get(p.url + "/file", headers={"Host": "c.lan"}) as resp:
        assert resp.status == 200  # the head had gone out before the upstream died
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # never a clean, short body

    # The second request is not a HIT of the half body: it goes upstream again and is whole.
    async with session.get(p.url + "/file", headers={"Host": "c.lan"}) as resp:
        assert (resp.status, await resp.read()) == (200, b"whole")
        assert resp.headers["X-Cache"] == "MISS"
    async with session.get(p.url + "/file", headers={"Host": "c.lan"}) as resp:
        assert (await resp.read(), resp.headers["X-Cache"]) == (b"whole", "HIT")
    assert script.requests == 2


async def test_the_pool_recovers_after_every_kind_of_broken_answer(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    broken = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # shorter than its length, then closed
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nlonger than two",  # longer
        b"HTCPCP/1.0 418 I'm a teapot\r\n\r\n",  # a bad status line
        b"",  # closed without a byte
    ]
    script = Scripted(lambda n: broken[n] if n < len(broken) else ok(b"fine"), close_after=True)
    up = await raw_backend(script)
    p = await proxy(make_config(site("s", ["s.lan"], [up.url], retries=0)))
    statuses = []
    for _ in broken:
        async with session.get(p.url, headers={"Host": "s.lan"}) as resp:
            try:
                await resp.read()
                statuses.append(resp.status)
            except aiohttp.ClientPayloadError:
                statuses.append(-resp.status)  # cut off after the head: never a clean answer
    assert all(s == 502 or s < 0 for s in statuses), statuses
    for _ in range(3):
        async with session.get(p.url, headers={"Host": "s.lan"}) as resp:
            assert (resp.status, await resp.read()) == (200, b"fine")


async def test_a_stall_mid_body_is_cut_at_read_timeout_and_not_cached(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nCache-Control: max-age=60\r\n\r\n" % BIG)
        writer.write(b"s" * (BIG // 3))
        await writer.drain()
        await release.wait()
        writer.close()

    up = await raw_backend(stall)
    p = await proxy(make_config(site("c", ["c.lan"], [up.url], cache=True, read_timeout="300ms")))
    try:
        async with session.get(p.url + "/slow", headers={"Host": "c.lan"}) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        async with session.get(p.url + "/slow", headers={"Host": "c.lan"}) as resp:
            assert resp.headers.get("X-Cache") != "HIT"
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    finally:
        release.set()
