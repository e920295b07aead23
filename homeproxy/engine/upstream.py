"""The terminal handler: forward a request to an upstream and stream the answer back.

- Bodies stream both ways chunk by chunk with back-pressure; nothing is held
  whole in memory (a 1 GiB upload or download costs a few buffers), except
  request bodies of up to 64 KiB, read whole first so they can be sent again.
- Hop-by-hop headers (RFC 9110 section 7.6.1), and every header named in
  `Connection`, are removed in both directions.
- X-Forwarded-For/-Proto/-Host and X-Real-IP are set; a client's own
  X-Forwarded-* values are believed only from a configured trusted proxy.
- Pooled keep-alive connections, one pool per `upstream_keepalive` value (sites
  with the same value share it); per-site connect and read timeouts; an
  unreachable upstream is a 502 page, a timeout a 504.
- A pooled connection that the upstream closed as the request went out (its idle
  keep-alive timer ran out) is not shown to the client: the request is sent once
  more on a fresh connection when nothing of it was written yet, or when its
  method is idempotent and its body is still in hand (RFC 9112 section 9.3.1).
- WebSocket upgrades are relayed message by message in both directions.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import sys
import weakref
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.payload import Payload
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from homeproxy.config.model import DEFAULT_UPSTREAM_KEEPALIVE, Route, Site
from homeproxy.discovery.service import parse_mdns_ref
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import CLIENT_CLOSED, NO_BODY_STATUS, Reply, client_gone

log = logging.getLogger(__name__)

#: The start of the event error when an https upstream's certificate is refused (ours, so tests and
#: users see the same words whatever the TLS library says).
UPSTREAM_CERT_REFUSED = "upstream's TLS certificate was not accepted"

#: RFC 9110 section 7.6.1, plus the non-standard Proxy-Connection.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
#: Request headers that homeproxy sets itself (the client's copies are not passed on as they are).
_FORWARDING = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip", "expect"}
)
#: Headers of the WebSocket handshake that aiohttp's client writes itself.
_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
_CHUNK = 256 * 1024
#: Responses of known length up to this size are sent in one write with their headers;
#: request bodies of known length up to it are read whole first (so a request can be replayed).
_SMALL_BODY = 64 * 1024
#: RFC 9110 section 9.2.2: sending one of these twice has the effect of sending it once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class UpstreamLost(aiohttp.ClientConnectionError):
    """The upstream connection failed before the response began (reset, EOF, broken pipe).

    Raised in place of aiohttp's own exception (kept as `cause`), which also keeps aiohttp's
    blanket retry of idempotent requests out of the way: the Forwarder decides about replays."""

    def __init__(self, cause: aiohttp.ClientConnectionError, *, reused: bool, unsent: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.reused = reused
        """The connection came from the pool (it had served a request before)."""
        self.unsent = unsent
        """Nothing of the request was written (the connection was found closed first)."""


#: Connections that have served a response: the next request on one is on a reused connection.
_SERVED: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

if sys.platform == "linux":
    _TCP_ESTABLISHED = 1  # tcpi_state, the first byte of Linux's struct tcp_info

    def _peer_closed(transport: asyncio.BaseTransport) -> bool:
        """The kernel has seen the upstream close the connection (FIN or RST), which the loop
        may not have noticed yet: one getsockopt, no read."""
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != _TCP_ESTABLISHED)
        except OSError:
            return False

else:

    def _peer_closed(transport: asyncio.BaseTransport) -> bool:
        return False


class _Request(aiohttp.ClientRequest):
    """aiohttp's request, which looks before it sends a non-idempotent request on a reused connection.

    aiohttp's pool only knows what the loop has read so far: the upstream's FIN may already be
    in the kernel. A POST cannot be replayed once written, so it is worth one getsockopt."""

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        if not self.body and self.method not in IDEMPOTENT_METHODS:
            # Without a body the head is written at once. (A `_Body` looks when it starts writing.)
            proto = conn.protocol
            transport = proto.transport if proto is not None else None
            if transport is not None and proto in _SERVED and _peer_closed(transport):
                raise UpstreamLost(aiohttp.ServerDisconnectedError(), reused=True, unsent=True)
        return await super().send(conn)


class _Response(aiohttp.ClientResponse):
    """aiohttp's response, telling a failure on a reused connection from one on a fresh connection."""

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        proto = connection.protocol
        reused = proto is not None and proto in _SERVED
        try:
            await super().start(connection)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as e:
            raise UpstreamLost(e, reused=reused) from e
        if proto is not None and not reused:
            _SERVED.add(proto)
        return self


