"""The terminal handler: forward a request to an upstream and stream the answer back.

- Bodies stream both ways chunk by chunk with back-pressure; nothing is held
  whole in memory (a 1 GiB upload or download costs a few buffers).
- Hop-by-hop headers (RFC 9110 section 7.6.1), and every header named in
  `Connection`, are removed in both directions.
- X-Forwarded-For/-Proto/-Host and X-Real-IP are set; a client's own
  X-Forwarded-* values are believed only from a configured trusted proxy.
- One pooled keep-alive `ClientSession` serves every site; per-site connect
  and read timeouts; an unreachable upstream is a 502 page, a timeout a 504.
- WebSocket upgrades are relayed message by message in both directions.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from homeproxy.config.model import Route, Site
from homeproxy.discovery.service import parse_mdns_ref
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import CLIENT_CLOSED, NO_BODY_STATUS, Reply, client_gone

log = logging.getLogger(__name__)

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
_FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "expect"})
#: Headers of the WebSocket handshake that aiohttp's client writes itself.
_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
_CHUNK = 256 * 1024
#: Responses of known length up to this size are sent in one write with their headers.
_SMALL_BODY = 64 * 1024


class UpstreamClient:
    """The one pooled HTTP client every site forwards through; lives on the engine's loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=10)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # SECURITY: a shared proxy must never keep one client's cookies for another.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamClient is not open")
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Header names listed in `Connection` (they are hop-by-hop too)."""
    values = headers.getall("Connection", ())
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


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
            # We read the body as we send it upstream; let the client start now.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # Try each upstream once while they refuse connections (nothing has been sent yet).
        for attempt in range(len(self.upstreams)):
            base = self._pick(ex)
            if base is None:
                if attempt == len(self.upstreams) - 1:
                    return error_reply(502, request)
                continue
            ex.error = ""
            url = self._target(base, request)
            try:
                upstream = await self.client.session.request(
                    request.method,
                    url,
                    headers=self._request_headers(ex, base),
                    data=_body(ex) if request.body_exists else None,
                    allow_redirects=False,
                    timeout=self.timeout,
                    ssl=self.ssl,
                )
            except aiohttp.ClientConnectorError as e:
                if isinstance(e, aiohttp.ClientConnectorCertificateError) or attempt == len(self.upstreams) - 1:
                    ex.error = f"upstream unreachable: {e.os_error.strerror or e}"
                    return error_reply(502, request)
                continue
            except TimeoutError:
                ex.error = "upstream timed out before answering"
                return error_reply(504, request)
            except (aiohttp.ClientError, ConnectionError) as e:
                return _failed(ex, e)
            return await self._reply(ex, upstream)
        raise AssertionError("unreachable: a site has at least one upstream")

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
                upstream = await self._ws_connect(url, headers, protocols)
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
        self, url: URL, headers: CIMultiDict[str], protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse:
        return await self.client.session.ws_connect(
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


async def _body(ex: Exchange) -> AsyncIterator[bytes]:
    """The client's request body, counted as it streams upstream."""
    async for chunk in ex.request.content.iter_chunked(_CHUNK):
        ex.bytes_in += len(chunk)
        yield chunk
