"""`Request`: the one request model every part of the chain sees, and `RequestBody`, its body.

homeproxy's HTTP/1.1 server (`engine/h1/server.py`) parses a request with httptools and
hands the engine one `Request`: method, target, headers (read-only, case-insensitive,
decoded as UTF-8 with surrogateescape so the same bytes go upstream), the peer, the
listener it came in on, and the body as a stream with back-pressure. Nothing here knows
how the bytes were parsed, so the features (cache, compression, auth) do not either.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from multidict import CIMultiDictProxy, MultiDict

if TYPE_CHECKING:
    from homeproxy.engine.h1.client import ClientConnection

#: Bytes of request body buffered before reading from the client pauses.
BODY_HIGH_WATER = 256 * 1024
BODY_LOW_WATER = 64 * 1024


class BodyError(ConnectionResetError):
    """The client's body ended before its framing said (the connection closed or broke), or the
    server refused the rest of it (malformed, too slow, a chunk line too long)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        """The answer it calls for when none has begun: 400, 408 (too slow) or 413."""


class RequestBody:
    """The body of one request as the client sends it: `read(n)` and `readexactly(n)`.

    The connection feeds it; reading from the client pauses while more than
    `BODY_HIGH_WATER` bytes wait here, so a fast client cannot fill memory.
    """

    __slots__ = ("_buffered", "_chunks", "_conn", "_error", "_waiter", "discarded", "eof")

    def __init__(self, conn: ClientConnection | None) -> None:
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.eof = False
        """The whole body has arrived (it may still be buffered here)."""
        self.discarded: int | None = None
        """After `discard()`: the bytes dropped since."""

    # --- fed by the connection ---------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.discarded is not None:
            self.discarded += len(data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > BODY_HIGH_WATER and self._conn is not None:
            self._conn.pause_body()
        self._wake()

    def feed_eof(self) -> None:
        self.eof = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self.eof and self._error is None:
            self._error = error
            self._wake()

    def discard(self) -> None:
        """Nobody will read the rest: drop what is buffered and what still comes."""
        self.discarded = self._buffered
        self._chunks.clear()
        self._buffered = 0
        if self._conn is not None:
            self._conn.resume_body()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def failed(self) -> bool:
        """It broke off before its end (the client's connection closed, or it was refused)."""
        return self._error is not None

    # --- read by the chain ---------------------------------------------------------------------

    async def _wait(self) -> None:
        while not self._chunks and not self.eof:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _take(self, n: int) -> bytes:
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            chunk, rest = chunk[:n], chunk[n:]
            self._chunks.appendleft(rest)
        self._buffered -= len(chunk)
        if self._buffered < BODY_LOW_WATER and self._conn is not None:
            self._conn.resume_body()
        return chunk

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (-1: what is buffered now), waiting for some; b"" at the body's end."""
        await self._wait()
        if not self._chunks:
            return b""
        return self._take(n if n >= 0 else self._buffered)

    async def readexactly(self, n: int) -> bytes:
        """Exactly `n` bytes; `asyncio.IncompleteReadError` when the body ends first."""
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = await self.read(n - got)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def empty_body() -> RequestBody:
    """The body of a request that has none: at its end from the start."""
    body = RequestBody(None)
    body.eof = True
    return body


EMPTY_BODY = empty_body()
"""Shared by every request without a body (nothing is ever fed to it)."""

_EMPTY_QUERY: MultiDict[str] = MultiDict()


class Request:
    """One client request, as parsed; immutable but for what the connection feeds its body."""

    __slots__ = (
        "_path",
        "_query",
        "conn",
        "content",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "raw_path",
        "remote",
        "secure",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        conn: ClientConnection,
        method: str,
        raw_path: str,
        version: str,
        headers: CIMultiDictProxy[str],
        *,
        content: RequestBody,
        content_length: int | None,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.conn = conn
        self.method = method
        self.raw_path = raw_path
        """The request target exactly as sent (origin-form `/a?b`, or absolute-form `http://h/a`)."""
        self.version = version
        """`"1.1"` or `"1.0"`."""
        self.headers = headers
        self.remote = conn.remote
        """The peer's address (the socket's, not X-Forwarded-For's)."""
        self.secure = conn.secure
        """It came in over TLS."""
        self.content = content
        """The body (`EMPTY_BODY`, at its end already, when there is none)."""
        self.content_length = content_length
        self.keep_alive = keep_alive
        """The client may send another request on this connection after this one."""
        self.upgrade = upgrade
        """The client asked to switch protocols (`Connection: upgrade`, e.g. a WebSocket)."""
        self._path: str | None = None
        self._query: MultiDict[str] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.secure else "http"

    @property
    def body_exists(self) -> bool:
        return self.content is not EMPTY_BODY

    @property
    def transport(self) -> asyncio.Transport | None:
        """The client's transport (None once the connection is gone)."""
        return self.conn.transport

    @property
    def local_port(self) -> str:
        """The port the client connected to, for X-Forwarded-Port."""
        return self.conn.local_port

    @property
    def path_qs(self) -> str:
        """The origin-form target, still percent-encoded: path and query (also for absolute-form)."""
        raw = self.raw_path
        if raw.startswith("/"):
            return raw
        if raw == "*":
            return raw
        # absolute-form: scheme://authority/path?query
        rest = raw.partition("//")[2]
        slash = rest.find("/")
        query = rest.find("?")
        if slash < 0 or (0 <= query < slash):
            return "/" + rest[query:] if query >= 0 else "/"
        return rest[slash:]

    @property
    def path(self) -> str:
        """The path alone, still percent-encoded, without the query."""
        path = self._path
        if path is None:
            path = self._path = self.path_qs.partition("?")[0].partition("#")[0]
        return path

    @property
    def query_string(self) -> str:
        return self.path_qs.partition("?")[2].partition("#")[0]

    @property
    def query(self) -> MultiDict[str]:
        """The query's parameters, decoded."""
        query = self._query
        if query is None:
            qs = self.query_string
            query = self._query = MultiDict(parse_qsl(qs, keep_blank_values=True)) if qs else _EMPTY_QUERY
        return query

    async def send_continue(self) -> None:
        """Tell a client that sent `Expect: 100-continue` to go on with its body (once; HTTP/1.1 only)."""
        self.conn.send_continue(self)