def _session(connector: aiohttp.BaseConnector, *, forwarding: bool) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        # SECURITY: a shared proxy must never keep one client's cookies for another.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        request_class=_Request if forwarding else aiohttp.ClientRequest,
        response_class=_Response if forwarding else aiohttp.ClientResponse,
    )


class UpstreamClient:
    """The pooled HTTP clients every site forwards through; they live on the engine's loop.

    aiohttp keeps a connection for as long as its connector says, so there is one pool per
    `upstream_keepalive` value in use (made on first use); `fresh` never pools (for replays)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._pools: dict[float, aiohttp.ClientSession] = {}
        self._fresh: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = _session(
            aiohttp.TCPConnector(limit=0, keepalive_timeout=DEFAULT_UPSTREAM_KEEPALIVE, ttl_dns_cache=10),
            forwarding=False,
        )
        self._fresh = _session(aiohttp.TCPConnector(limit=0, force_close=True, ttl_dns_cache=10), forwarding=True)

    @property
    def session(self) -> aiohttp.ClientSession:
        """A plain client for homeproxy's own requests (forward auth), with aiohttp's own retries."""
        if self._session is None:
            raise RuntimeError("UpstreamClient is not open")
        return self._session

    def pool(self, keepalive: float) -> aiohttp.ClientSession:
        """The client whose pooled connections are closed once idle for `keepalive` seconds."""
        session = self._pools.get(keepalive)
        if session is None:
            if self._session is None:
                raise RuntimeError("UpstreamClient is not open")
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=keepalive, ttl_dns_cache=10)
            session = self._pools[keepalive] = _session(connector, forwarding=True)
        return session

    @property
    def fresh(self) -> aiohttp.ClientSession:
        """A client that opens a new connection for every request (and closes it after)."""
        if self._fresh is None:
            raise RuntimeError("UpstreamClient is not open")
        return self._fresh

    async def close(self) -> None:
        sessions = [*self._pools.values(), self._session, self._fresh]
        self._pools.clear()
        self._session = self._fresh = None
        for session in sessions:
            if session is not None:
                await session.close()


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Header names listed in `Connection` (they are hop-by-hop too)."""
    values = headers.getall("Connection", ())
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def _local_port(request: web.BaseRequest) -> str:
    """The port the client connected to (443 or https_port on TLS), for X-Forwarded-Port."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return str(sockname[1]) if isinstance(sockname, tuple) and len(sockname) > 1 else ""


def forwarded_for(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str:
    """X-Forwarded-For as one list, however many header lines carry it (RFC 9110 section 5.3)."""
    return ", ".join(headers.getall("X-Forwarded-For", ()))


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    h = request.headers
    return h.get("Upgrade", "").lower() == "websocket" and "upgrade" in connection_tokens(h)


Resolver = Callable[[str], str | None]
"""Maps an `mdns://` upstream to the base URL where its service is now (`"http://10.0.0.5:32400"`),
or None while the service is not on the network. Discovery provides it; the engine only calls it."""


def _no_resolver(ref: str) -> str | None:
    return None


class MdnsUpstream:
    """An `mdns://` upstream: looked up in the resolver for each request, so the site follows
    the device when its address or port changes (a new DHCP lease) without a config change."""

    __slots__ = ("_resolver", "_urls", "path", "ref")

    def __init__(self, ref: str, resolver: Resolver) -> None:
        self.ref = ref
        self.path = parse_mdns_ref(ref).path
        self._resolver = resolver
        self._urls: dict[str, URL] = {}

    def resolve(self) -> URL | None:
        base = self._resolver(self.ref)
        if base is None:
            return None
        url = self._urls.get(base)
        if url is None:
            if len(self._urls) > 16:
                self._urls.clear()
            url = self._urls[base] = URL(base + self.path)
        return url

    def __str__(self) -> str:
        return self.ref


class Forwarder:
    """Forwards a site's (or one route's) requests to its upstreams, in turn."""

    def __init__(
        self, client: UpstreamClient, site: Site, route: Route | None = None, *, resolver: Resolver = _no_resolver
    ) -> None:
        self.client = client
        self.site = site
        self.prefix = route.path if route is not None and route.strip_prefix else ""
        urls = route.upstreams if route is not None else site.upstreams
        self.upstreams: tuple[URL | MdnsUpstream, ...] = tuple(
            MdnsUpstream(u, resolver) if u.startswith("mdns://") else URL(u) for u in urls
        )
        self._next = itertools.cycle(range(len(self.upstreams)))
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=site.connect_timeout, sock_read=site.read_timeout)
        self.ssl = site.verify_upstream
        """aiohttp's `ssl`: False skips certificate checks for self-signed LAN gear (still encrypted)."""

    def _pick(self, ex: Exchange) -> URL | None:
        """The next upstream's base URL; None (with `ex.error` set) for an mDNS service that is not on the network."""
        entry = self.upstreams[next(self._next)]
        if type(entry) is URL:
            ex.upstream = str(entry)
            return entry
        ex.upstream = str(entry)
        base = entry.resolve()  # type: ignore[union-attr]
        if base is None:
            ex.error = f"upstream unreachable: mDNS service {entry} is not on the network"
            return None
        ex.upstream = str(base)
        return base

    async def __call__(self, ex: Exchange) -> Reply:
        request = ex.request
        if self.site.websockets and is_websocket_upgrade(request):
            return await self._websocket(ex)
        if request.headers.get("Expect", "").lower() == "100-continue":
            # We read the body before (small) or as (large) we send it upstream; let the client start now.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body: _Body | None = None
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= _SMALL_BODY:
                # Small: read whole before the upstream is contacted, so it is in hand for a replay.
                try:
                    data = await request.content.readexactly(length)
                except (EOFError, ConnectionError, aiohttp.ClientError, HttpProcessingError) as e:
                    return _failed(ex, e)
                ex.bytes_in += length
                body = _Body(ex, data)
            else:
                body = _Body(ex, None)
        session = self.client.pool(self.site.upstream_keepalive)
        last = len(self.upstreams) - 1
        # Try each upstream once while they refuse connections (nothing has been sent yet).
        for attempt in range(len(self.upstreams)):
            base = self._pick(ex)
            if base is None:
                if attempt == last:
                    return error_reply(502, request)
                continue
            ex.error = ""
            url = self._target(base, request)
            headers = self._request_headers(ex, base)
            try:
                try:
                    upstream = await self._send(session, request.method, url, headers, body)
                except UpstreamLost as e:
                    if not e.reused:
                        raise
                    # Most likely the upstream closed the idle connection as the request went out
                    # (RFC 9112 section 9.3.1): send it again, once, on a new connection if that is safe.
                    refused = _not_replayed(request.method, body, e)
                    if refused:
                        if client_gone(request):
                            ex.error = "client went away"
                            return Reply(CLIENT_CLOSED)
                        ex.error = f"upstream closed the pooled connection; {refused} ({type(e.cause).__name__})"
                        return error_reply(502, request)
                    log.debug("%s %s: upstream closed the pooled connection; sent again", request.method, url)
                    if body is not None:
                        body = await body.replay()
                    session = self.client.fresh
                    upstream = await self._send(session, request.method, url, headers, body)
            except aiohttp.ClientConnectorCertificateError:
                # Not a refused connection: no silent failover to the next upstream.
                ex.error = f"{UPSTREAM_CERT_REFUSED}; set verify_upstream = false for self-signed LAN gear"
                return error_reply(502, request)
            except aiohttp.ClientConnectorError as e:
                if attempt == last:
                    ex.error = f"upstream unreachable: {e.os_error.strerror or e}"
                    return error_reply(502, request)
                continue
            except TimeoutError:
                ex.error = "upstream timed out before answering"
                return error_reply(504, request)
            except UpstreamLost as e:
                return _failed(ex, e.cause)
            except (aiohttp.ClientError, ConnectionError) as e:
                return _failed(ex, e)
            return await self._reply(ex, upstream)
        raise AssertionError("unreachable: a site has at least one upstream")

    async def _send(
        self, session: aiohttp.ClientSession, method: str, url: URL, headers: CIMultiDict[str], body: _Body | None
    ) -> aiohttp.ClientResponse:
        """One attempt."""
        return await session.request(
            method, url, headers=headers, data=body, allow_redirects=False, timeout=self.timeout, ssl=self.ssl
        )

    def _target(self, base: URL, request: web.BaseRequest) -> URL:
        target = request.rel_url.raw_path_qs if not request.raw_path.startswith("/") else request.raw_path
        if self.prefix:
            cut = self.prefix.rstrip("/")
            if target.startswith(cut):
                target = target[len(cut) :]
            if not target.startswith("/"):
                target = "/" + target
        return URL(str(base) + target, encoded=True)

    def _request_headers(self, ex: Exchange, base: URL) -> CIMultiDict[str]:
        request = ex.request
        src = ex.headers
        drop = HOP_BY_HOP | _FORWARDING | connection_tokens(src)
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in src.items():
            if name.lower() not in drop:
                headers.add(name, value)
        if not self.site.preserve_host:
            headers["Host"] = base.raw_authority
        peer = request.remote or ""
        xff = forwarded_for(src) if ex.trusted_peer else None
        headers["X-Forwarded-For"] = f"{xff}, {peer}" if xff else peer
        proto = src.get("X-Forwarded-Proto") if ex.trusted_peer else None
        fwd_host = src.get("X-Forwarded-Host") if ex.trusted_peer else None
        headers["X-Forwarded-Proto"] = proto or request.scheme
        headers["X-Forwarded-Host"] = fwd_host or src.get("Host") or ""
        fwd_port = src.get("X-Forwarded-Port") if ex.trusted_peer else None
        headers["X-Forwarded-Port"] = fwd_port or _local_port(request)
        headers["X-Real-IP"] = ex.client
        return headers

    async def _reply(self, ex: Exchange, upstream: aiohttp.ClientResponse) -> Reply:
        """The upstream's answer as a `Reply`: hop-by-hop headers removed, the body streamed,
        or read whole when it is small and of known length (one write later, and a body
        cut short becomes a clean 502 instead of a truncated 200)."""
        request = ex.request
        headers = _response_headers(upstream)
        reply = Reply(upstream.status, headers, reason=upstream.reason)
        length = upstream.content_length
        if request.method == "HEAD" or upstream.status in NO_BODY_STATUS:
            upstream.release()
            return reply
        if length is not None and length <= _SMALL_BODY:
            try:
                reply.body = await upstream.read()
            except TimeoutError:
                upstream.close()
                ex.error = "upstream timed out mid-response"
                return error_reply(504, request)
            except (aiohttp.ClientError, ConnectionError) as e:
                upstream.close()
                return _failed(ex, e)
            upstream.release()
            return reply
        reply.body = upstream.content.iter_chunked(_CHUNK)
        reply.release = lambda complete: upstream.release() if complete else upstream.close()
        return reply

    async def _websocket(self, ex: Exchange) -> Reply:
        """Relay a WebSocket session: connect upstream first, then accept the client."""
        request = ex.request
        src = request.headers
        protocols = tuple(p.strip() for p in src.get("Sec-WebSocket-Protocol", "").split(",") if p.strip())
        base = self._pick(ex)
        if base is None:
            return error_reply(502, request)
        url = self._target(base, request).with_scheme("wss" if base.scheme == "https" else "ws")
        headers = self._request_headers(ex, base)
        for name in _WS_HANDSHAKE:
            headers.popall(name, None)
        try:
            # aiohttp's handshake has no timeout of its own: bound it by the site's.
            async with asyncio.timeout(self.site.connect_timeout + self.site.read_timeout):
                try:
                    upstream = await self._ws_connect(
                        self.client.pool(self.site.upstream_keepalive), url, headers, protocols
                    )
                except UpstreamLost as e:
                    if not e.reused:
                        raise
                    # The handshake is a GET without a body: safe to send again on a new connection.
                    upstream = await self._ws_connect(self.client.fresh, url, headers, protocols)
        except aiohttp.WSServerHandshakeError as e:
            ex.error = f"upstream refused the WebSocket: {e.status}"
            return error_reply(502, request) if e.status < 400 else Reply(e.status)
        except TimeoutError:
            ex.error = "upstream timed out before answering"
            return error_reply(504, request)
        except aiohttp.ClientError as e:
            ex.error = f"upstream unreachable: {e}"
            return error_reply(502, request)
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (), max_msg_size=0, compress=False
        )
        ex.bytes_out = 0
        try:
            await client.prepare(request)
            await asyncio.gather(_pump(client, upstream, ex, inbound=True), _pump(upstream, client, ex, inbound=False))
        finally:
            await upstream.close()
            await client.close()
        return Reply(101, sent=client)

    async def _ws_connect(
        self, session: aiohttp.ClientSession, url: URL, headers: CIMultiDict[str], protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse:
        return await session.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            autoping=True,
            compress=0,
            max_msg_size=0,
            ssl=self.ssl,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
        )


