"""`Runtime`: the one factory that wires a running homeproxy together.

config file -> `ConfigStore` -> `Engine.apply()`; engine -> `EventBus` ->
`Stats`, `AccessLog`, and with `[metrics] listen` set `RequestMetrics` (each
drained by its own `Consumer` thread) and, when the TUI runs, its own
subscription. The metrics' admin listener (`MetricsServer`) is bound here too.
`homeproxy serve`, the TUI and the tests all build this same object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from homeproxy import paths
from homeproxy.config import Config, ConfigStore
from homeproxy.control import ControlServer, socket_path
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.engine import (
    AccessLog,
    Consumer,
    Engine,
    EventBus,
    ProblemReported,
    RequestCompleted,
    Stats,
    Subscription,
)
from homeproxy.metrics.server import MetricsServer

if TYPE_CHECKING:
    from homeproxy.discovery.runner import Discovery
    from homeproxy.metrics.collector import EngineLoad, RequestMetrics

log = logging.getLogger(__name__)


class Runtime:
    """Store, engine, bus and subscribers, started and stopped together."""

    def __init__(
        self,
        config_path: Path | str | None = None,
        *,
        log_dir: Path | None = None,
        data_dir: Path | None = None,
        log_level: str | None = None,
        clock: Callable[[], float] = time.time,
        discovery: bool = True,
    ) -> None:
        self.config_path = Path(config_path) if config_path else paths.default_config_path()
        self.clock = clock
        self.log_level = log_level
        """A level that overrides `logging.level` (from `serve --log-level`)."""
        self.bus = EventBus()
        self.stats = Stats(clock=clock)
        self.store = ConfigStore(self.config_path, applier=self._apply)
        self.log_dir = log_dir or paths.log_dir()
        self.data_dir = data_dir or paths.data_dir()
        self.access_log = AccessLog(self.log_dir / "access.log", report=self._report_access_log)
        self.engine: Engine | None = None
        self._consumers: list[Consumer[RequestCompleted]] = []
        self._access_consumer: Consumer[RequestCompleted] | None = None
        self.metrics: RequestMetrics | None = None
        """Prometheus metrics of the requests: made, and counted, once `[metrics] listen` is set."""
        self.metrics_server = MetricsServer(lambda: self._request_metrics().registry)
        """The admin listener serving `/metrics` (`metrics_server.address`, `.error`)."""
        self._metrics_consumer: Consumer[RequestCompleted] | None = None
        self.directory = ServiceDirectory()
        """Services seen on the LAN; the engine resolves `mdns://` upstreams here."""
        self.discovery_enabled = discovery
        """False keeps zeroconf off entirely (tests that do not test discovery)."""
        self.discovery: Discovery | None = None
        """mDNS browsing and announcing, when `[discovery]` asks for either (or a site uses mdns://)."""
        self.control = ControlServer(lambda: self.engine, socket_path(self.data_dir))
        """The socket `homeproxy certs` talks to."""

    def start(self, *, watch: bool = True) -> Config:
        """Load (or create) the config, start the engine and the subscribers.

        Raises `ConfigInvalid` if the file is invalid (nothing is started then).
        Listeners that fail to bind are reported in `engine.listen_errors`.
        """
        config = self.store.load()
        raise_open_file_limit()
        stats = Consumer(self.bus, "stats", self.stats.record)
        self._access_consumer = Consumer(self.bus, "access-log", self.access_log.write, interval=0.25)
        self._consumers = [stats, self._access_consumer]
        self._configure_log(config)
        for c in self._consumers:
            c.start()
        self._count_metrics(config)  # subscribed before the engine starts: no request goes uncounted
        self.engine = Engine(
            config, self.bus, clock=self.clock, data_dir=self.data_dir, resolver=self.directory.resolve
        )
        self.engine.start()
        self.metrics_server.apply(config.metrics.listen)
        if self.discovery_enabled:
            from homeproxy.discovery.runner import Discovery

            self.discovery = Discovery(self.bus, self.directory, clock=self.clock)
            try:
                self.discovery.start(config, port=self._http_port())
            except Exception as e:  # mDNS is a convenience: the proxy serves without it
                log.warning("mDNS discovery could not start: %s", e)
        try:
            self.control.start()
        except OSError as e:  # a convenience too: the proxy serves without it
            log.warning("no control socket at %s: %s", self.control.path, e)
        if watch:
            self.store.watch()
        return config

    def _report_access_log(self, message: str, failing: bool) -> None:
        """The access log cannot be written (or can again): one event for the TUI."""
        self.bus.publish(ProblemReported(time.time(), "access log", message, solved=not failing))

    def _apply(self, config: Config) -> None:
        """The store's applier: the engine first (it may refuse), then the log settings."""
        if self.engine is not None:
            self.engine.apply(config)
        self._configure_log(config)
        self._count_metrics(config)
        self.metrics_server.apply(config.metrics.listen)  # a bind failure is logged, never refuses the config
        if self.discovery is not None:
            self.discovery.apply(config, port=self._http_port())

    def _http_port(self) -> int:
        """The plain-HTTP port the engine really listens on (for announcements; port 0 resolved)."""
        if self.engine is not None:
            for _host, port in self.engine.addresses:
                return port
        return self.store.config.server.http_port

    def _configure_log(self, config: Config) -> None:
        lg = config.logging
        logging.getLogger("homeproxy").setLevel((self.log_level or lg.level).upper())
        path = Path(lg.access_log_path).expanduser() if lg.access_log_path else self.log_dir / "access.log"
        self.access_log.configure(
            enabled=lg.access_log,
            max_bytes=lg.max_bytes,
            keep_files=lg.keep_files,
            path=path,
            format=lg.access_log_format,
            skip_sites=frozenset(s.name for s in config.sites if not s.access_log),
        )
        self._log_headers(lg.access_log and lg.access_log_format == "combined")

    def _log_headers(self, on: bool) -> None:
        """The combined format writes Referer and User-Agent, which the engine copies into an event
        only while a subscription asks for headers (`EventBus.wants_headers`, a copy per request).
        `Consumer` takes no such flag, so set it on the access log's subscription and let the bus
        recount: `unsubscribe` of a subscription it does not hold changes nothing but the count."""
        consumer = self._access_consumer
        if consumer is not None and consumer.subscription.headers != on:
            consumer.subscription.headers = on
            self.bus.unsubscribe(Subscription("recount", 1))

    def _load(self) -> EngineLoad | None:
        from homeproxy.metrics.collector import EngineLoad

        engine = self.engine
        if engine is None or not engine.running:
            return None
        return EngineLoad(engine.client_connections, engine.in_flight, engine.upstream_load(), engine.upstream_health())

    def _request_metrics(self) -> RequestMetrics:
        """The metrics, made the first time they are needed (prometheus-client is imported then)."""
        if self.metrics is None:
            from homeproxy.metrics.collector import RequestMetrics

            self.metrics = RequestMetrics()
            self.metrics.watch_certificates(lambda: self.engine.certificates() if self.engine is not None else ())
            self.metrics.watch_load(self._load)
        return self.metrics

    def _count_metrics(self, config: Config) -> None:
        """Subscribe the metrics to the bus while `[metrics] listen` is set (else the bus has one
        subscriber fewer to feed), and give them the config's site names."""
        if not config.metrics.listen and self.metrics is None:
            return
        metrics = self._request_metrics()
        metrics.configure(config)
        if config.metrics.listen and self._metrics_consumer is None:
            self._metrics_consumer = Consumer(self.bus, "metrics", metrics.record)
            metrics.watch_subscription(self._metrics_consumer.subscription)
            self._metrics_consumer.start()
        elif not config.metrics.listen and self._metrics_consumer is not None:
            self._metrics_consumer.stop()
            self.bus.unsubscribe(self._metrics_consumer.subscription)
            metrics.watch_subscription(None)
            self._metrics_consumer = None

    def stop(self) -> None:
        """Stop watching, drain and stop the engine, flush the subscribers."""
        self.store.stop_watching()
        self.control.stop()
        if self.discovery is not None:
            self.discovery.stop()  # goodbyes first, while the names still point at a live proxy
        if self.engine is not None:
            self.engine.stop()
        self.metrics_server.stop()
        for c in self._consumers:
            c.stop()
        if self._metrics_consumer is not None:
            self._metrics_consumer.stop()
        self.access_log.close()


#: The most open files homeproxy asks for (each proxied request holds two).
FILE_LIMIT = 65536


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one (at most `FILE_LIMIT`), as nginx's
    `worker_rlimit_nofile` does: Debian's default soft limit of 1024 would cap homeproxy at
    about 500 proxied connections. Returns the soft limit in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux or macOS
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILE_LIMIT if hard == resource.RLIM_INFINITY else min(hard, FILE_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, e)
            return soft
        log.info("open-file limit raised from %d to %d", soft, wanted)
        return wanted
    return soft
