"""A `ClientConnection`'s limits: each read checked, refusals (a CONNECT's too) and their page, the sweep's timeouts,
lingering close."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import httptools

from homeproxy.config.model import ServerSettings
from homeproxy.engine.h1.limits import LINGER_BYTES, LINGER_TIME, MAX_CHUNK_LINE, Refused, reason, refuse_connect
from homeproxy.engine.pages import plain_page, title
from homeproxy.engine.request import BodyError, Request, RequestBody

if TYPE_CHECKING:
    from homeproxy.engine.h1.client import ClientConnection

log = logging.getLogger(__name__)

# Why reading from the client is paused (a bit each: reading resumes once none is left).
UPGRADED = 1  # an upgrade request waits for its handler to tunnel or close
QUEUE_FULL = 2  # too many pipelined requests wait their turn
PEER_FULL = 4  # a tunnel's other side reads slowly
BODY_FULL = 8  # a request body's buffer is full
REFUSED = 16  # a request was refused: nothing more is read


def feed(conn: ClientConnection, data: bytes) -> None:
    """One read through llhttp, then the limits only a whole read shows (head size, chunk framing,
    the lingering close's cap); a parse error becomes a refusal."""
    if not conn._in_head:
        conn._head_bytes = 0
    try:
        conn._parser.feed_data(data)
    except httptools.HttpParserUpgrade as e:
        if conn._parser.get_method() == b"CONNECT":
            # SECURITY: llhttp hands over a CONNECT (in any target form) as an upgrade, its head
            # already a request. It is taken back before it starts (it starts once this read is
            # parsed, in data_received) and refused: what the client sent after it is never a
            # tunnel's, nor parsed.
            _take_back_last(conn)
            refuse(conn, refuse_connect())
            return
        offset = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
        conn._upgraded = bytearray(data[offset:])
        conn._pause(UPGRADED)  # nothing more is parsed: the handler tunnels or the connection ends
        return
    except httptools.HttpParserCallbackError as e:
        cause = e.__context__
        if isinstance(cause, Refused):
            if cause.status:
                refuse(conn, cause)
        else:
            log.exception("error parsing a request from %s", conn.remote, exc_info=cause)
            refuse(conn, Refused(400, "unparsable request"))
        return
    except httptools.HttpParserInvalidMethodError:
        refuse(conn, Refused(400, "unknown method"))
        return
    except httptools.HttpParserError as e:
        refuse(conn, Refused(400, reason(e)))
        return
    if conn._read_body:
        conn._body_at = conn.loop.time()
    if conn._lingering:
        body = conn._parsing.content if conn._parsing is not None else None
        if body is not None and (body.discarded or 0) > LINGER_BYTES:
            conn.abort()
        conn._read_body = 0
        return
    if conn._in_head:
        # What llhttp has not handed over yet (a header line still coming) is counted here.
        conn._head_bytes += len(data)
        limits = conn._limits
        if conn._head_bytes > limits.max_header_size + limits.max_request_line:
            refuse(conn, Refused(431, "request head too large"))
    elif conn._chunked and conn._parsing is not None:
        # SECURITY: chunk-size lines (with extensions) and trailer fields have no length limit in
        # llhttp, and httptools keeps a trailer field until it ends. Bytes of framing that bring
        # no chunk and no field, over reads, are bounded (a read that ends a line starts over).
        if conn._chunk_mark:
            conn._chunk_bytes = 0
        else:
            conn._chunk_bytes += len(data) - conn._read_body
            if conn._chunk_bytes > MAX_CHUNK_LINE:
                refuse(conn, Refused(413, "chunk extensions or trailer too long"))
    conn._chunk_mark = False
    conn._read_body = 0


def _take_back_last(conn: ClientConnection) -> None:
    """Forget the request whose head was the last one parsed, before its handler starts: it is
    the last one queued, or else the one begun in the read being parsed."""
    if conn._queue:
        conn._queue.pop()
    elif conn._current is not None and conn._current is conn._ready:
        conn._current = conn._ready = None
    conn._parsing = None


def refuse(conn: ClientConnection, refused: Refused) -> None:
    """Stop reading from the client and answer `refused` (after the answer being written, if any)."""
    if conn._lingering:
        conn.abort()
        return
    conn._in_head = False
    conn._pause(REFUSED)
    current = conn._current
    if current is not None and current is conn._ready and current is conn._parsing:
        # Its own body turned out malformed in the read that brought its head: it never starts.
        # A whole request before a malformed one is answered first, as it would be had the
        # two come in two reads.
        conn._current = conn._ready = None
    parsing = conn._parsing
    if parsing is not None:  # its body broke off: whoever reads it hears so (and answers `status`)
        parsing.content.fail(BodyError(f"the client's body was refused: {refused.why}", refused.status))
    conn._refused = refused  # nothing more is read
    if conn._current is None:  # else it goes out after the answer being written now
        send_refusal(conn, refused)


def send_refusal(conn: ClientConnection, refused: Refused) -> None:
    """One event for the refusal, then its page."""
    conn.server.on_error(conn.remote, refused.status, refused.why)
    write_error(conn, refused.status, refused.headers)


def write_error(conn: ClientConnection, status: int, headers: tuple[tuple[str, str], ...] = ()) -> None:
    """homeproxy's plain page for `status` (with `headers`, homeproxy's own, never a client's), then close."""
    transport = conn.transport
    if transport is None:
        return
    body = plain_page(status)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = (
        f"HTTP/1.1 {status} {title(status)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n"
        f"{extra}Server: homeproxy\r\n\r\n"
    )
    transport.write(head.encode() + body)
    transport.close()


def check_timeouts(conn: ClientConnection, now: float, limits: ServerSettings) -> None:
    """Called about once a second: a head or a body too slow to arrive, or a keep-alive
    connection idle too long."""
    if conn.transport is None or conn._sink is not None:
        return
    if conn._lingering:
        if now - conn._lingering > LINGER_TIME:
            conn.abort()
        return
    parsing = conn._parsing
    if parsing is not None:
        if conn._refused is not None:
            return
        if conn._reading_paused or _awaits_continue(conn, parsing):
            conn._body_at = now  # homeproxy holds the body back, not the client
        elif now - conn._body_at > limits.client_body_timeout:
            refuse(conn, Refused(408, "request body not received in time"))
        return
    if conn._current is not None:
        return
    if conn._in_head:
        if now - conn._head_began > limits.client_header_timeout:
            refuse(conn, Refused(408, "request head not received in time"))
    elif not conn._queue:
        # Before its first request a connection waits as for a head (nginx does the same).
        idle = limits.keepalive_timeout if conn._served else limits.client_header_timeout
        if now - conn.idle_since > idle:
            conn.transport.close()


def _awaits_continue(conn: ClientConnection, request: Request) -> bool:
    """The client waits for a `100 Continue` before it sends `request`'s body."""
    if request.version != "1.1" or request.headers.get("Expect", "").lower() != "100-continue":
        return False
    return not (request is conn._current and conn._continued)


def linger(conn: ClientConnection, body: RequestBody) -> None:
    """Read and drop the rest of an answered request's body, then close (bounded by `LINGER_BYTES`, `LINGER_TIME`)."""
    conn._lingering = conn.loop.time()
    conn._queue.clear()
    body.discard()
