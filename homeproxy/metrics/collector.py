"""`RequestMetrics`: the Prometheus metrics, fed by the event bus, in a registry of their own.

A bus subscriber like `Stats` and `AccessLog`: a `Consumer` thread hands it
batches of `RequestCompleted`, so the proxy's loop pays nothing for metrics but
the bus's append. Certificate expiry and the subscription's own drops are read
at scrape time by custom collectors. Cardinality is bounded by the config: the
only labels are `site` (a configured site's name, or `OTHER` for requests that
matched none) and `status_class` (`1xx` ... `5xx`); never a path or a client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase

from homeproxy.certs.status import CertStatus
from homeproxy.config.model import Config
from homeproxy.engine import RequestCompleted, Subscription
from homeproxy.engine.h1.pool import OriginLoad
from homeproxy.engine.health_types import UpstreamStatus

OTHER = "other"
"""The `site` label of requests that matched no configured site (unknown hosts, malformed requests)."""

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

#: Latency buckets in seconds: a LAN proxy answers in about a millisecond, a slow app in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: `RequestCompleted.cache` -> the counter it adds to (REVALIDATED and BYPASS are not counted).
CACHE_RESULTS = {"HIT": "hits", "MISS": "misses", "STALE": "stale"}

WEBSOCKET = 101
"""A WebSocket session's event: its duration is the session's length, not a latency."""


@dataclass(slots=True)
class _Series:
    """One site's children of every labelled metric, looked up once instead of per event."""

    site: str
    requests: dict[str, Counter]
    latency: Histogram
    bytes_in: Counter
    bytes_out: Counter
    cache: dict[str, Counter]


