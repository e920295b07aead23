"""`MetricsServer`: the admin listener that serves `/metrics`, apart from the proxy.

Its own aiohttp `web.Application` on its own asyncio loop in its own thread,
so a scrape never queues behind proxied requests and never shares the proxy's
listeners. The exposition is `prometheus_client`'s (the text format, or
OpenMetrics when the scraper asks for it). `apply(listen)` is blocking and
thread-safe: it binds, re-binds when the address changes, or closes. A bind
failure is logged and kept in `error`; it never raises, and the next `apply`
tries again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from homeproxy.config.model import split_host_port

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Upper bound for binding or closing the listener (a blocked loop must not hang a config apply).
STEP_TIMEOUT = 10.0


if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry


class MetricsServer:
    """Serves a registry at `/metrics` on one address, bound and re-bound by `apply`."""

    def __init__(self, registry: Callable[[], CollectorRegistry]) -> None:
        self._registry = registry
        """Gives the registry to serve; called only once a listener is asked for."""
        self.listen = ""
        """The address asked for ("" when off)."""
        self.error = ""
        """Why the listener is not up although `listen` asks for it ("" when it is, or when off)."""
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._host = ""

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) as bound (port 0 resolved), or None while nothing listens."""
        site = self._site
        return None if site is None else (self._host, site.port)

    def apply(self, listen: str) -> None:
        """Listen on `listen` ("host:port"; "" closes). Unchanged and up: nothing happens."""
        with self._lock:
            if listen == self.listen and not self.error:
                return
            self._close()
            self.listen, self.error = listen, ""
            if not listen:
                return
            try:
                host, port = split_host_port(listen)
                self._call(self._open(host, port))
            except (OSError, ValueError, TimeoutError) as e:
                self.error = f"metrics: cannot listen on {listen}: {_reason(e)}"
                log.error("%s; the proxy goes on without metrics", self.error)
                self._close()
                return
            log.info("metrics at http://%s/metrics", _shown(self.address))

    def stop(self) -> None:
        """Close the listener and end the thread."""
        with self._lock:
            self._close()
            self.listen, self.error = "", ""
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=STEP_TIMEOUT)
            if not thread.is_alive():
                loop.close()

    # --- the loop thread ---------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="homeproxy-metrics", daemon=True)
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(STEP_TIMEOUT)

    async def _open(self, host: str, port: int) -> None:
        from aiohttp import web  # only when a metrics listener is configured (a few MB of memory)

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._site, self._host = site, host

    def _close(self) -> None:
        runner, self._runner, self._site = self._runner, None, None
        if runner is not None:
            try:
                self._call(runner.cleanup())
            except Exception:  # closing must not stop a config apply or a shutdown
                log.exception("closing the metrics listener failed")

    async def _metrics(self, request: web.Request) -> web.Response:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # Collecting is quick and in memory (counters, and the engine's certificate list); this
        # loop serves nothing else, so doing it here delays no proxied request.
        body = encoder(self._registry())
        from aiohttp import web

        return web.Response(body=body, headers={"Content-Type": content_type})


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError):
        if e.errno == errno.EADDRINUSE:
            return "the port is in use (another program, or homeproxy itself); pick another [metrics] listen"
        if e.errno == errno.EACCES:
            return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        if e.errno == errno.EADDRNOTAVAIL:
            return "that address is not on this machine"
        return e.strerror or str(e)
    if isinstance(e, TimeoutError):
        return "binding took too long"
    return str(e)


def _shown(address: tuple[str, int] | None) -> str:
    if address is None:
        return "?"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
