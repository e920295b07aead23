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
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from homeproxy.config.model import Route, Site
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.pages import error_page

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
_NO_BODY_STATUS = frozenset({204, 304})
#: Recorded (never sent) when the client hung up before it got an answer, as nginx does.
CLIENT_CLOSED = 499
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


def forwarded_for(headers: CIMultiDictProxy[str]) -> str:
    """X-Forwarded-For as one list, however many header lines carry it (RFC 9110 section 5.3)."""
    return ", ".join(headers.getall("X-Forwarded-For", ()))


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    h = request.headers
    return h.get("Upgrade", "").lower() == "websocket" and "upgrade" in connection_tokens(h)


class Forwarder:
    """Forwards a site's (or one route's) requests to its upstreams, in turn."""

    def __init__(self, client: UpstreamClient, site: Site, route: Route | None = None) -> None:
        self.client = client
        self.site = site
        self.prefix = route.path if route is not None and route.strip_prefix else ""
        urls = route.upstreams if route is not None else site.upstreams
        self.upstreams = tuple(URL(u) for u in urls)
        self._next = itertools.cycle(range(len(self.upstreams)))
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=site.connect_timeout, sock_read=site.read_timeout)

    async def __call__(self, ex: Exchange) -> web.StreamResponse:
        request = ex.request
        if self.site.websockets and is_websocket_upgrade(request):
            return await self._websocket(ex)
        if request.headers.get("Expect", "").lower() == "100-continue":
            # We read the body as we send it upstream; let the client start now.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # Try each upstream once while they refuse connections (nothing has been sent yet).
        for attempt in range(len(self.upstreams)):
            base = self.upstreams[next(self._next)]
            url = self._target(base, request)
            ex.upstream = str(base)
            try:
                upstream = await self.client.session.request(
                    request.method,
                    url,
                    headers=self._request_headers(ex, base),
                    data=_body(ex) if request.body_exists else None,
                    allow_redirects=False,
                    timeout=self.timeout,
                )
            except aiohttp.ClientConnectorError as e:
                if isinstance(e, aiohttp.ClientConnectorCertificateError) or attempt == len(self.upstreams) - 1:
                    ex.error = f"upstream unreachable: {e.os_error.strerror or e}"
                    return error_page(502, request)
                continue
            except TimeoutError:
                ex.error = "upstream timed out before answering"
                return error_page(504, request)
            except (aiohttp.ClientError, ConnectionError) as e:
                if client_gone(request):  # e.g. an upload abandoned half way
                    ex.error = "client went away"
                    return web.Response(status=CLIENT_CLOSED)
                ex.error = f"upstream failed: {type(e).__name__}: {e}"
                return error_page(502, request)
            return await self._relay(ex, upstream)
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
        src = request.headers
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

    async def _relay(self, ex: Exchange, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        request = ex.request
        length = upstream.content_length
        if (
            length is not None
            and length <= _SMALL_BODY
            and request.method != "HEAD"
            and upstream.status not in _NO_BODY_STATUS
        ):
            return await self._relay_small(ex, upstream)
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            _copy_response_headers(upstream, response)
            await response.prepare(request)
            ex.bytes_out = 0
            if request.method != "HEAD" and upstream.status not in _NO_BODY_STATUS:
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    ex.bytes_out += len(chunk)
                    await response.write(chunk)
            await response.write_eof()
            return response
        except (TimeoutError, ConnectionError, aiohttp.ClientError) as e:
            if client_gone(request):
                ex.error = "client went away"
            else:
                # The status line is gone already: cut the connection so the client
                # sees a truncated body instead of a clean (and wrong) end.
                ex.error = f"upstream failed mid-response: {type(e).__name__}"
                _abort(request)
            return response
        finally:
            upstream.close() if ex.error else upstream.release()

    async def _relay_small(self, ex: Exchange, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """A small body of known length is read whole and sent with the headers in one write:
        one system call instead of three for the typical API or page response."""
        request = ex.request
        try:
            body = await upstream.read()
        except TimeoutError:
            ex.error = "upstream timed out mid-response"
            upstream.close()
            return error_page(504, request)
        except (ConnectionError, aiohttp.ClientError) as e:
            upstream.close()
            if client_gone(request):
                ex.error = "client went away"
                return web.Response(status=CLIENT_CLOSED)
            # Nothing was sent yet: a short or broken body is a clean 502, not a truncated 200.
            ex.error = f"upstream failed mid-response: {type(e).__name__}"
            return error_page(502, request)
        upstream.release()
        response = web.Response(status=upstream.status, reason=upstream.reason, body=body)
        _copy_response_headers(upstream, response, skip=("content-length",))
        ex.bytes_out = len(body)
        return response

    async def _websocket(self, ex: Exchange) -> web.StreamResponse:
        """Relay a WebSocket session: connect upstream first, then accept the client."""
        request = ex.request
        src = request.headers
        protocols = tuple(p.strip() for p in src.get("Sec-WebSocket-Protocol", "").split(",") if p.strip())
        base = self.upstreams[next(self._next)]
        ex.upstream = str(base)
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
            return error_page(502, request) if e.status < 400 else web.Response(status=e.status)
        except TimeoutError:
            ex.error = "upstream timed out before answering"
            return error_page(504, request)
        except aiohttp.ClientError as e:
            ex.error = f"upstream unreachable: {e}"
            return error_page(502, request)
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
        return client

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
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
        )


def _copy_response_headers(
    upstream: aiohttp.ClientResponse, response: web.StreamResponse, skip: tuple[str, ...] = ()
) -> None:
    drop = HOP_BY_HOP | connection_tokens(upstream.headers) | frozenset(skip)
    headers = response.headers
    for name, value in upstream.headers.items():
        if name.lower() not in drop:
            headers.add(name, value)
    headers.setdefault("Server", "homeproxy")


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


def client_gone(request: web.BaseRequest) -> bool:
    """The client's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