class RequestMetrics:
    """Counters and histograms of finished requests; `record` is the bus handler."""

    def __init__(self) -> None:
        # No `*_created` series: in the text format they double the series for a timestamp that
        # Prometheus does not use (a process-wide switch; homeproxy's registry is the only one served).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        """Its own registry (not the process-global one): only homeproxy's metrics are served."""
        r = self.registry
        self.requests = Counter(
            "homeproxy_requests", "Finished requests, by site and status class.", ["site", "status_class"], registry=r
        )
        self.latency = Histogram(
            "homeproxy_request_duration_seconds",
            "Seconds from a request's arrival to its last byte (WebSocket sessions left out).",
            ["site"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_in = Counter(
            "homeproxy_request_body_bytes", "Request body bytes read from clients.", ["site"], registry=r
        )
        self.bytes_out = Counter(
            "homeproxy_response_body_bytes", "Response body bytes written to clients.", ["site"], registry=r
        )
        self.cache = {
            "hits": Counter("homeproxy_cache_hits", "Responses served from the cache.", ["site"], registry=r),
            "misses": Counter(
                "homeproxy_cache_misses", "Cacheable requests the cache could not answer.", ["site"], registry=r
            ),
            "stale": Counter(
                "homeproxy_cache_stale", "Stale cache entries served because the upstream failed.", ["site"], registry=r
            ),
        }
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._sites: frozenset[str] = frozenset()
        self._cert_collector = _CertificateCollector()
        r.register(self._cert_collector)
        self._drops = _DropsCollector()
        r.register(self._drops)
        self._load = _LoadCollector()
        r.register(self._load)

    def watch_load(self, source: Callable[[], EngineLoad | None]) -> None:
        """Read connections and in-flight requests from `source` at each scrape."""
        self._load.source = source

    def watch_certificates(self, source: Callable[[], Iterable[CertStatus]]) -> None:
        """Read TLS certificates from `source` (the engine's `certificates()`) at each scrape."""
        self._cert_collector.source = source

    def watch_subscription(self, subscription: Subscription | None) -> None:
        """Report the events the metrics' own bus subscription dropped (it fell behind)."""
        self._drops.subscription = subscription

    def configure(self, config: Config) -> None:
        """Take the config's site names: their series start at zero; removed sites' series go."""
        names = frozenset(s.name for s in config.sites)
        cached = {s.name for s in config.sites if s.cache.enabled}
        with self._lock:
            for gone in set(self._series) - names - {OTHER}:
                self._drop(gone)
            self._sites = names
            for name in (*sorted(names), OTHER):
                self._series_of(name, cache=name in cached)

    def record(self, batch: Sequence[RequestCompleted]) -> None:
        """Count a batch of finished requests (the `Consumer` handler)."""
        with self._lock:
            sites = self._sites
            for ev in batch:
                series = self._series_of(ev.site if ev.site in sites else OTHER)
                status_class = f"{ev.status // 100}xx" if 100 <= ev.status <= 599 else "none"
                counter = series.requests.get(status_class)
                if counter is None:
                    counter = series.requests[status_class] = self.requests.labels(series.site, status_class)
                counter.inc()
                if ev.status != WEBSOCKET:
                    series.latency.observe(ev.duration)
                if ev.bytes_in:
                    series.bytes_in.inc(ev.bytes_in)
                if ev.bytes_out:
                    series.bytes_out.inc(ev.bytes_out)
                result = CACHE_RESULTS.get(ev.cache)
                if result is not None:
                    self._cache_child(series, result).inc()

    def _series_of(self, site: str, *, cache: bool = False) -> _Series:
        series = self._series.get(site)
        if series is None:
            series = self._series[site] = _Series(
                site=site,
                requests={c: self.requests.labels(site, c) for c in STATUS_CLASSES},
                latency=self.latency.labels(site),
                bytes_in=self.bytes_in.labels(site),
                bytes_out=self.bytes_out.labels(site),
                cache={},
            )
        if cache:
            for result in self.cache:
                self._cache_child(series, result)
        return series

    def _cache_child(self, series: _Series, result: str) -> Counter:
        child = series.cache.get(result)
        if child is None:
            child = series.cache[result] = self.cache[result].labels(series.site)
        return child

    def _drop(self, site: str) -> None:
        series = self._series.pop(site)
        for status_class in series.requests:
            self.requests.remove(site, status_class)
        metrics: list[MetricWrapperBase] = [self.latency, self.bytes_in, self.bytes_out, *self.cache.values()]
        for metric in metrics:
            metric.remove(site)


class _CertificateCollector:
    """`homeproxy_tls_certificate_expiry_timestamp_seconds{site}`, read from the engine at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[CertStatus]] = tuple

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for status in self.source():
            if status.not_after is not None:
                family.add_metric([status.site], status.not_after.timestamp())
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "homeproxy_tls_certificate_expiry_timestamp_seconds",
            "When the certificate a TLS site serves expires (its not_after), in seconds since the epoch.",
            labels=["site"],
        )


class _LoadCollector:
    """Open client connections, requests in flight, and each upstream's in-flight requests and idle
    pooled connections, read from the engine at scrape time (the upstream label is a configured
    upstream's address, so bounded by the config)."""

    def __init__(self) -> None:
        self.source: Callable[[], EngineLoad | None] = lambda: None

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.source())

    @staticmethod
    def _families(load: EngineLoad | None) -> list[Metric]:
        connections = GaugeMetricFamily("homeproxy_client_connections", "Client connections open now.")
        in_flight = GaugeMetricFamily("homeproxy_requests_in_flight", "Requests being answered now.")
        upstream = GaugeMetricFamily(
            "homeproxy_upstream_requests_in_flight", "Requests an upstream is answering now.", labels=["upstream"]
        )
        idle = GaugeMetricFamily(
            "homeproxy_upstream_idle_connections", "Pooled keep-alive connections to an upstream.", labels=["upstream"]
        )
        up = GaugeMetricFamily(
            "homeproxy_upstream_up",
            "1 while a site's upstream takes traffic, 0 while its health checks or failed requests keep it out.",
            labels=["site", "upstream"],
        )
        if load is not None:
            connections.add_metric([], load.connections)
            in_flight.add_metric([], load.in_flight)
            for origin in load.upstreams:
                upstream.add_metric([origin.upstream], origin.in_flight)
                idle.add_metric([origin.upstream], origin.idle)
            for status in load.health:
                up.add_metric([status.site, status.upstream], 1.0 if status.up else 0.0)
        return [connections, in_flight, upstream, idle, up]


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What `_LoadCollector` reads from the engine."""

    connections: int
    in_flight: int
    upstreams: tuple[OriginLoad, ...]
    health: tuple[UpstreamStatus, ...] = ()


class _DropsCollector:
    """`homeproxy_metrics_events_dropped_total`: events the metrics never saw, so counts are low by that much."""

    def __init__(self) -> None:
        self.subscription: Subscription | None = None

    def describe(self) -> Iterable[Metric]:
        return [self._family(0)]

    def collect(self) -> Iterable[Metric]:
        sub = self.subscription
        return [self._family(sub.dropped if sub is not None else 0)]

    @staticmethod
    def _family(value: int) -> CounterMetricFamily:
        return CounterMetricFamily(
            "homeproxy_metrics_events_dropped",
            "Request events dropped before the metrics counted them (the metrics thread fell behind).",
            value=value,
        )
