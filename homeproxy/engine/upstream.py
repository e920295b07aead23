"""The terminal handler: forward a request to an upstream and stream the answer back.

- HTTP/1.1 to the upstream through homeproxy's own keep-alive pool (`engine/h1/`, httptools):
  one `Origin` per upstream, shared by the sites that reach it the same way.
- Bodies stream both ways chunk by chunk with back-pressure; nothing is held whole in memory
  (a 1 GiB upload or download costs a few buffers), except request bodies of up to 64 KiB,
  read whole first so they can be sent again, and responses of known length up to 64 KiB,
  read whole so a body cut short becomes a clean 502 instead of a truncated 200.
- Hop-by-hop headers (RFC 9110 section 7.6.1), and every header named in `Connection`, are
  removed in both directions. X-Forwarded-For/-Proto/-Host/-Port and X-Real-IP are set; a
  client's own X-Forwarded-* values are believed only from a configured trusted proxy.
- Per-site connect and read timeouts; an unreachable upstream is a 502 page, a timeout a 504;
  with several upstreams, one that refuses the connection hands the request to the next.
- A pooled connection that the upstream closed as the request went out (its idle keep-alive
  timer ran out) is not shown to the client: the request is sent once more on a fresh
  connection when nothing of it was written yet, or when its method is idempotent and its
  body is still in hand (RFC 9112 section 9.3.1).
- WebSocket upgrades go to `upstream_ws.py`: after the handshake, a byte tunnel both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from yarl import URL

from homeproxy.config.model import Route, Site
from homeproxy.discovery.service import parse_mdns_ref
from homeproxy.engine.balance import Balancer
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.h1.connection import H1Connection, Response
from homeproxy.engine.h1.errors import (
    CERT_REFUSED_ERROR,
    UPSTREAM_CERT_REFUSED,
    UpstreamCertError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamLost,
)
from homeproxy.engine.h1.pool import Origin, OriginKey, Pool
from homeproxy.engine.hop import HOP_BY_HOP, connection_tokens, forwarded_for
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import CLIENT_CLOSED, NO_BODY_STATUS, Reply, client_gone
from homeproxy.engine.request import BodyError, Request
from homeproxy.engine.upstream_ws import is_websocket_upgrade, relay_websocket

log = logging.getLogger(__name__)

__all__ = [
    "HOP_BY_HOP",
    "UPSTREAM_CERT_REFUSED",
    "Forwarder",
    "Resolver",
    "UpstreamClient",
    "connection_tokens",
    "forwarded_for",
]


#: Request headers that homeproxy sets itself (the client's copies are not passed on as they are).
_FORWARDING = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip", "expect"}
)
_DROP = HOP_BY_HOP | _FORWARDING | {"host", "content-length"}
_CHUNK = 256 * 1024
#: Responses of known length up to this size are sent in one write with their headers;
#: request bodies of known length up to it are read whole first (so a request can be replayed).
_SMALL_BODY = 64 * 1024
#: RFC 9110 section 9.2.2: sending one of these twice has the effect of sending it once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: Methods whose requests carry a body by definition: without one, say Content-Length: 0.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class UpstreamClient:
    """What every site forwards through; lives on the engine's loop: the HTTP/1.1 pool.
    (Forward auth has its own aiohttp client, made only when a site uses it.)"""

    def __init__(self) -> None:
        self.pool = Pool()

    async def open(self) -> None:
        self.pool.start()

    async def close(self) -> None:
        await self.pool.close()


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
        self.prefix = route.path.rstrip("/") if route is not None and route.strip_prefix else ""
        urls = [u.url for u in (route.upstreams if route is not None else site.upstreams)]
        self.upstreams: tuple[URL | MdnsUpstream, ...] = tuple(
            MdnsUpstream(u, resolver) if u.startswith("mdns://") else URL(u) for u in urls
        )
        self._names = tuple(str(u) for u in self.upstreams)
        self._origins: dict[URL, tuple[Origin, str]] = {}
        self.balancer = Balancer(site.balance, len(self.upstreams), self._load)

    def _load(self, i: int) -> int:
        """Upstream `i`'s requests in flight now (an mDNS service not on the network: as busy as can be)."""
        entry = self.upstreams[i]
        base = entry if type(entry) is URL else entry.resolve()  # type: ignore[union-attr]
        return self._origin(base)[0].in_flight if base is not None else 1 << 30

    def pick(self, ex: Exchange) -> URL | None:
        """The base URL of the upstream the site's policy picks first (see `base`)."""
        return self.base(ex, self.balancer.order(ex.client)[0])

    def base(self, ex: Exchange, i: int) -> URL | None:
        """Upstream `i`'s base URL; None (with `ex.error` set) for an mDNS service that is not on the network."""
        entry = self.upstreams[i]
        if type(entry) is URL:
            ex.upstream = self._names[i]
            return entry
        ex.upstream = str(entry)
        base = entry.resolve()  # type: ignore[union-attr]
        if base is None:
            ex.error = f"upstream unreachable: mDNS service {entry} is not on the network"
            return None
        ex.upstream = str(base)
        return base

    def _origin(self, base: URL) -> tuple[Origin, str]:
        """The pool's origin for `base`, and the path prefix of the base URL (cached per URL)."""
        found = self._origins.get(base)
        if found is None:
            key = OriginKey(
                base.scheme,
                base.host or "",
                base.port or (443 if base.scheme == "https" else 80),
                self.site.verify_upstream,
                self.site.upstream_keepalive,
                self.site.upstream_ca,
                self.site.upstream_sni,
            )
            if len(self._origins) > 64:  # mDNS services that moved: keep it small
                self._origins.clear()
            found = self._origins[base] = (self.client.pool.origin(key), base.raw_path.rstrip("/"))
        return found

    def target(self, request: Request) -> str:
        """The request target sent upstream: the raw path and query, minus a stripped prefix."""
        target = request.path_qs
        if self.prefix and target.startswith(self.prefix):
            target = target[len(self.prefix) :]
            if not target.startswith("/"):
                target = "/" + target
        return target

    def _kept(self, ex: Exchange) -> list[tuple[str, str]]:
        """The client's headers that go on: all but hop-by-hop ones and those homeproxy sets."""
        src = ex.headers
        drop = _DROP | connection_tokens(src) if "Connection" in src else _DROP
        return [(name, value) for name, value in src.items() if name.lower() not in drop]

    def _forwarding(self, ex: Exchange, authority: str) -> tuple[tuple[str, str], ...]:
        """Host and the X-Forwarded-* / X-Real-IP headers homeproxy sets."""
        request = ex.request
        src = ex.headers
        host = src.get("Host", authority) if self.site.preserve_host else authority
        peer = request.remote
        if not ex.trusted_peer:  # the common case: nothing the client says about itself is believed
            return (
                ("Host", host),
                ("X-Forwarded-For", peer),
                ("X-Forwarded-Proto", request.scheme),
                ("X-Forwarded-Host", src.get("Host") or ""),
                ("X-Forwarded-Port", request.local_port),
                ("X-Real-IP", ex.client),
            )
        xff = forwarded_for(src)
        return (
            ("Host", host),
            ("X-Forwarded-For", f"{xff}, {peer}" if xff else peer),
            ("X-Forwarded-Proto", src.get("X-Forwarded-Proto") or request.scheme),
            ("X-Forwarded-Host", src.get("X-Forwarded-Host") or src.get("Host") or ""),
            ("X-Forwarded-Port", src.get("X-Forwarded-Port") or request.local_port),
            ("X-Real-IP", ex.client),
        )

    async def __call__(self, ex: Exchange) -> Reply:
        request = ex.request
        if self.site.websockets and is_websocket_upgrade(request):
            return await relay_websocket(self, ex)
        if request.headers.get("Expect", "").lower() == "100-continue":
            # We read the body before (small) or as (large) we send it upstream; let the client start now.
            await request.send_continue()
        body = _Body(ex)
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= _SMALL_BODY:
                # Small: read whole before the upstream is contacted, so it is in hand for a replay.
                try:
                    body.data = await request.content.readexactly(length)
                except (EOFError, ConnectionError) as e:
                    return _failed(ex, e)
                ex.bytes_in += length
            else:
                body.streamed = True
                body.length = length
        last = len(self.upstreams) - 1
        # Try each upstream once, in the policy's order, while they refuse connections (nothing
        # has been sent yet).
        for attempt, i in enumerate(self.balancer.order(ex.client)):
            base = self.base(ex, i)
            if base is None:
                if attempt == last:
                    return error_reply(502, request)
                continue
            ex.error = ""
            origin, base_path = self._origin(base)
            head = self._head(ex, base, base_path, body)
            try:
                try:
                    return await self._exchange(ex, origin, head, body, fresh=False)
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
                        ex.error = f"upstream closed the pooled connection; {refused}"
                        return error_reply(502, request)
                    log.debug("%s %s: upstream closed the pooled connection; sent again", request.method, base)
                    return await self._exchange(ex, origin, head, body, fresh=True)
            except UpstreamCertError:
                # Not a refused connection: no silent failover to the next upstream.
                ex.error = CERT_REFUSED_ERROR
                return error_reply(502, request)
            except UpstreamConnectError as e:
                if attempt == last:
                    ex.error = f"upstream unreachable: {e}"
                    return error_reply(502, request)
                continue
            except TimeoutError:
                ex.error = "upstream timed out before answering"
                return error_reply(504, request)
            except (UpstreamError, ConnectionError) as e:
                return _failed(ex, e)
        raise AssertionError("unreachable: a site has at least one upstream")

    def _head(self, ex: Exchange, base: URL, base_path: str, body: _Body) -> bytes:
        """The request line and headers, as bytes, with the body's framing."""
        if body.data is not None:
            framing = [f"Content-Length: {len(body.data)}"]
        elif body.streamed:
            framing = ["Transfer-Encoding: chunked" if body.length is None else f"Content-Length: {body.length}"]
        else:
            framing = ["Content-Length: 0"] if ex.request.method in _BODY_METHODS else []
        return self.head(ex, base, base_path, framing)

    def head(self, ex: Exchange, base: URL, base_path: str, extra: list[str]) -> bytes:
        """The request line and headers sent to `base`, with `extra` header lines last (the body's
        framing, or a WebSocket handshake's Connection and Upgrade)."""
        request = ex.request
        lines = [f"{request.method} {base_path}{self.target(request)} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in self._kept(ex)]
        lines += [f"{name}: {value}" for name, value in self._forwarding(ex, base.raw_authority)]
        lines += extra
        lines.append("\r\n")
        # The client's header bytes were decoded as UTF-8 with surrogateescape: the same bytes go on.
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")

    async def _exchange(self, ex: Exchange, origin: Origin, head: bytes, body: _Body, *, fresh: bool) -> Reply:
        """One attempt on one connection: send, wait for the head, turn it into a `Reply`."""
        site = self.site
        conn = await self.client.pool.acquire(origin, site.connect_timeout, fresh=fresh)
        origin.in_flight += 1
        sending: asyncio.Task[None] | None = None
        try:
            if body.streamed:
                if body.used:
                    raise UpstreamLost("the request body was already streamed", reused=False)
                conn.send(head, None, head_only=False, streaming=True)
                sending = asyncio.ensure_future(body.stream(conn))
                response = await _first(asyncio.ensure_future(conn.response(site.read_timeout)), sending)
            else:
                conn.send(head, body.data, head_only=ex.request.method == "HEAD")
                response = await conn.response(site.read_timeout)
        except BaseException:
            origin.in_flight -= 1
            if sending is not None:
                sending.cancel()
            conn.abort()
            raise
        return await self._reply(ex, origin, conn, response, sending)

    async def _reply(
        self, ex: Exchange, origin: Origin, conn: H1Connection, upstream: Response, sending: asyncio.Task[None] | None
    ) -> Reply:
        pool, timeout = self.client.pool, self.site.read_timeout
        released = False

        def release(complete: bool) -> None:
            nonlocal released
            if released:
                return
            released = True
            origin.in_flight -= 1
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
        if length is not None and length <= _SMALL_BODY:
            try:
                reply.body = await upstream.read(timeout)
            except TimeoutError:
                release(False)
                ex.error = "upstream timed out mid-response"
                return error_reply(504, ex.request)
            except (UpstreamError, ConnectionError) as e:
                release(False)
                return _failed(ex, e)
            release(True)
            return reply
        reply.body = upstream.iter_chunks(timeout)
        reply.release = release
        return reply


async def _first(waiting: asyncio.Future[Response], sending: asyncio.Future[None]) -> Response:
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


class _Body:
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

    async def stream(self, conn: H1Connection) -> None:
        self.used = True
        ex = self._ex
        read = ex.request.content.read
        chunked = self.length is None
        remaining = self.length
        while True:
            chunk = await read(_CHUNK)
            if not chunk:
                break
            if remaining is not None:
                chunk = chunk[:remaining]
                remaining -= len(chunk)
            ex.bytes_in += len(chunk)
            await conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if remaining == 0:
                break
        if chunked:
            await conn.write(b"0\r\n\r\n")
        if remaining:
            raise ConnectionResetError("the client's body ended early")
        conn.body_sent()


def _not_replayed(method: str, body: _Body, lost: UpstreamLost) -> str:
    """Why a request lost with its reused connection cannot be sent again ("" if it can)."""
    if lost.unsent:
        return ""  # nothing of it left homeproxy: safe whatever the method
    if body.used:
        return f"{method} not replayed (its body was streamed)"
    if method not in IDEMPOTENT_METHODS:
        return f"{method} not replayed"
    return ""


def _failed(ex: Exchange, e: BaseException) -> Reply:
    """An upstream exchange that broke before the answer began: the client's fault or a 502."""
    if client_gone(ex.request):  # e.g. an upload abandoned half way
        ex.error = "client went away"
        return Reply(CLIENT_CLOSED)
    if isinstance(e, BodyError):
        ex.error = str(e)
        return error_reply(400, ex.request)
    ex.error = f"upstream failed: {type(e).__name__}: {e}"
    return error_reply(502, ex.request)
