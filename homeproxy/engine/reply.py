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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.h1.errors import UpstreamError

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
    sent: web.StreamResponse | None = None
    """A response that was written already (a WebSocket session); `send()` returns it as is."""

    def done(self, complete: bool) -> None:
        """Release what the body holds (the upstream connection), once."""
        release, self.release = self.release, None
        if release is not None:
            release(complete)


def client_gone(request: web.BaseRequest) -> bool:
    """The client's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def send(ex: Exchange, reply: Reply) -> web.StreamResponse:
    """Write `reply` to the client of `ex`, counting body bytes into `ex.bytes_out`."""
    if reply.sent is not None:
        return reply.sent
    request = ex.request
    no_body = request.method == "HEAD" or reply.status in NO_BODY_STATUS or reply.status < 200
    if isinstance(reply.body, bytes) and not no_body:
        # One write for headers and body; aiohttp sets Content-Length from the body.
        whole = web.Response(status=reply.status, reason=reply.reason, body=reply.body)
        _copy(reply.headers, whole, skip_length=True)
        ex.bytes_out = len(reply.body)
        reply.done(True)
        return whole

    response = web.StreamResponse(status=reply.status, reason=reply.reason)
    _copy(reply.headers, response, skip_length=False)
    ex.bytes_out = 0
    complete = False
    try:
        await response.prepare(request)
        if not no_body and not isinstance(reply.body, bytes):
            chunks = reply.body
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except (TimeoutError, aiohttp.ClientError, ConnectionError, UpstreamError) as e:
                    why = str(e) if isinstance(e, UpstreamError) else type(e).__name__
                    ex.error = f"upstream failed mid-response: {why}"
                    _abort(request)
                    return response
                ex.bytes_out += len(chunk)
                await response.write(chunk)
        await response.write_eof()
        complete = True
    except (ConnectionError, aiohttp.ClientError):
        if not client_gone(request):
            raise
        ex.error = "client went away"
    finally:
        if not isinstance(reply.body, bytes):
            with contextlib.suppress(Exception):
                await reply.body.aclose()  # type: ignore[attr-defined]
        reply.done(complete)
    return response


def _copy(headers: CIMultiDict[str], response: web.StreamResponse, *, skip_length: bool) -> None:
    out = response.headers
    for name, value in headers.items():
        if skip_length and name.lower() == "content-length":
            continue
        out.add(name, value)
    out.setdefault("Server", "homeproxy")


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


__all__ = ["CLIENT_CLOSED", "NO_BODY_STATUS", "Body", "Reply", "client_gone", "send"]
