"""The terminal handler: forward a request to an upstream and stream the answer back.

- HTTP/1.1 to the upstream through homeproxy's own keep-alive pool (`engine/h1/`, httptools):
  one `Origin` per upstream, shared by the sites that reach it the same way.
- Bodies stream both ways chunk by chunk with back-pressure; nothing is held whole in memory
  (a 1 GiB upload or download costs a few buffers), except request bodies of up to 64 KiB,
  read whole first so they can be sent again, and responses of known length up to 64 KiB,
  read whole so a body cut short becomes a clean 502 instead of a truncated 200.
- Hop-by-hop headers (RFC 9110 section 7.6.1), and every header named in `Connection`, are
  removed in both directions. X-Forwarded-For/-Proto/-Host/-Port and X-Real-IP are set; a
  client's own X-Forwarded-* values are believed only from a configured trusted proxy
  (the request head is built in `upstream_head.py`).
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
import functools
import logging
import math
import time

from yarl import URL

from homeproxy.config.model import STICKY_COOKIE, Route, Site
from homeproxy.engine import upstream_head
from homeproxy.engine.balance import Balancer, sticky_value
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.h1.errors import (
    CERT_REFUSED_ERROR,
    UPSTREAM_CERT_REFUSED,
    UpstreamCertError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamLost,
)
from homeproxy.engine.h1.pool import Origin, OriginKey
from homeproxy.engine.hop import HOP_BY_HOP, connection_tokens, forwarded_for
from homeproxy.engine.pages import error_reply
from homeproxy.engine.paths import match_prefix
from homeproxy.engine.reply import CLIENT_CLOSED, Reply, client_gone
from homeproxy.engine.upstream_exchange import (
    IDEMPOTENT_METHODS,
    SMALL_BODY,
    Body,
    BodyTooLarge,
    exchange,
    failed,
    not_replayed,
)
from homeproxy.engine.upstream_head import VIA_TOKEN, framed_head
from homeproxy.engine.upstream_targets import MdnsUpstream, Resolver, UpstreamClient, no_resolver
from homeproxy.engine.upstream_ws import is_websocket_upgrade, relay_websocket

log = logging.getLogger(__name__)

__all__ = [
    "HOP_BY_HOP",
    "UPSTREAM_CERT_REFUSED",
    "VIA_TOKEN",
    "Forwarder",
    "Resolver",
    "UpstreamClient",
    "connection_tokens",
    "forwarded_for",
]


QUEUE_WAIT = 2.0
"""Seconds a request waits for a free slot when every upstream is at its `max_conns`."""
ALL_DOWN_RETRY_AFTER = 30
"""The most seconds a 503 for a site whose upstreams are all down tells clients to wait."""


class Forwarder:
    """Forwards a site's (or one route's) requests to its upstreams, in turn."""

    def __init__(
        self, client: UpstreamClient, site: Site, route: Route | None = None, *, resolver: Resolver = no_resolver
    ) -> None:
        self.client = client
        self.site = site
        self.prefix = ""
        """The route's path (normal form, no trailing `/`) that `rewrite` replaces."""
        self.rewrite: str | None = None
        """What replaces `prefix` ("" cuts it: `strip_prefix`, `rewrite = "/"`); None: nothing is cut."""
        if route is not None and (route.strip_prefix or route.rewrite):
            self.prefix = match_prefix(route.path).rstrip("/")
            self.rewrite = route.rewrite.rstrip("/")
        configured = route.upstreams if route is not None else site.upstreams
        urls = [u.url for u in configured]
        self.upstreams: tuple[URL | MdnsUpstream, ...] = tuple(
            MdnsUpstream(u, resolver) if u.startswith("mdns://") else URL(u) for u in urls
        )
        self._names = tuple(str(u) for u in self.upstreams)
        self._origins: dict[URL, tuple[Origin, str]] = {}
        self._fixed: list[tuple[Origin, str] | None] = [None] * len(self.upstreams)
        self.balancer = Balancer(site.balance, urls, [u.weight for u in configured], self._load)
        self._cookie = site.balance == "cookie"
        self._single = len(configured) == 1
        self._primaries = [i for i, u in enumerate(configured) if not u.backup]
        self._backups = [i for i, u in enumerate(configured) if u.backup]
        where = route.path if route is not None else ""
        self.health = tuple(client.health.entry(site, u, where) for u in configured)
        """Each upstream's health, in the same order (shared with the site's other routes)."""
        for i, entry in enumerate(self.health):
            entry.resolve = functools.partial(self._resolve, i)
            entry.origin_for = self._origin

    head = upstream_head.head
    """The request line and headers sent to an upstream (`upstream_head.py`; `upstream_ws.py` calls it)."""
    target = upstream_head.target
    """The request target sent upstream, the route's prefix replaced (`upstream_head.py`)."""

    def _load(self, i: int) -> int:
        """Upstream `i`'s requests in flight now (an mDNS service not on the network: as busy as can be)."""
        entry = self.upstreams[i]
        base = entry if type(entry) is URL else entry.resolve()  # type: ignore[union-attr]
        return self._origin(base)[0].in_flight if base is not None else 1 << 30

    def _resolve(self, i: int) -> URL | None:
        entry = self.upstreams[i]
        return entry if type(entry) is URL else entry.resolve()  # type: ignore[union-attr]

    def pick(self, ex: Exchange) -> URL | None:
        """The base URL of the upstream the site's policy picks first (see `base`); None (with
        `ex.error` set) when every upstream is down or it is an mDNS service not on the network."""
        order = self.candidates(ex)
        if not order:
            ex.error = "every upstream is down"
            return None
        return self.base(ex, order[0])

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

    def fixed_origin(self, i: int) -> tuple[Origin, str] | None:
        """`_origin` of upstream `i` when it is a URL (kept by index); None for an mDNS one."""
        found = self._fixed[i]
        if found is None:
            entry = self.upstreams[i]
            if type(entry) is not URL:
                return None
            found = self._fixed[i] = self._origin(entry)
        return found

    def candidates(self, ex: Exchange) -> list[int]:
        """The upstreams to try, in order: the primaries that are up in the policy's order, then
        the backups that are up in listed order (in the policy's order when every primary is down)."""
        health = self.health
        if self._single:
            return [0] if health[0].up else []
        primaries = [i for i in self._primaries if health[i].up]
        backups = [i for i in self._backups if health[i].up]
        if not primaries:
            primaries, backups = backups, []
        sticky = _sticky(ex) if self._cookie else ""
        return self.balancer.order(primaries, ex.client, sticky) + backups

    async def __call__(self, ex: Exchange) -> Reply:
        request = ex.request
        site = self.site
        if "Via" in ex.headers and VIA_TOKEN in ",".join(ex.headers.getall("Via")):
            # This request went through this homeproxy already: a site whose upstream is homeproxy
            # itself. Forwarding it again would loop until connections ran out.
            ex.error = "loop: the upstream is this homeproxy (the request came back with its Via)"
            return error_reply(508, request)
        if site.websockets and is_websocket_upgrade(request):
            return await relay_websocket(self, ex)
        body = Body(ex)
        if request.body_exists:
            length = request.content_length
            if site.max_body and length is not None and length > site.max_body:
                ex.error = "request body over the site's max_body"
                return error_reply(413, request)  # before reading any of it (nor sending 100 Continue)
            if request.headers.get("Expect", "").lower() == "100-continue":
                # We read the body before (small) or as (large) we send it upstream: let the client start.
                await request.send_continue()
            if length is not None and length <= SMALL_BODY:
                # Small: read whole before the upstream is contacted, so it is in hand for a replay.
                try:
                    body.data = await request.content.readexactly(length)
                except (EOFError, ConnectionError) as e:
                    return failed(ex, e)
                ex.bytes_in += length
            else:
                body.streamed = True
                body.length = length
        order = self.candidates(ex)
        if not order:
            return self._all_down(ex)
        reply = await self._attempts(ex, order, body)
        if reply is None:
            reply = await self._after_queueing(ex, body)
        return reply

    async def resume(
        self, ex: Exchange, order: list[int], raised: BaseException | None, *, since: float
    ) -> tuple[Reply, None]:
        """The express lane's hand-over (`express.py`): the rest of a bodiless request's forwarding
        from the candidates it picked (at `since`); `raised` is what its try on the first of them met."""
        body = Body(ex)
        reply = await self._attempts(ex, order, body, raised, since)
        if reply is None:
            reply = await self._after_queueing(ex, body)
        return reply, None

    async def _attempts(
        self, ex: Exchange, order: list[int], body: Body, raised: BaseException | None = None, since: float = 0.0
    ) -> Reply | None:
        """Try the upstreams in `order`, the next one only when the last failed in a way that may be
        retried, within `retries` and `retry_deadline`. None when every one was at `max_conns`.
        `raised`: the first one was tried already (by the express lane), and this is what it met."""
        site = self.site
        started = since or time.monotonic()
        tried = 0
        status = 502  # the answer if no upstream takes the request
        for i in order:
            health = self.health[i]
            first, raised = raised, None
            if first is None and health.full():
                continue
            if tried > site.retries or (tried and time.monotonic() - started >= site.retry_deadline):
                break
            tried += 1
            base = self.base(ex, i)
            if base is None:  # an mDNS service that is not on the network (ex.error says so)
                health.failed(ex.error)
                continue
            ex.error = ""
            outcome = await self._attempt(ex, i, base, body, first)
            if type(outcome) is not int:
                if self._cookie:
                    _set_sticky(ex, outcome, self._names[i])  # type: ignore[arg-type]
                return outcome  # type: ignore[return-value]
            status = outcome
        return error_reply(status, ex.request) if tried else None

    async def _after_queueing(self, ex: Exchange, body: Body) -> Reply:
        """Every candidate is at its `max_conns`: wait briefly for a slot, then 503."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        for i in self.candidates(ex):
            self.health[i].waiters.append(waiter)
        try:
            async with asyncio.timeout(min(QUEUE_WAIT, self.site.retry_deadline)):
                await waiter
        except TimeoutError:
            pass
        else:
            order = self.candidates(ex)
            reply = await self._attempts(ex, order, body) if order else None
            if reply is not None:
                return reply
        ex.error = "every upstream is at its max_conns"
        reply = error_reply(503, ex.request, "The service is busy. Try again in a moment.")
        reply.headers["Retry-After"] = "1"
        return reply

    def _all_down(self, ex: Exchange) -> Reply:
        ex.error = "every upstream is down"
        reply = error_reply(503, ex.request, "The service is unavailable right now. Try again in a moment.")
        interval = self.site.health.interval if self.site.health is not None else self.site.passive_health.cooldown
        reply.headers["Retry-After"] = str(max(1, min(ALL_DOWN_RETRY_AFTER, math.ceil(interval))))
        return reply

    async def _attempt(
        self, ex: Exchange, i: int, base: URL, body: Body, raised: BaseException | None = None
    ) -> Reply | int:
        """One upstream: its answer, or, when the request may go to the next one, the status
        to answer if no other takes it (`raised`: its first exchange was made and met this)."""
        request = ex.request
        site = self.site
        health = self.health[i]
        pool = self.client.pool
        origin, base_path = self._origin(base)
        head = framed_head(self, ex, base, base_path, body)
        try:
            try:
                if raised is not None:
                    raise raised
                return await exchange(pool, site, ex, origin, health, head, body, fresh=False)
            except UpstreamLost as e:
                if not e.reused:
                    raise
                # Most likely the upstream closed the idle connection as the request went out
                # (RFC 9112 section 9.3.1): send it again, once, on a new connection if that is safe.
                refused = not_replayed(request.method, body, e)
                if refused:
                    if client_gone(request):
                        ex.error = "client went away"
                        return Reply(CLIENT_CLOSED)
                    ex.error = f"upstream closed the pooled connection; {refused}"
                    return error_reply(502, request)
                log.debug("%s %s: upstream closed the pooled connection; sent again", request.method, base)
                return await exchange(pool, site, ex, origin, health, head, body, fresh=True)
        except UpstreamCertError:
            # Not a refused connection: no silent failover to the next upstream.
            ex.error = CERT_REFUSED_ERROR
            return error_reply(502, request)
        except UpstreamConnectError as e:
            ex.error = f"upstream unreachable: {e}"
            health.failed(ex.error)
            return 502
        except TimeoutError:
            ex.error = "upstream timed out before answering"
            health.failed(ex.error)
            return 504 if self._replayable(request.method, body) else error_reply(504, request)
        except UpstreamLost as e:
            ex.error = f"upstream failed: {e}"
            health.failed(ex.error)
            if e.unsent or self._replayable(request.method, body):
                return 502
            return failed(ex, e)
        except (UpstreamError, ConnectionError, BodyTooLarge) as e:
            if not client_gone(request) and not isinstance(e, BodyTooLarge):
                health.failed(f"upstream failed: {e}")
            return failed(ex, e)

    def _replayable(self, method: str, body: Body) -> bool:
        """May a request that upstream may have acted on go to another (`retry_idempotent`)?"""
        return self.site.retry_idempotent and method in IDEMPOTENT_METHODS and not body.used


def _sticky(ex: Exchange) -> str:
    """The `cookie` policy's cookie, as the client sent it ("" if not)."""
    cookies = ex.request.headers.get("Cookie", "")
    at = cookies.find(STICKY_COOKIE + "=")
    if at < 0 or (at and cookies[at - 1] not in " ;"):
        return ""
    value = cookies[at + len(STICKY_COOKIE) + 1 :]
    return value.split(";", 1)[0].strip()


def _set_sticky(ex: Exchange, reply: Reply, url: str) -> None:
    """Keep the browser on the upstream that answered (unless its cookie says so already)."""
    if reply.status >= 500:
        return  # an error: not a reason to stay
    value = sticky_value(url)
    if _sticky(ex) != value:
        secure = "; Secure" if ex.request.secure else ""
        reply.headers.add("Set-Cookie", f"{STICKY_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax{secure}")