def _response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones (and those named in Connection)."""
    drop = HOP_BY_HOP | connection_tokens(upstream.headers)
    return CIMultiDict((name, value) for name, value in upstream.headers.items() if name.lower() not in drop)


def _failed(ex: Exchange, e: BaseException) -> Reply:
    """An upstream exchange that broke before the answer began: the client's fault or a 502."""
    if client_gone(ex.request):  # e.g. an upload abandoned half way
        ex.error = "client went away"
        return Reply(CLIENT_CLOSED)
    ex.error = f"upstream failed: {type(e).__name__}: {e}"
    return error_reply(502, ex.request)


async def _pump(src: Any, dst: Any, ex: Exchange, *, inbound: bool) -> None:
    """Copy messages from one WebSocket to the other until either closes."""
    async for msg in src:
        if msg.type == WSMsgType.TEXT:
            data = msg.data
            await dst.send_str(data)
        elif msg.type == WSMsgType.BINARY:
            data = msg.data
            await dst.send_bytes(data)
        else:  # ERROR; CLOSE and the rest end the iteration
            break
        if inbound:
            ex.bytes_in += len(data)
        else:
            ex.bytes_out = (ex.bytes_out or 0) + len(data)
    # One side closed: close the other with the same code.
    code = src.close_code or 1000
    await dst.close(code=code if 1000 <= code < 5000 and code not in (1005, 1006) else 1000)


