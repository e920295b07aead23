"""The request body on its way upstream, and what a failed exchange becomes.

`Body` is the client's body: read whole first when it is small (so a request can be sent
again on another connection), else streamed once, chunk by chunk, as it goes upstream,
with `max_body` enforced as it streams.
"""

from __future__ import annotations

import asyncio
import contextlib

from homeproxy.config.model import Site
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.h1.connection import H1Connection, Response
from homeproxy.engine.h1.errors import UpstreamError, UpstreamLost
from homeproxy.engine.h1.pool import Origin, Pool
from homeproxy.engine.health import UpstreamHealth
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import CLIENT_CLOSED, NO_BODY_STATUS, Reply, client_gone
from homeproxy.engine.request import BodyError

#: Answers of an upstream that passive health counts as failures with `status_5xx` (the
#: upstream's own gateway trouble; a 500 is the application's error, not the server's health).
GATEWAY_TROUBLE = frozenset({502, 503, 504})

CHUNK = 256 * 1024
SMALL_BODY = 64 * 1024
"""Responses of known length up to this size are sent in one write with their headers;
request bodies of known length up to it are read whole first (so a request can be replayed)."""
#: RFC 9110 section 9.2.2: sending one of these twice has the effect of sending it once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class BodyTooLarge(Exception):
    """A streamed request body went past the site's `max_body`."""


async def exchange(
    pool: Pool,
    site: Site,
    ex: Exchange,
    origin: Origin,
    health: UpstreamHealth,
    head: bytes,
    body: Body,
    *,
    fresh: bool,
) -> Reply:
    """One attempt on one connection: send, wait for the head, turn it into a `Reply`."""
    # Counted before connecting: requests arriving together must not all pass `max_conns`
    # while the first ones are still connecting.
    health.in_flight += 1
    try:
        conn = await pool.acquire(origin, site.connect_timeout, fresh=fresh)
    except BaseException:
        health.done()
        raise
    origin.in_flight += 1
    sending: asyncio.Task[None] | None = None
    try:
        if body.streamed:
            if body.used:
                raise UpstreamLost("the request body was already streamed", reused=False)
            conn.send(head, None, head_only=False, streaming=True)
            sending = asyncio.ensure_future(body.stream(conn, site.max_body))
            waiting = asyncio.ensure_future(conn.response(site.header_timeout or site.read_timeout))
            response = await first(waiting, sending)
        else:
            conn.send(head, body.data, head_only=ex.request.method == "HEAD")
            response = await conn.response(site.header_timeout or site.read_timeout)
    except BaseException:
        origin.in_flight -= 1
        health.done()
        if sending is not None:
            sending.cancel()
        conn.abort()
        raise
    if response.status in GATEWAY_TROUBLE and site.passive_health.status_5xx:
        health.failed(f"status {response.status}")
    return await _reply(pool, site, ex, origin, health, conn, response, sending)


async def _reply(
    pool: Pool,
    site: Site,
    ex: Exchange,
    origin: Origin,
    health: UpstreamHealth,
    conn: H1Connection,
    upstream: Response,
    sending: asyncio.Task[None] | None,
) -> Reply:
    timeout = site.read_timeout
    released = False

    def release(complete: bool) -> None:
        nonlocal released
        if released:
            return
        released = True
        origin.in_flight -= 1
        health.done()
        if sending is not None and not sending.done():
            sending.cancel()
        if complete:
            pool.release(origin, conn)
        else:
            conn.abort()

    reply = Reply(upstream.status, upstream.headers, reason=upstream.reason)  # hop-by-hop ones gone already
    if ex.request.method == "HEAD" or upstream.status in NO_BODY_STATUS:
        release(True)
        return reply
    length = upstream.content_length
    if length is not None and length <= SMALL_BODY:
        try:
            reply.body = await upstream.read(timeout)
        except TimeoutError:
            release(False)
            ex.error = "upstream timed out mid-response"
            return error_reply(504, ex.request)
        except (UpstreamError, ConnectionError) as e:
            release(False)
            return failed(ex, e)
        release(True)
        return reply
    reply.body = upstream.iter_chunks(timeout)
    reply.release = release
    return reply


async def first(waiting: asyncio.Future[Response], sending: asyncio.Future[None]) -> Response:
    """The response's head, while the body goes out: an upstream may answer before it has all
    of it (a 413, say); a body that fails to send (the client went away) ends the attempt."""
    while True:
        done, _ = await asyncio.wait((waiting, sending), return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            return waiting.result()
        if sending.exception() is not None:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, UpstreamError, TimeoutError):
                await waiting
            raise sending.exception()  # type: ignore[misc]
        return await waiting  # the body is out: wait for the answer alone


class Body:
    """The client's request body: in hand (`data`, read whole first) or streamed from the client
    chunk by chunk as it goes upstream (once only), counted in `ex.bytes_in`."""

    __slots__ = ("_ex", "data", "length", "streamed", "used")

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self.data: bytes | None = None
        self.streamed = False
        self.length: int | None = None
        """A streamed body's Content-Length (None: chunked from the client, chunked upstream)."""
        self.used = False
        """Reading the streamed body from the client has begun (it cannot be sent again)."""

    async def stream(self, conn: H1Connection, limit: int = 0) -> None:
        """Send the body upstream as it comes; BodyTooLarge once it passes `limit` bytes (0: none)."""
        self.used = True
        ex = self._ex
        read = ex.request.content.read
        chunked = self.length is None
        remaining = self.length
        while True:
            chunk = await read(CHUNK)
            if not chunk:
                break
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            ex.bytes_in += len(chunk)
            if limit and ex.bytes_in > limit:
                raise BodyTooLarge
            await conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if remaining == 0:
                break
        if chunked:
            await conn.write(b"0\r\n\r\n")
        if remaining:
            raise ConnectionResetError("the client's body ended early")
        conn.body_sent()


def not_replayed(method: str, body: Body, lost: UpstreamLost) -> str:
    """Why a request lost with its reused connection cannot be sent again ("" if it can)."""
    if lost.unsent:
        return ""  # nothing of it left homeproxy: safe whatever the method
    if body.used:
        return f"{method} not replayed (its body was streamed)"
    if method not in IDEMPOTENT_METHODS:
        return f"{method} not replayed"
    return ""


def failed(ex: Exchange, e: BaseException) -> Reply:
    """An upstream exchange that broke before the answer began: the client's fault or a 502."""
    if client_gone(ex.request):  # e.g. an upload abandoned half way
        ex.error = "client went away"
        return Reply(CLIENT_CLOSED)
    if isinstance(e, BodyError):
        ex.error = str(e)
        return error_reply(e.status, ex.request)
    if isinstance(e, BodyTooLarge):
        ex.error = "request body over the site's max_body"
        return error_reply(413, ex.request)
    ex.error = f"upstream failed: {type(e).__name__}: {e}"
    return error_reply(502, ex.request)
