"""Feature abuse (issue 14): a response that decompresses to gigabytes is never buffered.

The upstream sends a real gzip bomb: about 1 MiB that inflates to 1 GiB of zeros, with
`Content-Encoding: gzip`. homeproxy's compression only ever compresses, and skips bodies
that are encoded already; the cache stores bodies as they are. So the bomb must reach
every client byte for byte, whether it accepts gzip or not, through a plain site, a
compressing one and a caching one, and it must be streamed: the upstream holds back its
second half until the client has received the start of the first, which a proxy that
held (or inflated) the whole body before sending could never let happen.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.engine.conftest import STEP_TIMEOUT, StartBackend, StartProxy, make_config, site

HOST = "bomb.test"
MIB = 1 << 20
INFLATED = 1024 * MIB
#: What the client must receive before the upstream sends the rest.
FIRST = 64 * 1024


@functools.cache
def gzip_bomb() -> bytes:
    """A valid gzip stream of `INFLATED` zero bytes, about 1 MiB long, made in well under a second.

    After a full flush deflate starts afresh, so every further MiB of zeros compresses to the
    same bytes: compress two, repeat the second, and write the trailer for the whole."""
    zeros = bytes(MIB)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    segment = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush(zlib.Z_FINISH)[:-8]  # the final block, without the trailer for 2 MiB
    crc = 0
    for _ in range(INFLATED // MIB):
        crc = zlib.crc32(zeros, crc)
    return head + segment * (INFLATED // MIB - 1) + end + struct.pack("<II", crc, INFLATED & 0xFFFFFFFF)


def test_abuse_gzip_bomb_is_one() -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 1.1 * MIB
    start = zlib.decompressobj(31).decompress(bomb[:100_000], 64 * MIB)
    zeros = start == bytes(64 * MIB)  # 100 kB already give 64 MiB (compared outside assert: no diff)
    assert zeros
    assert struct.unpack("<I", bomb[-4:])[0] == INFLATED % (1 << 32)


class Bomber:
    """Sends the bomb in two halves; the second only once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.requests = 0

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests += 1
        bomb = gzip_bomb()
        resp = web.StreamResponse(
            headers={"Content-Type": "text/plain", "Content-Encoding": "gzip", "Cache-Control": "max-age=600"}
        )
        resp.content_length = len(bomb)
        await resp.prepare(request)
        half = len(bomb) // 2
        await resp.write(bomb[:half])
        await asyncio.wait_for(self.release.wait(), STEP_TIMEOUT)
        await resp.write(bomb[half:])
        await resp.write_eof()
        return resp


@pytest.fixture
async def raw_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that does not inflate bodies itself (it would hold 1 GiB)."""
    async with aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


FEATURES: dict[str, dict[str, Any]] = {
    "plain": {},
    "compression": {"compression": {"min_bytes": 0}},
    "cache+compression": {"compression": {"min_bytes": 0}, "cache": True},
}


@pytest.mark.parametrize("features", FEATURES, ids=list(FEATURES))
async def test_abuse_gzip_bomb_passes_through_as_it_is_and_streamed(
    proxy: StartProxy, backend: StartBackend, raw_session: aiohttp.ClientSession, features: str
) -> None:
    bomber = Bomber()
    upstream = await backend(bomber.handle)
    p = await proxy(make_config(site("bomb", [HOST], [upstream.url], **FEATURES[features])))
    bomb = gzip_bomb()
    cached = "cache" in features
    for i, accept in enumerate(("gzip", "br, zstd", None, "gzip")):
        bomber.release = asyncio.Event()
        headers = {"Host": HOST}
        if accept is not None:
            headers["Accept-Encoding"] = accept
        async with raw_session.get(p.url + "/bomb", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"  # not inflated, not encoded again
            # Streamed: the start arrives while the upstream still holds the rest back.
            try:
                first = await asyncio.wait_for(resp.content.readexactly(FIRST), STEP_TIMEOUT)
            except TimeoutError:
                pytest.fail("no start of the body while the upstream held the rest: the proxy holds it back")
            bomber.release.set()
            body = first + await asyncio.wait_for(resp.content.read(), STEP_TIMEOUT)
        assert len(body) == len(bomb)
        assert hashlib.sha256(body).digest() == hashlib.sha256(bomb).digest()
        if cached:
            # Stored as it came (compressed, ~1 MiB): later clients get it from the cache.
            assert resp.headers["X-Cache"] == ("MISS" if i == 0 else "HIT")
    assert bomber.requests == (1 if cached else 4)