def _not_replayed(method: str, body: _Body | None, lost: UpstreamLost) -> str:
    """Why a request lost with its reused connection cannot be sent again ("" if it can)."""
    if lost.unsent or (body is not None and not body.sent):
        return ""  # nothing of it left homeproxy: safe whatever the method
    if method not in IDEMPOTENT_METHODS:
        return f"{method} not replayed"
    if body is not None and body.data is None:
        return f"{method} not replayed (its body was streamed)"
    return ""


class _Body(Payload):
    """The client's request body as aiohttp writes it upstream, counted in `ex.bytes_in`.

    Either in hand (`data`, read whole first) or streamed from the client chunk by chunk with
    back-pressure (nothing is held whole). aiohttp holds the request head back until the first
    body write, so while `sent` is False nothing of the request has left homeproxy."""

    _autoclose = True

    def __init__(self, ex: Exchange, data: bytes | None, held: bytes = b"") -> None:
        super().__init__(data)
        self._ex = ex
        self._look = data is None or ex.request.method not in IDEMPOTENT_METHODS
        """Whether to look at the connection before the first write: when the request could not be
        replayed once written (a streamed body, a POST), it is worth one getsockopt."""
        self.data = data
        """The whole body, or None when it is streamed."""
        self.sent = False
        """Some of the request may have reached the upstream (the connection was open for the first write)."""
        self._held = held
        """A chunk read from the client but not yet written (sent first by a replay)."""
        self._task: asyncio.Task[Any] | None = None
        if data is not None:
            self._size = len(data)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        data = self.data
        if data is not None:
            self._open(writer)
            await writer.write(data if content_length is None else data[:content_length])
            return
        self._task = asyncio.current_task()
        ex = self._ex
        read = ex.request.content.read
        chunk = self._held
        if not chunk:
            chunk = self._held = await read(_CHUNK)
            ex.bytes_in += len(chunk)
        self._open(writer)
        self._consumed = True
        remaining = content_length
        while chunk:
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            await writer.write(chunk)
            self._held = b""
            if remaining == 0:
                break
            chunk = await read(_CHUNK)
            ex.bytes_in += len(chunk)

    def _open(self, writer: AbstractStreamWriter) -> None:
        """Before the first write (which carries the request head): raise if the connection is closed."""
        transport = writer.transport
        if (
            transport is None
            or transport.is_closing()
            or (self._look and transport.get_protocol() in _SERVED and _peer_closed(transport))
        ):
            raise aiohttp.ClientConnectionResetError("the upstream closed the connection")
        self.sent = True

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        if self.data is None:
            raise TypeError("a streamed request body cannot be decoded")
        return self.data.decode(encoding, errors)

    async def replay(self) -> _Body:
        """The body for sending the request again (only when it is in hand or was not sent)."""
        task = self._task
        if task is not None and not task.done():
            # The lost attempt's writer, cancelled while it waited for the client's first chunk:
            # let it end, so that two readers never wait on the client's stream at once.
            await asyncio.wait((task,))
        return _Body(self._ex, self.data, self._held)
