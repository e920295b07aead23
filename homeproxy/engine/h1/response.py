"""`Response`: an upstream's answer as `H1Connection` parses it: status, headers (kept as the
upstream's bytes, decoded on first use), and the body, buffered with back-pressure on the upstream."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from homeproxy.engine.h1.errors import UpstreamProtocolError

if TYPE_CHECKING:
    from homeproxy.engine.h1.connection import H1Connection

SERVER = 1
DATE = 2
"""`Response.marks`: the head had a Server / a Date header."""
HIGH_WATER = 512 * 1024
"""Bytes of response body buffered before reading from the upstream pauses."""
LOW_WATER = 128 * 1024
OVERRUN = "upstream sent more bytes than its response's framing said"


class Response:
    """An upstream's response: status, reason and headers, then the body (read or iterated once)."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_error",
        "_headers",
        "_waiter",
        "complete",
        "content_length",
        "length_raw",
        "lengths",
        "marks",
        "raw",
        "reason",
        "reason_raw",
        "status",
        "until_eof",
    )

    def __init__(self, conn: H1Connection) -> None:
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.complete = False
        """The body has been received to its end (it may still be buffered here)."""
        self.status = 0
        self.reason = ""
        self.reason_raw = b""
        self.raw: list[tuple[bytes, bytes]] = []
        """The headers as the upstream sent them, hop-by-hop ones removed (`headers` decodes them)."""
        self._headers: CIMultiDict[str] | None = None
        self.content_length: int | None = None
        self.lengths = 0
        """How many Content-Length fields the head had."""
        self.length_raw = b""
        """The (last) Content-Length field's value as sent."""
        self.marks = 0
        """`SERVER` and `DATE`: which of those headers the head had."""
        self.until_eof = False
        """The body ends when the upstream closes the connection (no length, not chunked)."""

    @property
    def headers(self) -> CIMultiDict[str]:
        """The headers (decoded once, on first use: the express lane writes `raw` as it is)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDict([(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw])
        return headers

    # --- fed by the connection ----------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn._pause()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self.complete and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- read by the Forwarder ------------------------------------------------------------------

    async def _next(self, timeout: float | None) -> bytes | None:
        """The next chunk of body, or None at its end. Raises the connection's error, or TimeoutError."""
        while not self._chunks:
            if self.complete:
                if self._conn.overrun:
                    raise UpstreamProtocolError(OVERRUN)
                return None
            if self._error is not None:
                raise self._error
            self._waiter = self._conn.loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < LOW_WATER:
            self._conn._resume()
        return chunk

    async def read(self, timeout: float | None) -> bytes:
        """The whole body (for small ones of known length)."""
        chunks = self._chunks
        if self.complete and not self._conn.overrun and len(chunks) == 1:  # it came with the head
            self._buffered = 0
            return chunks.popleft()
        parts = []
        while (chunk := await self._next(timeout)) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def in_hand(self) -> bytes | None:
        """The whole body of a response read to its end (taken out of the buffer); None when the
        upstream sent more than its framing said (the body is not trusted)."""
        if self._conn.overrun:
            return None
        chunks = self._chunks
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return body

    async def iter_chunks(self, timeout: float | None) -> AsyncIterator[bytes]:
        """The body chunk by chunk as it arrives, with back-pressure on the upstream."""
        while (chunk := await self._next(timeout)) is not None:
            yield chunk
