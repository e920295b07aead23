"""`Reply`: a response as it flows back *up* the chain, and `send()`, which writes it.

Handlers return a `Reply` (status, mutable headers, a body that is either
bytes or an async iterator of chunks) instead of writing to the client
themselves, so every middleware on the way up can change it: set headers,
wrap the body (compression compresses chunk by chunk, the cache tees chunks
into an entry), or replace it (a cache hit). Only `send()`, at the top,
touches the client connection.

`send()` tells the two ways a stream can fail apart: the upstream (reading a
chunk raised) and the client (writing a chunk raised). After the status line
has gone out an upstream failure cuts the client connection, so that the
client sees a truncated body rather than a clean, wrong end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

from multidict import CIMultiDict

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.h1.errors import UpstreamError
from homeproxy.engine.request import Request

Body = bytes | AsyncIterator[bytes]

#: Recorded (never sent) when the client hung up before it got an answer, as nginx does.
CLIENT_CLOSED = 499
NO_BODY_STATUS = frozenset({204, 304})


@dataclass(slots=True)
class Reply:
    """A response on its way to the client."""

    status: int
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: Body = b""
    """Bytes (sent with the headers in one write) or chunks (streamed as they come)."""
    reason: str | None = None
    release: Callable[[bool], None] | None = None
    """Called once when the body is done with: True if it was read to its end."""
    sent: bool = False
    """The answer was written already (a WebSocket tunnel); `send()` only records it."""
    own: bool = False
    """homeproxy's own page (`pages.error_reply`), which a site's `error_pages` may replace;
    False for what an upstream answered."""

    def done(self, complete: bool) -> None:
        """Release what the body holds (the upstream connection), once."""
        release, self.release = self.release, None
        if release is not None:
            release(complete)


def client_gone(request: Request) -> bool:
    """The client's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _date() -> str:
    """The Date header's value, formatted once a second."""
    global _date_at, _date_value, _date_line
    now = int(time.time())
    if now != _date_at:
        _date_at, _date_value = now, formatdate(now, usegmt=True)
        _date_line = f"Date: {_date_value}\r\n".encode("ascii")
    return _date_value


def date_line() -> bytes:
    """`Date: ...\r\n`, as `_date()` (for heads written as bytes)."""
    _date()
    return _date_line


_date_at = 0
_date_value = ""
_date_line = b""


def _head(ex: Exchange, reply: Reply, *, no_body: bool) -> tuple[bytes, bool, int | None]:
    """The status line and headers, framed for the client: (bytes, chunked, identity length)."""
    request = ex.request
    conn = request.conn
    headers = reply.headers
    status = reply.status
    headers.popall("Transfer-Encoding", None)
    headers.popall("Connection", None)
    if "Server" not in headers:
        headers["Server"] = "homeproxy"
    if "Date" not in headers:
        headers["Date"] = _date()
    chunked = False
    length: int | None = None
    keep = conn.keeps_alive(request)
    body = reply.body
    if no_body:
        if status < 200 or status == 204:
            headers.popall("Content-Length", None)
    elif isinstance(body, bytes):
        headers["Content-Length"] = str(len(body))
    else:
        declared = headers.get("Content-Length")
        if declared is not None and declared.isdigit():
            length = int(declared)
        else:
            headers.popall("Content-Length", None)
            if request.version == "1.1":
                headers["Transfer-Encoding"] = "chunked"
                chunked = True
            else:  # HTTP/1.0: the body ends when the connection does
                keep = False
    if not keep:
        headers["Connection"] = "close"
        conn.must_close = True
    elif request.version != "1.1":
        headers["Connection"] = "keep-alive"
    lines = [f"HTTP/1.1 {status} {reply.reason or reason_phrase(status)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("\r\n")
    text = "\r\n".join(lines)
    try:
        return text.encode("latin-1"), chunked, length
    except UnicodeEncodeError:  # a value homeproxy made with characters past Latin-1
        return text.encode("utf-8", "surrogateescape"), chunked, length


def send_whole(ex: Exchange, reply: Reply) -> None:
    """Write `reply`, whose body is in hand (bytes), head and body in one write; as `send()`."""
    ex.status = reply.status
    ex.response_headers = reply.headers
    request = ex.request
    status = reply.status
    no_body = request.method == "HEAD" or status in NO_BODY_STATUS or status < 200
    head, _, _ = _head(ex, reply, no_body=no_body)
    body = reply.body
    assert isinstance(body, bytes)
    ex.bytes_out = 0
    try:
        if body and not no_body:
            ex.bytes_out = len(body)
            head += body
        request.conn.write(head)
    except ConnectionError:
        if not client_gone(request):
            raise
        ex.error = "client went away"
    finally:
        reply.done(True)  # nothing (more) is read from the upstream


async def send(ex: Exchange, reply: Reply) -> None:
    """Write `reply` to the client of `ex`, recording its status and headers and counting body
    bytes into `ex.bytes_out`."""
    if reply.sent:
        ex.status = reply.status
        return
    body = reply.body
    if isinstance(body, bytes):
        send_whole(ex, reply)
        return
    ex.status = reply.status
    ex.response_headers = reply.headers
    request = ex.request
    conn = request.conn
    no_body = request.method == "HEAD" or reply.status in NO_BODY_STATUS or reply.status < 200
    head, chunked, length = _head(ex, reply, no_body=no_body)
    ex.bytes_out = 0
    complete = False
    try:
        if no_body:
            complete = True  # nothing (more) is read from the upstream
            conn.write(head)
            return
        conn.write(head)
        while True:
            try:
                chunk = await anext(body)
            except StopAsyncIteration:
                break
            except (TimeoutError, ConnectionError, UpstreamError) as e:
                why = str(e) if isinstance(e, UpstreamError) else type(e).__name__
                ex.error = f"upstream failed mid-response: {why}"
                conn.abort()
                return
            if not chunk:
                continue
            ex.bytes_out += len(chunk)
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if conn.write_paused:
                await conn.drain()
        if length is not None and ex.bytes_out != length:
            ex.error = f"response body of {ex.bytes_out} bytes where {length} were announced"
            conn.abort()
            return
        if chunked:
            conn.write(b"0\r\n\r\n")
        complete = True
    except ConnectionError:
        if not client_gone(request):
            raise
        ex.error = "client went away"
    finally:
        with contextlib.suppress(Exception):
            await body.aclose()  # type: ignore[attr-defined]
        reply.done(complete)


_PHRASES = {s.value: s.phrase for s in HTTPStatus}


def reason_phrase(status: int, unknown: str = "Unknown") -> str:
    """RFC 9110's reason phrase for `status` (`unknown` for a code it does not name)."""
    return _PHRASES.get(status, unknown)


__all__ = ["CLIENT_CLOSED", "NO_BODY_STATUS", "Body", "Reply", "client_gone", "send", "send_whole"]
