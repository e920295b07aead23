"""Streaming: 1 GiB each way through the proxy in bounded memory, and server-sent events as they happen.

The engine runs in this process, so the resident set of the test process covers
the client, the proxy and the backend together. The bytes are generated and
consumed on the fly (a repeating 1 MiB block), counted and checksummed.
"""

from __future__ import annotations

import asyncio
import functools
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.engine.conftest import STEP_TIMEOUT, Handler, Proxy, StartBackend, StartProxy, make_config, site

MIB = 1024 * 1024
BLOCK = bytes(range(256)) * (MIB // 256)
GIB_BLOCKS = 1024
#: Allowed growth of the resident set while 1 GiB passes through.
RSS_BUDGET = 50 * MIB
SAMPLE_EVERY = 16 * MIB


@functools.cache
def expected_crc(blocks: int) -> int:
    crc = 0
    for _ in range(blocks):
        crc = zlib.crc32(BLOCK, crc)
    return crc


def rss() -> int:
    """The current resident set of this process (VmRSS, not the high-water mark), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class Meter:
    """Counts bytes, checksums them, and samples the resident set as they pass."""

    def __init__(self) -> None:
        self.count = 0
        self.crc = 0
        self.peak = 0
        self._next_sample = 0

    def feed(self, chunk: bytes) -> None:
        self.count += len(chunk)
        self.crc = zlib.crc32(chunk, self.crc)
        self.sample()

    def sample(self) -> None:
        if self.count >= self._next_sample:
            self._next_sample += SAMPLE_EVERY
            self.peak = max(self.peak, rss())


def streaming_handler(blocks_param: str = "blocks") -> Handler:
    """A backend that streams `?blocks=N` copies of BLOCK with a Content-Length."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        blocks = int(request.query[blocks_param])
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = blocks * len(BLOCK)
        await resp.prepare(request)
        for _ in range(blocks):
            await resp.write(BLOCK)
        await resp.write_eof()
        return resp

    return handle


def counting_handler() -> Handler:
    """A backend that counts and checksums the request body without keeping it."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        meter = Meter()
        async for chunk in request.content.iter_any():
            meter.count += len(chunk)
            meter.crc = zlib.crc32(chunk, meter.crc)
        return web.json_response({"count": meter.count, "crc": meter.crc})

    return handle


async def download(session: aiohttp.ClientSession, p: Proxy, blocks: int) -> Meter:
    meter = Meter()
    url = f"{p.url}/big?blocks={blocks}"
    async with session.get(url, headers={"Host": "big.lan"}) as resp:
        assert resp.status == 200
        assert resp.content_length == blocks * MIB
        async for chunk in resp.content.iter_chunked(256 * 1024):
            meter.feed(chunk)
    return meter


async def upload(session: aiohttp.ClientSession, p: Proxy, blocks: int) -> tuple[Meter, dict[str, int]]:
    meter = Meter()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(blocks):
            meter.feed(BLOCK)  # counted as handed to the client, with the RSS sampled on the way
            yield BLOCK

    headers = {"Host": "big.lan", "Content-Length": str(blocks * MIB)}
    async with session.put(f"{p.url}/up", data=body(), headers=headers) as resp:
        assert resp.status == 200
        return meter, await resp.json()


async def test_one_gib_download_streams_in_bounded_memory(proxy: StartProxy, backend: StartBackend) -> None:
    up = await backend(streaming_handler())
    p = await proxy(make_config(site("big", ["big.lan"], [up.url])))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        warm = await download(session, p, 32)  # allocate the steady-state buffers first
        assert (warm.count, warm.crc) == (32 * MIB, expected_crc(32))
        before = rss()

        got = await download(session, p, GIB_BLOCKS)

    assert got.count == GIB_BLOCKS * MIB
    assert got.crc == expected_crc(GIB_BLOCKS)
    assert got.peak - before < RSS_BUDGET, f"RSS grew by {(got.peak - before) / MIB:.1f} MiB"


async def test_one_gib_upload_streams_in_bounded_memory(proxy: StartProxy, backend: StartBackend) -> None:
    up = await backend(counting_handler())
    p = await proxy(make_config(site("big", ["big.lan"], [up.url])))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        _, warm = await upload(session, p, 32)
        assert warm == {"count": 32 * MIB, "crc": expected_crc(32)}
        before = rss()

        sent, received = await upload(session, p, GIB_BLOCKS)

    assert received == {"count": GIB_BLOCKS * MIB, "crc": expected_crc(GIB_BLOCKS)}
    assert sent.count == GIB_BLOCKS * MIB
    assert sent.peak - before < RSS_BUDGET, f"RSS grew by {(sent.peak - before) / MIB:.1f} MiB"


async def test_server_sent_events_arrive_before_the_response_ends(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    async def events(request: web.BaseRequest) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(b"event: first\ndata: one\n\n")
        await gate.wait()  # set by the test only once "first" came out of the proxy
        await resp.write(b"event: second\ndata: two\n\n")
        await resp.write_eof()
        return resp

    up = await backend(events)
    p = await proxy(make_config(site("sse", ["sse.lan"], [up.url])))

    async with session.get(p.url + "/stream", headers={"Host": "sse.lan", "Accept": "text/event-stream"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), STEP_TIMEOUT)
        assert first == b"event: first\ndata: one\n\n"
        assert not gate.is_set()
        gate.set()
        rest = await asyncio.wait_for(resp.content.read(), STEP_TIMEOUT)

    assert rest == b"event: second\ndata: two\n\n"
