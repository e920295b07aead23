"""WebSocket upgrades: the handshake through homeproxy, then a byte tunnel both ways (as nginx does).

The handshake goes to the upstream first, on a connection of its own (never a pooled one, so
no idle connection the upstream closed can be met); the client gets the 101 only once the
upstream has said it. From then on each side's bytes are written to the other as they come,
frames and close handshakes included, with back-pressure both ways (reading from one side
pauses while the other's transport is full). A side whose transport stays full for longer
than `[server] send_timeout` (a peer that reads nothing) ends the tunnel; one that is merely
idle never does. The whole session is one event: bytes in and out, its duration, and why a
stalled tunnel was cut.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools
from multidict import CIMultiDict

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.h1.errors import CERT_REFUSED_ERROR, UpstreamError, UpstreamProtocolError
from homeproxy.engine.hop import connection_tokens, without_hop_by_hop
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply
from homeproxy.engine.request import Request

if TYPE_CHECKING:
    from homeproxy.engine.upstream import Forwarder

MAX_HANDSHAKE = 64 * 1024
"""Bytes of handshake answer from the upstream (status line and headers) at most."""


def is_websocket_upgrade(request: Request) -> bool:
    h = request.headers
    return request.upgrade and h.get("Upgrade", "").lower() == "websocket" and "upgrade" in connection_tokens(h)


class _Upstream(asyncio.Protocol):
    """The upstream's side: parse the handshake answer, then pass bytes to `sink`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._items: list[tuple[str, str]] = []
        self._seen = 0
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.answered: asyncio.Future[bytes] = loop.create_future()
        """The handshake answer's head is in; its result is what came after it."""
        self.sink: Callable[[bytes], None] | None = None
        self.on_close: Callable[[], None] | None = None
        self.on_writable: Callable[[bool], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
            return
        if self.answered.done():
            return  # a refusal's body: not passed on
        self._seen += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
            self._answer(data[offset:])
        except httptools.HttpParserError:
            self._fail(UpstreamProtocolError("upstream sent a malformed handshake answer"))
        else:
            if self._seen > MAX_HANDSHAKE and not self.answered.done():
                self._fail(UpstreamProtocolError("upstream's handshake answer is too large"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._items.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        items, self._items = self._items, []
        if 100 <= status < 200 and status != 101:
            return  # an interim answer: the real one follows
        self.status = status
        self.headers = CIMultiDict(items)
        if status != 101:
            self._answer(b"")

    def _answer(self, rest: bytes) -> None:
        if not self.answered.done():
            self.answered.set_result(rest)

    def _fail(self, error: BaseException) -> None:
        if not self.answered.done():
            self.answered.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        if self.on_writable is not None:
            self.on_writable(False)

    def resume_writing(self) -> None:
        if self.on_writable is not None:
            self.on_writable(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(UpstreamProtocolError("upstream closed the connection during the handshake"))
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close()


async def relay_websocket(fw: Forwarder, ex: Exchange) -> Reply:
    """Handshake with the upstream, answer the client with its 101, then tunnel until either side closes."""
    request = ex.request
    base = fw.pick(ex)
    if base is None:
        return error_reply(503 if ex.error == "every upstream is down" else 502, request)
    loop = asyncio.get_running_loop()
    host, scheme = base.host or "", base.scheme
    port = base.port or (443 if scheme == "https" else 80)
    upgrade = request.headers.get("Upgrade", "websocket")
    head = fw.head(ex, base, base.raw_path.rstrip("/"), ["Connection: Upgrade", f"Upgrade: {upgrade}"])
    site = fw.site
    try:
        tls = fw.client.pool.tls_context(site.verify_upstream, site.upstream_ca) if scheme == "https" else None
    except UpstreamError as e:
        ex.error = str(e)
        return error_reply(502, request)
    upstream: _Upstream | None = None
    try:
        async with asyncio.timeout(site.connect_timeout + (site.header_timeout or site.read_timeout)):
            sni = (site.upstream_sni or host) if tls else None
            _, upstream = await loop.create_connection(
                lambda: _Upstream(loop), host, port, ssl=tls, server_hostname=sni
            )
            assert upstream.transport is not None
            upstream.transport.write(head)
            rest = await upstream.answered
    except TimeoutError:
        _close(upstream)
        ex.error = "upstream timed out before answering"
        return error_reply(504, request)
    except ssl.SSLCertVerificationError:
        ex.error = CERT_REFUSED_ERROR
        return error_reply(502, request)
    except (OSError, UpstreamProtocolError) as e:
        _close(upstream)
        ex.error = f"upstream unreachable: {e}"
        return error_reply(502, request)
    if upstream.status != 101:
        _close(upstream)
        ex.error = f"upstream refused the WebSocket: {upstream.status}"
        return error_reply(502, request) if upstream.status < 400 else Reply(upstream.status)
    await _tunnel(ex, upstream, rest)
    return Reply(101, sent=True)


async def _tunnel(ex: Exchange, upstream: _Upstream, rest: bytes) -> None:
    """Write the 101 to the client, then copy bytes both ways until either side closes."""
    conn = ex.request.conn
    answer = without_hop_by_hop(upstream.headers)
    answer["Upgrade"] = upstream.headers.get("Upgrade", "websocket")
    answer["Connection"] = "Upgrade"
    ex.response_headers = answer
    lines = ["HTTP/1.1 101 Switching Protocols", *(f"{k}: {v}" for k, v in answer.items())]
    conn.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    ex.bytes_out = 0
    up = upstream.transport
    if up is None:
        return

    def end() -> None:
        if not ended.done():
            ended.set_result(None)

    def to_upstream(data: bytes) -> None:
        ex.bytes_in += len(data)
        if not up.is_closing():
            up.write(data)

    def to_client(data: bytes) -> None:
        ex.bytes_out = (ex.bytes_out or 0) + len(data)
        client = conn.transport
        if client is not None and not client.is_closing():
            client.write(data)

    # SECURITY: the paused side waits on the full one, so a peer that reads nothing would hold
    # both connections forever. Only a full, unread buffer counts: idle WebSockets are normal.
    timeout = conn.server.settings().send_timeout
    full: dict[str, asyncio.TimerHandle] = {}
    """The sides whose transport is full now, with the timer that cuts the tunnel."""
    cut: list[str] = []

    def stalled(side: str) -> None:
        cut.append(side)
        ex.error = f"{side} read nothing for {timeout:g} s"
        end()

    def watch(side: str, ok: bool) -> None:
        if ok:
            if (handle := full.pop(side, None)) is not None:
                handle.cancel()
        elif side not in full and not ended.done():
            full[side] = loop.call_later(timeout, stalled, side)

    def upstream_writable(ok: bool) -> None:  # the upstream reads slowly: stop reading the client
        watch("upstream", ok)
        (conn.resume_reading if ok else conn.pause_reading)()

    def client_writable(ok: bool) -> None:  # the client reads slowly: stop reading the upstream
        watch("client", ok)
        (up.resume_reading if ok else up.pause_reading)()

    upstream.sink, upstream.on_close, upstream.on_writable = to_client, end, upstream_writable
    pending = conn.tunnel(to_upstream, end, client_writable)
    if conn.write_paused:  # full before the tunnel began: no pause_writing is coming
        client_writable(False)
    if rest:
        to_client(rest)
    if pending:
        to_upstream(pending)
    try:
        await ended
    finally:
        for handle in full.values():
            handle.cancel()
        # After a stall, a full side is aborted: closing would wait for it to read, forever.
        for side, transport in (("upstream", up), ("client", conn.transport)):
            if transport is not None:
                (transport.abort if cut and side in full else transport.close)()


def _close(upstream: _Upstream | None) -> None:
    if upstream is not None and upstream.transport is not None:
        upstream.transport.close()
