"""`RequestHandler`: each request the server parsed, from its Host to its reply and its `RequestCompleted`."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from homeproxy.certs.manager import CertManager
from homeproxy.engine.events import EventBus, RequestCompleted
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.hop import Network, client_ip, forwarded_for, in_networks
from homeproxy.engine.pages import error_reply, own_page
from homeproxy.engine.paths import is_plain, normalize_path
from homeproxy.engine.reply import CLIENT_CLOSED, Reply, client_gone, send
from homeproxy.engine.request import Request
from homeproxy.engine.routing import CompiledSite, RoutingTable, normalize_host
from homeproxy.engine.tls_paths import WELL_KNOWN, https_redirect, misdirected, well_known

log = logging.getLogger(__name__)


class RequestHandler:
    """The engine's entry point for requests (`HttpServer`'s handler and error hook)."""

    def __init__(
        self,
        bus: EventBus,
        clock: Callable[[], float],
        certs: CertManager,
        table: RoutingTable,
        trusted: tuple[Network, ...],
        https_port: Callable[[], int],
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.certs = certs
        self.table = table
        """The routing table in force; the engine swaps it on the loop, a request reads it once."""
        self.trusted = trusted
        """The `[server] trusted_proxies` networks in force (swapped with `table`)."""
        self.https_port = https_port
        """The port a redirect to HTTPS names: the bound one, else the configured one."""

    def exchange_for(self, request: Request, host: str) -> Exchange:
        """The `Exchange` of `request`: its client (from a trusted proxy's X-Forwarded-For) and host."""
        peer = request.remote
        trusted = bool(self.trusted) and in_networks(peer, self.trusted)
        client = client_ip(peer, forwarded_for(request.headers), self.trusted) if trusted else peer
        return Exchange(request, client, host, trusted)

    async def handle(self, request: Request) -> None:
        """Answer `request` and publish its `RequestCompleted`; an error never shows the client a trace."""
        started = time.monotonic()
        # For an absolute-form target the server has set Host to its authority (RFC 9112 section 3.2.2).
        ex = self.exchange_for(request, normalize_host(request.headers.get("Host", "")))
        await self.complete(ex, started, self._answer(ex))

    async def _answer(self, ex: Exchange) -> tuple[Reply, CompiledSite | None]:
        """The reply for `ex` (and its site, for the site's own error pages)."""
        table = self.table
        request = ex.request
        target = request.raw_path
        host = ex.host
        secure = request.secure
        special = None
        if not secure and target.startswith(WELL_KNOWN):  # ACME challenges, the root download
            special = well_known(target, request, self.certs.challenges, self.certs.root)
        compiled = table.lookup(host)
        if special is not None:
            return special, compiled
        if compiled is None:
            return error_reply(404, request), None
        if compiled.site.tls != secure and (secure or table.https_host(compiled, host)):
            ex.site = compiled.site.name
            # Over TLS: SNI named a TLS site, Host names one that is not served over TLS.
            if secure:
                return misdirected(request), compiled
            return https_redirect(request, table.https_host(compiled, host), self.https_port()), compiled
        ex.site = compiled.site.name
        path = request.path
        if not is_plain(path):  # rare: see paths.py
            normal = normalize_path(path)
            path = normal.path if normal is not None else ""
        if not path:  # a ".." above the root: no route may be guessed for it
            ex.error = "path climbs above the root"
            return error_reply(400, request, "The address asked for goes above the site's root."), compiled
        return await compiled.route_for(path).handler(ex), compiled

    async def complete(
        self, ex: Exchange, started: float, answer: Coroutine[Any, Any, tuple[Reply, CompiledSite | None]]
    ) -> None:
        """Await `answer`, send it (a site's own page for an error of homeproxy's) and publish the
        event; also where the express lane (`express.py`) hands over a request it cannot finish."""
        request = ex.request
        try:
            reply, compiled = await answer
            if reply.status >= 400 and compiled is not None and compiled.error_pages:
                reply = own_page(reply, compiled.error_pages)
            await send(ex, reply)
        except ConnectionError:
            if not client_gone(request):
                raise
            ex.error = "client went away"
            ex.status = ex.status or CLIENT_CLOSED
        except Exception as e:  # never a stack trace to the client
            log.exception("error handling %s %s", request.method, request.raw_path)
            ex.error = f"internal error: {type(e).__name__}"
            if not request.conn.response_started:
                with contextlib.suppress(ConnectionError):
                    await send(ex, error_reply(502, request))
            else:
                request.conn.abort()
        finally:
            self.publish(ex, started)

    def bad_request(self, peer: str, status: int, why: str) -> None:
        """A request homeproxy could not parse or would not take (a CONNECT: "refused"): one event saying why.
        Method and path are unknown: nothing of such a request is trusted."""
        self.bus.publish(
            RequestCompleted(
                time=self.clock(),
                client=peer,
                site="",
                host="",
                method="",
                path="",
                status=status,
                bytes_in=0,
                bytes_out=0,
                duration=0.0,
                upstream="",
                error=f"{'refused' if status == 405 else 'malformed'} request: {why}",
            )
        )

    def publish(self, ex: Exchange, started: float) -> None:
        """The `RequestCompleted` of an answered request."""
        duration = time.monotonic() - started
        request = ex.request
        wants_headers = self.bus.wants_headers
        sent = ex.response_headers
        self.bus.publish(
            RequestCompleted(
                time=self.clock() - duration,
                client=ex.client,
                site=ex.site,
                host=ex.host,
                method=request.method,
                path=request.raw_path,
                status=ex.status,
                bytes_in=ex.bytes_in,
                bytes_out=ex.bytes_out or 0,
                duration=duration,
                upstream=ex.upstream,
                cache=ex.cache,
                error=ex.error,
                # Copied only for a subscriber that shows them (the TUI), not on a headless hot path.
                request_headers=tuple(request.headers.items()) if wants_headers else (),
                response_headers=tuple(sent.items()) if sent is not None and wants_headers else (),
            )
        )
