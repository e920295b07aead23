"""One HTTP/1.1 connection to an upstream: write a request, parse its response with httptools.

httptools is llhttp, the C parser Node uses. This module adds what a proxy needs around it:

- Framing (RFC 9112 section 6.3): Content-Length, chunked, and close-delimited bodies
  (llhttp cannot be told of the end of the stream, so a body with neither length nor
  chunking ends here, at EOF); no body for HEAD, 1xx, 204 and 304. Interim 1xx answers
  (100 Continue, 103 Early Hints) are skipped; a 101 to a request that asked for no upgrade,
  a parse error, or bytes the upstream sends while idle make the connection unusable.
- Reuse only when the response was read to its end, nothing is left unread, the request was
  sent whole, and neither side said `Connection: close` (llhttp's `should_keep_alive`).
- Flow control both ways: reading pauses while more than `HIGH_WATER` bytes of the body wait
  for the client; a streamed request body waits for the transport to drain.
- Errors are this package's own (`errors.py`), so the Forwarder can tell a connection the
  upstream had closed (safe to send again) from a failure mid-answer.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import httptools

from homeproxy.engine.h1.errors import UpstreamLost, UpstreamProtocolError
from homeproxy.engine.h1.response import DATE, HIGH_WATER, LOW_WATER, OVERRUN, SERVER, Response
from homeproxy.engine.hop import HOP_BY_HOP

__all__ = ["DATE", "HIGH_WATER", "LOW_WATER", "OVERRUN", "SERVER", "H1Connection", "Response"]

_MARKS = {b"server": SERVER, b"date": DATE}
_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP)
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


def _time_out(head: asyncio.Future[Response]) -> None:
    if not head.done():
        head.set_exception(TimeoutError())


class H1Connection(asyncio.Protocol):
    """One keep-alive connection; `request()` one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None
        self.closed = False
        self.served = 0
        """Responses read to their end on this connection (> 0: the next request reuses it)."""
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._at_boundary = False
        """The parser ended its last message itself (it may parse the next one: see `send`)."""
        self._response: Response | None = None
        self._head: asyncio.Future[Response] | None = None
        self._head_only = False
        self._active = False
        """A request is out and its response not yet read to its end."""
        self._interim = False
        self._header_items: list[tuple[bytes, bytes]] = []
        self._keep_alive = False
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self.sent_whole = True
        """The request, body included, has been handed to the transport whole."""
        self.overrun = False
        """The upstream sent more than the response's framing said (see `_overrun`)."""
        self.notify: Callable[[], None] | None = None
        """Called once, after the read (or close, or timeout) that settled the response's head:
        the express lane (`engine/express.py`) waits with this instead of a task."""

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        # Kept for the pool's closed-by-the-peer check (uvloop makes a new object per call).
        self.sock = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # nothing asked: an upstream that talks out of turn is not reused
            self.close()
            return
        if not self._active and self._response is not None and self._response.complete:
            self._overrun()
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(UpstreamProtocolError("upstream switched protocols (101) unasked"))
        except httptools.HttpParserError as e:
            if not self._active:
                self._overrun()
            else:
                self._broken(UpstreamProtocolError(f"upstream sent a malformed response ({e})"))
        if self.notify is not None:
            self._settled()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response, head = self._response, self._head
        if response is not None and response.until_eof and not response.complete and exc is None:
            response._finish()  # a close-delimited body ends here
            self._parser = None
        elif head is not None and not head.done():
            head.set_exception(UpstreamLost("upstream closed the connection before answering", reused=self.served > 0))
        elif response is not None and not response.complete:
            response._fail(UpstreamLost("the connection closed before the body's end", reused=False))
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("upstream closed the connection"))
        if self.notify is not None:
            self._settled()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- httptools callbacks --------------------------------------------------------------------
    # After the response's end the parser may go on with the rest of the same read: anything
    # there is more than was asked for, so the connection is not used again.

    def on_message_begin(self) -> None:
        if not self._active:
            self._overrun()

    def on_status(self, status: bytes) -> None:
        if self._active and self._response is not None:
            self._response.reason = status.decode("latin-1")
            self._response.reason_raw = status

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools joins a header split across reads: each call is one whole header.
        self._header_items.append((name, value))

    def on_headers_complete(self) -> None:
        parser, response = self._parser, self._response
        if not self._active or parser is None or response is None:
            return
        status = parser.get_status_code()
        items, self._header_items = self._header_items, []
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: the real answer follows
            return
        self._interim = False
        if status == 101:  # the engine asks for no upgrade here (WebSockets go through upstream_ws)
            self._broken(UpstreamProtocolError("upstream switched protocols (101) unasked"))
            return
        response.status = status
        raw = response.raw
        length: int | None = None
        chunked = False
        named: set[bytes] = set()
        marks = _MARKS
        for item in items:
            lower = item[0].lower()
            if lower not in _HOP_BY_HOP:  # hop-by-hop headers end here (RFC 9110 section 7.6.1)
                raw.append(item)
                if lower in marks:
                    response.marks |= marks[lower]
                elif lower == b"content-length":
                    value = item[1]
                    length = int(value) if value.isdigit() else None
                    response.lengths += 1
                    response.length_raw = value
            elif lower == b"transfer-encoding":
                chunked = b"chunked" in item[1].lower()
            elif lower == b"connection":
                value = item[1].lower()
                if value not in _PLAIN_CONNECTION:  # it names headers (rare)
                    named |= {t.strip() for t in value.split(b",")} - {b"close", b"keep-alive", b""}
        if named:  # and so do those the upstream's Connection header names
            response.raw = raw = [item for item in raw if item[0].lower() not in named]
            lowered = [item[0].lower() for item in raw]
            response.lengths = lowered.count(b"content-length")
            response.marks = (SERVER if b"server" in lowered else 0) | (DATE if b"date" in lowered else 0)
        response.content_length = None if chunked else length
        no_body = self._head_only or status in (204, 304)
        response.until_eof = not no_body and not chunked and length is None
        self._keep_alive = parser.should_keep_alive() and not response.until_eof
        head = self._head
        if head is not None and not head.done():
            head.set_result(response)
        if no_body:
            # llhttp cannot know that a HEAD answer has no body: the exchange ends here, and a
            # connection whose HEAD answer declared a body length is not trusted for another.
            self._keep_alive = self._keep_alive and (length in (None, 0) or status in (204, 304))
            self._done()

    def on_body(self, body: bytes) -> None:
        if self._active and self._response is not None and not self._interim:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._interim and self._active:
            self._interim = False
            return
        self._at_boundary = True
        self._done()

    # --- the exchange -------------------------------------------------------------------------------

    def _done(self) -> None:
        response = self._response
        if not self._active or response is None:
            return
        self._active = False
        self.served += 1
        response._finish()

    def send(self, head: bytes, body: bytes | None, *, head_only: bool, streaming: bool = False) -> None:
        """Write the request's head (and a body in hand); with `streaming`, the body follows through
        `write()` and the request is whole only at `body_sent()`. UpstreamLost (unsent) when the
        connection is found closed first."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            raise UpstreamLost("upstream closed the connection", reused=self.served > 0, unsent=True)
        # A parser that ended its last message itself goes on with the next; after an answer it
        # could not frame alone (to a HEAD, say) it might still wait for a body: a new one.
        if not self._at_boundary or self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        self._at_boundary = False
        self._header_items = []  # a chunked answer's trailer fields: dropped, never the next head's
        self._response = Response(self)
        self._active = True
        self._head = self.loop.create_future()
        self._head_only = head_only
        self._keep_alive = False
        self.sent_whole = not streaming
        transport.write(head + body if body else head)

    def head_timed_out(self) -> None:
        """The express lane's `header_timeout` timer: the head did not come in time."""
        head = self._head
        if head is not None:
            _time_out(head)
        if self.notify is not None:
            self._settled()

    def _settled(self) -> None:
        head = self._head
        if head is not None and head.done():
            notify, self.notify = self.notify, None
            if notify is not None:
                notify()

    async def response(self, timeout: float | None) -> Response:
        """The response's head (status, reason, headers), within `timeout` seconds."""
        head = self._head
        assert head is not None
        if head.done() or timeout is None:
            return await head
        # A timer of its own rather than asyncio.timeout(): this is on every request's path.
        timer = self.loop.call_later(timeout, _time_out, head)
        try:
            return await head
        finally:
            timer.cancel()

    async def write(self, data: bytes) -> None:
        """Write a piece of a streamed request body, waiting while the transport is full."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("upstream closed the connection")
        transport.write(data)
        if self._write_paused:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def body_sent(self) -> None:
        self.sent_whole = True

    def reusable(self) -> bool:
        """May this connection carry another request?"""
        response = self._response
        return (
            not self.closed
            and self._keep_alive
            and self.sent_whole
            and response is not None
            and response.complete
            and not response._chunks
        )

    def _overrun(self) -> None:
        """Bytes after the response's end: more than its framing said. The body is not trusted
        (`Response` raises at its end instead of ending cleanly) and the connection is closed."""
        self.overrun = True
        self._keep_alive = False
        response = self._response
        if response is not None:
            response._wake()
        self.close()

    def _broken(self, error: BaseException) -> None:
        head, response = self._head, self._response
        if head is not None and not head.done():
            head.set_exception(error)
        elif response is not None:
            response._fail(error)
        self.close()

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        self._parser = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._parser = None
        if self.transport is not None:
            self.transport.abort()
