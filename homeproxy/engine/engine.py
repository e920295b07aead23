"""`Engine`: the proxy, on its own event loop in its own thread.

`start()` binds the listeners, `apply(config)` swaps in a newly compiled
routing table (rebinding listeners only when the addresses or ports change),
`stop()` stops accepting, drains in-flight requests (bounded by
`server.drain_timeout`) and closes the upstream pool. All three are called
from any thread and block until the loop has done the work, so a caller (the
TUI, the headless server, the config store) never touches the loop itself.

The engine knows nothing of the TUI: it publishes one `RequestCompleted` per
request on the `EventBus` (`handling.py`), and that is all it tells anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from homeproxy import paths
from homeproxy.certs.manager import CertError, CertManager, Prepared
from homeproxy.certs.status import CertStatus, Renewal
from homeproxy.config.model import Config
from homeproxy.engine import express
from homeproxy.engine.compiler import compile_routes
from homeproxy.engine.events import EventBus
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.h1.pool import OriginLoad
from homeproxy.engine.h1.server import HttpServer
from homeproxy.engine.handling import RequestHandler
from homeproxy.engine.health_types import UpstreamStatus
from homeproxy.engine.hop import trusted_networks
from homeproxy.engine.listeners import BindError, Listener, listen_set, open_listeners
from homeproxy.engine.routing import RoutingTable
from homeproxy.engine.tls_paths import ROOT_URL_PATH
from homeproxy.engine.upstream import Resolver, UpstreamClient

log = logging.getLogger(__name__)
T = TypeVar("T")


class Engine:
    """The reverse proxy engine."""

    def __init__(
        self,
        config: Config,
        bus: EventBus | None = None,
        *,
        clock: Callable[[], float] = time.time,
        data_dir: Path | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.bus = bus or EventBus()
        self.resolver: Resolver = resolver or (lambda ref: None)
        """Where `mdns://` upstreams are now (discovery's directory); without one they answer 502."""
        self.clock = clock
        self._client = UpstreamClient(self.bus.publish, clock)
        self.features = FeatureContext(clock=clock, data_dir=data_dir or paths.data_dir())
        self.certs = CertManager(self.features.data_dir, clock=clock)
        """Every TLS site's certificate; its `contexts.listener` is the HTTPS listener's SSL context."""
        self._cert_task: asyncio.Task[None] | None = None
        self._config = config
        table, trusted = self._compile(config), trusted_networks(config.server)
        self._requests = RequestHandler(self.bus, clock, self.certs, table, trusted, lambda: self._https_port)
        """Each request's handling; it holds the routing table in force."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: HttpServer | None = None
        self._listeners: list[Listener] = []
        self.listen_errors: tuple[str, ...] = ()
        """Why listeners could not be opened (empty when all are up)."""
        self.tls_errors: tuple[str, ...] = ()
        """Certificates that could not be made at start (those sites get no HTTPS until fixed)."""
        self.started_at: float | None = None

    # --- public, thread-safe -------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The config in force."""
        return self._config

    root_url_path = ROOT_URL_PATH
    """Where plain HTTP serves the local CA's root (with `[tls] serve_root`)."""

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """(host, port) of every open plain-HTTP listener, ports as bound (port 0 resolved)."""
        return tuple((lst.host, lst.port) for lst in self._listeners if not lst.tls)

    @property
    def _https_port(self) -> int:
        """The port a redirect names: the bound one (port 0 resolved), else the configured one."""
        tls = [lst.port for lst in self._listeners if lst.tls]
        return tls[0] if tls else self._config.server.https_port

    @property
    def https_addresses(self) -> tuple[tuple[str, int], ...]:
        """(host, port) of every open HTTPS listener (none while no site has TLS on)."""
        return tuple((lst.host, lst.port) for lst in self._listeners if lst.tls)

    def certificates(self) -> tuple[CertStatus, ...]:
        """Every TLS site's certificate as the TUI shows it. Thread-safe."""
        return self.certs.statuses()

    def renew(self, site: str, follow: Renewal | None = None) -> None:
        """Renew `site`'s certificate now, in the background. Thread-safe; returns at once.
        `follow` hears the steps and the outcome; KeyError when no TLS site has that name."""
        self.certs.renew(site, follow)

    @property
    def in_flight(self) -> int:
        """Requests being handled now (WebSocket sessions included)."""
        return self._http.active if self._http is not None else 0

    @property
    def client_connections(self) -> int:
        """Client connections open now (idle keep-alive ones included)."""
        return len(self._http.connections) if self._http is not None else 0

    def upstream_health(self) -> tuple[UpstreamStatus, ...]:
        """Every enabled site's upstreams: up or not, why, the last check. Thread-safe."""
        return self._client.health.snapshot()

    def upstream_load(self) -> tuple[OriginLoad, ...]:
        """Each upstream's requests in flight and idle pooled connections. Thread-safe."""
        return self._client.pool.snapshot()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> None:
        """Start the loop thread and bind the listeners. Bind failures land in `listen_errors`."""
        if self._thread is not None:
            raise RuntimeError("engine already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, args=(ready,), name="homeproxy-engine", daemon=True)
        self._thread.start()
        ready.wait()
        prepared = self._prepare_at_start(self._config)
        self._call(self._start(prepared), timeout)
        self.started_at = self.clock()

    def apply(self, config: Config, timeout: float = 30.0) -> None:
        """Put `config` in force. Raises `BindError` if a new listener cannot open, `CertError` if a
        site's certificate cannot be loaded or issued; either way nothing changes."""
        prepared = self.certs.prepare(config)  # off the loop: may issue (CPU) or read files
        table = self._compile(config)  # compiled here, off the loop
        if self._loop is None:
            self._config = config
            self._requests.table, self._requests.trusted = table, trusted_networks(config.server)
            self.certs.commit(prepared)
            return
        self._call(self._apply(config, table, prepared), timeout)

    def purge(self, site: str, url: str | None = None) -> int:
        """Drop `site`'s cached responses, or only those of `url` (a path like `/app.js?v=2` for
        any of the site's hosts, or `http://host/path`); returns how many entries went."""
        cache = self.features.cache
        if cache is None:
            return 0
        if self._loop is None:
            return cache.purge(site, url)

        async def purge() -> int:
            return cache.purge(site, url)

        return self._call(purge(), 10.0)

    def stop(self) -> None:
        """Stop accepting, drain in-flight requests (bounded), close everything, end the thread."""
        if self._loop is None or self._thread is None:
            return
        try:
            self._call(self._stop(), self._config.server.drain_timeout + 15)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = None
            self._thread = None

    # --- the loop ------------------------------------------------------------------------

    def _run_loop(self, ready: threading.Event) -> None:
        loop = new_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _prepare_at_start(self, config: Config) -> Prepared:
        """At start a broken certificate must not stop the other sites: try without the failing ones."""
        try:
            self.tls_errors = ()
            return self.certs.prepare(config)
        except CertError as e:
            self.tls_errors = (str(e),)
            log.error("%s; those sites get no HTTPS until it is fixed", e)
        good = []
        for site in config.tls_sites:
            try:
                self.certs.prepare(dataclasses.replace(config, sites=(site,)))
                good.append(site)
            except CertError:
                pass
        kept = tuple(s for s in config.sites if not s.tls or s in good)
        return self.certs.prepare(dataclasses.replace(config, sites=kept))

    async def _start(self, prepared: Prepared) -> None:
        self.certs.commit(prepared)
        self._cert_task = asyncio.get_running_loop().create_task(self.certs.run(), name="homeproxy-certs")
        await self._client.open()
        self._client.health.commit()
        self._http = HttpServer(self._requests.handle, self._requests.bad_request, lambda: self._config.server)
        if express.ENABLED:
            self._http.express = express.ExpressLane(self._requests, self._http)
        self._http.start()
        try:
            await self._bind(self._config, initial=True)
        except BindError as e:
            log.error("%s", e)

    async def _apply(self, config: Config, table: RoutingTable, prepared: Prepared) -> None:
        if listen_set(config) != listen_set(self._config) or self.listen_errors:
            await self._bind(config)  # raises BindError with the old listeners intact
        self.certs.commit(prepared)
        self.tls_errors = ()
        # The swap: a request reads the table once when it arrives.
        self._config = config
        self._requests.table, self._requests.trusted = table, trusted_networks(config.server)
        self._client.health.commit()

    async def _bind(self, config: Config, *, initial: bool = False) -> None:
        """Open the listeners `config` asks for (HTTP, and HTTPS while a site has TLS on); on
        failure restore the old ones and raise `BindError`.

        At start (`initial`) there is nothing to restore: the listeners that did open stay
        open (the config is in force) and the others are reported in `listen_errors`.
        """
        old = self._listeners
        old_set = tuple((lst.host, lst.port, lst.tls) for lst in old)
        for lst in old:  # release the ports first: the new set usually reuses them
            lst.server.close()
        new, errors = await self._open(listen_set(config))
        if errors and not initial:
            for lst in new:
                lst.server.close()
            self._listeners, _ = await self._open(old_set)
            raise BindError("; ".join(errors))
        self._listeners = new
        self.listen_errors = tuple(errors)
        if errors:
            raise BindError("; ".join(errors))
        for lst in new:
            log.info("listening on %s://%s:%d", "https" if lst.tls else "http", lst.host, lst.port)

    async def _open(self, wanted: tuple[tuple[str, int, bool], ...]) -> tuple[list[Listener], list[str]]:
        assert self._http is not None
        return await open_listeners(self._http, wanted, lambda: self.certs.contexts.listener)

    def _compile(self, config: Config) -> RoutingTable:
        """`config`'s routing table (`compiler.py`), built with this engine's features and upstream client."""
        return compile_routes(config, self.features, self._client, self.resolver, self.clock)

    async def _stop(self) -> None:
        for lst in self._listeners:
            lst.server.close()
        self._listeners = []
        if self._http is not None:
            # Idle connections close now; requests in flight get the drain timeout, then are cut.
            await self._http.shutdown(self._config.server.drain_timeout)
            self._http = None
        if self._cert_task is not None:
            self._cert_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cert_task
            self._cert_task = None
        await self._client.close()
        # Features that opened loop-bound things (forward auth's client) leave a closer here.
        for close in list(self.features.state.get("on_stop", {}).values()):
            try:
                await close()
            except Exception:
                log.exception("error closing a feature's resources")


def new_loop() -> asyncio.AbstractEventLoop:
    """The engine's loop: uvloop where it is installed (Linux, macOS), unless HOMEPROXY_LOOP=asyncio."""
    if os.environ.get("HOMEPROXY_LOOP", "") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
