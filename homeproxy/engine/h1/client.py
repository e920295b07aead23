"""`ClientConnection`: one client's connection to homeproxy's HTTP/1.1 server (`server.py`).

An `asyncio.Protocol` that feeds each read to llhttp, turns heads into `Request`s, runs the
server's handler for one request at a time (pipelined ones wait), writes what `reply.send()`
gives it, and decides after each answer whether the connection goes on, closes or lingers.
It enforces the `[server]` limits on what a client sends (sizes at parse time, timeouts when
the server's sweep calls `check_timeouts()`, `send_timeout` while a response waits on it); the
checks of each read, the refusals, the timeouts and the lingering close are in `client_limits.py`.
A little over 400 lines, and one piece on purpose: the parser's callbacks, the queue of requests
and the writes all move the same per-connection state, which is read on every request's path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from homeproxy.engine.h1 import client_limits
from homeproxy.engine.h1.client_limits import (
    BODY_FULL,
    PEER_FULL,
    QUEUE_FULL,
    UPGRADED,
    feed,
    linger,
    send_refusal,
    write_error,
)
from homeproxy.engine.h1.limits import MAX_QUEUED, WRITE_HIGH_WATER, Refused, check_head
from homeproxy.engine.request import EMPTY_BODY, BodyError, Request, RequestBody

if TYPE_CHECKING:
    from homeproxy.engine.h1.server import HttpServer

log = logging.getLogger(__name__)


class ClientConnection(asyncio.Protocol):
    """One client connection: parse, hand each request to the handler in turn, write answers."""

    def __init__(self, server: HttpServer, secure: bool) -> None:
        self.server = server
        self.secure = secure
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.local_port = ""
        self.ip_key = ""
        """What the server counts this connection against (its client's address); "" when not counted."""
        self._limits = server.settings()
        """The `[server]` settings for the request being read (taken again at each request's start)."""
        self._served = False
        """A request has begun on this connection (before, its wait counts as a head's)."""
        self._parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[Request] = collections.deque()
        self._current: Request | None = None
        """The request being handled (its response is being written)."""
        self._ready: Request | None = None
        """The current request, when its handler waits for the end of the read that brought it."""
        self._parsing: Request | None = None
        """The request whose body the parser is reading."""
        self._url: list[bytes] = []
        self._url_len = 0
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._header_bytes = 0
        self._in_head = False
        self._head_began = 0.0
        self.idle_since = 0.0
        self._refused: Refused | None = None
        """A parse error met while another request was being answered: sent after it."""
        self._upgraded: bytearray | None = None
        """After an upgrade request: the bytes the client sent past its head."""
        self._sink: Callable[[bytes], None] | None = None
        self._on_close: Callable[[], None] | None = None
        self._on_writable: Callable[[bool], None] | None = None
        self._reading_paused = 0
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.response_started = False
        """The current request's status line has been written (too late for another answer)."""
        self._continued = False
        self.must_close = False
        """Close once the current response is written."""
        self._lingering = 0.0
        """When the connection began dropping the rest of an answered request's body (0: not)."""
        self._body_at = 0.0
        """When the body being read last made progress (or began to be awaited)."""
        self._chunked = False
        """The body being read is chunked."""
        self._read_body = 0
        """Body bytes the read being parsed held."""
        self._chunk_mark = False
        """A chunk began or ended, or a trailer field did, in the read being parsed."""
        self._chunk_bytes = 0
        """Bytes of chunk framing read since the last chunk began or ended (`MAX_CHUNK_LINE`)."""

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        sock = transport.get_extra_info("sockname")
        self.local_port = str(sock[1]) if isinstance(sock, tuple) and len(sock) > 1 else ""
        self.idle_since = self.loop.time()
        # Room for a few upstream reads before a stream waits on the client (asyncio's 64 KiB
        # makes a fast download stop and start for every read).
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[attr-defined]
        if not self.server.admit(self):  # stopping, or over a connection cap: closed at once
            self.abort()

    def data_received(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink(data)
            return
        if self._upgraded is not None:
            self._upgraded += data
            return
        if self._refused is not None:
            return
        feed(self, data)
        # A request whose head came in this read starts only now, after the whole read was
        # parsed: one the same read shows to be malformed (a bad chunk) is never handled.
        ready, self._ready = self._ready, None
        if ready is not None and ready is self._current:
            self._start(ready)

    def eof_received(self) -> bool | None:
        parsing = self._parsing
        if parsing is not None and not parsing.content.eof:
            parsing.content.fail(BodyError("the client closed the connection before its body's end"))
        return None  # close the transport: connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.release(self)
        for request in (self._parsing, self._current, *self._queue):
            if request is not None:
                request.content.fail(BodyError("the client's connection closed"))
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("the client's connection closed"))
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._on_writable is not None:
            self._on_writable(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._on_writable is not None:
            self._on_writable(True)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_began = self.loop.time()
        self._limits = self.server.settings()
        self._url = []
        self._url_len = 0
        self._headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url_len += len(url)
        if self._url_len > self._limits.max_request_line:
            raise Refused(414, "request target too long")
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Also a chunked body's trailer fields, which are counted here and dropped.
        limits = self._limits
        size = len(name) + len(value)
        if size > limits.max_request_line:
            raise Refused(431, "header line too long")
        self._header_bytes += size + 4  # ": " and CRLF
        if self._header_bytes > limits.max_header_size:
            raise Refused(431, "request head too large")
        headers = self._headers
        if limits.max_headers and len(headers) >= limits.max_headers:
            raise Refused(431, "too many headers")
        self._chunk_mark = True
        headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version()
        headers = CIMultiDict(self._headers)
        self._headers = []
        url = self._url
        target = (url[0] if len(url) == 1 else b"".join(url)).decode("utf-8", "surrogateescape")
        chunked, length = check_head(version, target, headers)
        body = RequestBody(self) if chunked or length else EMPTY_BODY
        self._chunked = chunked
        self._chunk_bytes = 0
        self._body_at = self.loop.time()
        request = Request(
            self,
            parser.get_method().decode("ascii"),
            target,
            version,
            CIMultiDictProxy(headers),
            content=body,
            content_length=length,
            keep_alive=parser.should_keep_alive(),
            upgrade=parser.should_upgrade(),
        )
        self._parsing = request
        if self._current is None:
            self._begin(request, start=False)
        else:
            self._queue.append(request)
            if len(self._queue) >= MAX_QUEUED:
                self._pause(QUEUE_FULL)

    def on_body(self, body: bytes) -> None:
        self._read_body += len(body)
        parsing = self._parsing
        if parsing is not None:
            parsing.content.feed(body)

    def on_chunk_header(self) -> None:
        self._chunk_mark = True

    def on_chunk_complete(self) -> None:
        self._chunk_mark = True

    def on_message_complete(self) -> None:
        parsing, self._parsing = self._parsing, None
        if parsing is not None:
            if parsing.content is not EMPTY_BODY:  # at its end already
                parsing.content.feed_eof()
            if self._lingering and self.transport is not None:
                self.transport.close()
                raise Refused(0, "lingering close")  # stop parsing: nothing after it is read

    # --- requests ---------------------------------------------------------------------------------

    def _begin(self, request: Request, *, start: bool) -> None:
        """`request` is the one answered now; its handler starts now (`start`) or once the read
        that brought it has been parsed whole (`data_received`)."""
        self._current = request
        self._served = True
        self.response_started = False
        self._continued = False
        self.must_close = False
        if start:
            self._start(request)
        else:
            self._ready = request

    def _start(self, request: Request) -> None:
        """Hand `request` to the express lane (`engine/express.py`), or else to the handler in a task."""
        lane = self.server.express
        if lane is not None:
            try:
                if lane.take(request):
                    return
            except Exception:  # the lane's checks failed before it took the request: the ordinary way
                log.exception("express lane: %s %s", request.method, request.raw_path)
        self.server.run(self._run(request, self.server.handler(request)))

    def run(self, request: Request, work: Awaitable[None]) -> None:
        """Answer `request` with `work`, in a task (what the express lane hands back)."""
        self.server.run(self._run(request, work))

    async def _run(self, request: Request, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:
            log.exception("error handling %s %s", request.method, request.raw_path)
            if not self.response_started and self.transport is not None:
                write_error(self, 500)
            self.must_close = True
        finally:
            self.finished(request)

    def finished(self, request: Request) -> None:
        """The handler is done with `request`: go on to the next one, or close."""
        self._current = None
        transport = self.transport
        if transport is None or self._sink is not None:
            return
        body = request.content
        if body.failed:  # malformed, too slow or too long: nothing more is read from this client
            transport.close()
            return
        if not body.eof:  # the rest of its body is still on the way: read and drop it, then close
            linger(self, body)
            return
        if self.must_close or not request.keep_alive or request.upgrade or self.server.closing:
            transport.close()
            return
        self.idle_since = self.loop.time()
        if self._refused is not None:
            send_refusal(self, self._refused)
            return
        if self._queue:
            self._begin(self._queue.popleft(), start=True)
            if len(self._queue) < MAX_QUEUED:
                self._resume(QUEUE_FULL)

    def keeps_alive(self, request: Request) -> bool:
        """Will the connection stay open after this response (for the Connection header)?"""
        body = request.content
        return (
            request.keep_alive and not self.must_close and not request.upgrade and not self.server.closing and body.eof
        )

    # --- writing (used by engine/reply.py) -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client's connection closed")
        self.response_started = True
        transport.write(data)

    async def drain(self) -> None:
        """Wait while the client's transport holds too much unsent (a slow reader), up to
        `send_timeout`; then the connection is cut (ConnectionResetError)."""
        if self.write_paused and self.transport is not None:
            self._drain = self.loop.create_future()
            timeout = self.server.settings().send_timeout
            try:
                async with asyncio.timeout(timeout):
                    await self._drain
            except TimeoutError:
                self.abort()
                raise ConnectionResetError(f"the client read nothing for {timeout:g} s") from None
            finally:
                self._drain = None

    def send_continue(self, request: Request) -> None:
        if request is self._current and not self._continued and not self.response_started and request.version == "1.1":
            self._continued = True
            self._body_at = self.loop.time()  # the client's body is awaited from now on
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close_if_idle(self) -> None:
        if self._current is None and self.transport is not None:
            self.transport.close()

    # --- tunnels (WebSockets) ------------------------------------------------------------------------

    def tunnel(
        self, sink: Callable[[bytes], None], on_close: Callable[[], None], on_writable: Callable[[bool], None]
    ) -> bytes:
        """From now on every byte the client sends goes to `sink`, `on_close` is called when it
        hangs up and `on_writable(False/True)` when its transport fills up and drains.
        Returns the bytes that came after the upgrade request's head."""
        rest = bytes(self._upgraded or b"")
        self._upgraded = None
        self._sink = sink
        self._on_close = on_close
        self._on_writable = on_writable
        self._resume(UPGRADED)
        return rest

    def pause_reading(self) -> None:
        self._pause(PEER_FULL)

    def resume_reading(self) -> None:
        self._resume(PEER_FULL)

    # --- flow control and limits -------------------------------------------------------------------------

    check_timeouts = client_limits.check_timeouts
    """Called by the server's sweep about once a second (`client_limits.py`)."""

    def pause_body(self) -> None:
        self._pause(BODY_FULL)

    def resume_body(self) -> None:
        self._resume(BODY_FULL)

    def _pause(self, why: int) -> None:
        if not self._reading_paused and self.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()
        self._reading_paused |= why

    def _resume(self, why: int) -> None:
        was = self._reading_paused
        self._reading_paused &= ~why
        if was and not self._reading_paused and self.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()
