"""`Stats`: per-site counters, latency percentiles and per-second rates, and per upstream.

A bus subscriber (`Stats.record` takes a batch). Everything is bounded:
latencies are a window of the most recent requests per site, rates a ring of
the last `history` seconds. Each (site, upstream) pair that a request went to
keeps its own requests, errors and latency window (`upstreams()`), at most
`max_upstreams` pairs (the one seen longest ago goes first). Reads
(`snapshot()`, `upstreams()`) are safe from any thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from homeproxy.engine.events import RequestCompleted

TOTAL = "*"
"""The key of the all-sites totals in a snapshot."""
CACHE_STATUSES = ("HIT", "MISS", "REVALIDATED", "STALE", "BYPASS")
"""The cache statuses counted in `SiteStats.cache`, in order."""
_CACHE_INDEX = {name: i for i, name in enumerate(CACHE_STATUSES)}
#: Statuses whose body came out of the cache.
_FROM_CACHE = frozenset({"HIT", "REVALIDATED", "STALE"})


@dataclass(frozen=True, slots=True)
class SiteStats:
    """A point-in-time view of one site's numbers (or the totals)."""

    requests: int
    status: tuple[int, int, int, int, int]
    """Counts of 1xx, 2xx, 3xx, 4xx and 5xx responses."""
    bytes_in: int
    bytes_out: int
    p50: float
    p95: float
    p99: float
    """Latency percentiles in seconds over the recent window (0 when empty)."""
    rate: tuple[int, ...]
    """Requests per second, oldest first, one per second of history, ending with the last full second."""
    cache: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    """Requests by cache status: HIT, MISS, REVALIDATED, STALE and BYPASS (in `CACHE_STATUSES` order)."""
    cache_bytes: int = 0
    """Response body bytes answered from the cache (HIT, REVALIDATED and STALE)."""

    @property
    def cache_hits(self) -> int:
        return self.cache[0]

    @property
    def cache_misses(self) -> int:
        return self.cache[1]

    @property
    def cache_revalidated(self) -> int:
        return self.cache[2]

    @property
    def cache_stale(self) -> int:
        return self.cache[3]

    @property
    def cache_bypass(self) -> int:
        return self.cache[4]

    @property
    def hit_ratio(self) -> float:
        """Share of the requests the cache could answer that it answered from storage:
        (HIT + REVALIDATED + STALE) / (those + MISS); BYPASS is left out. 0 when there were none."""
        served = self.cache[0] + self.cache[2] + self.cache[3]
        looked_up = served + self.cache[1]
        return served / looked_up if looked_up else 0.0

    @property
    def errors(self) -> int:
        """5xx responses."""
        return self.status[4]

    @property
    def rps(self) -> float:
        """Average requests per second over the last 5 full seconds."""
        recent = self.rate[-5:]
        return sum(recent) / len(recent) if recent else 0.0


@dataclass(frozen=True, slots=True)
class UpstreamStats:
    """A point-in-time view of one upstream's numbers within one site."""

    requests: int
    """Requests the site sent to it (a retried request counts for the upstream that answered)."""
    errors: int
    """Those answered with a 5xx, or that failed (unreachable, timed out, reset)."""
    p50: float
    """Median latency in seconds over its recent window (0 when empty)."""
    share: float
    """Its part of the site's requests that went to an upstream, 0 to 1."""


class _UpstreamCounter:
    __slots__ = ("errors", "latencies", "requests")

    def __init__(self, window: int) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=window)

    def add(self, ev: RequestCompleted) -> None:
        self.requests += 1
        if ev.status >= 500 or ev.error:
            self.errors += 1
        self.latencies.append(ev.duration)

    def view(self, site_requests: int) -> UpstreamStats:
        lat = sorted(self.latencies)
        p50 = lat[len(lat) // 2] if lat else 0.0
        share = self.requests / site_requests if site_requests else 0.0
        return UpstreamStats(self.requests, self.errors, p50, share)


class _Counter:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "cache",
        "cache_bytes",
        "latencies",
        "requests",
        "slot_secs",
        "slots",
        "status",
    )

    def __init__(self, history: int, window: int) -> None:
        self.requests = 0
        self.status = [0, 0, 0, 0, 0]
        self.bytes_in = 0
        self.bytes_out = 0
        self.cache = [0, 0, 0, 0, 0]
        self.cache_bytes = 0
        self.latencies: deque[float] = deque(maxlen=window)
        # One slot more than is shown: the second in progress must not reuse the oldest shown one.
        self.slots = [0] * (history + 1)
        self.slot_secs = [-1] * (history + 1)

    def add(self, ev: RequestCompleted) -> None:
        self.requests += 1
        cls = ev.status // 100
        if 1 <= cls <= 5:
            self.status[cls - 1] += 1
        self.bytes_in += ev.bytes_in
        self.bytes_out += ev.bytes_out
        if ev.cache:
            i = _CACHE_INDEX.get(ev.cache)
            if i is not None:
                self.cache[i] += 1
            if ev.cache in _FROM_CACHE:
                self.cache_bytes += ev.bytes_out
        self.latencies.append(ev.duration)
        sec = int(ev.time + ev.duration)  # counted when it finished
        i = sec % len(self.slots)
        if self.slot_secs[i] != sec:
            self.slot_secs[i] = sec
            self.slots[i] = 0
        self.slots[i] += 1

    def view(self, now: float) -> SiteStats:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0.0

        n = len(self.slots)
        shown = n - 1
        last = int(now) - 1
        rate = tuple(self.slots[s % n] if self.slot_secs[s % n] == s else 0 for s in range(last - shown + 1, last + 1))
        return SiteStats(
            self.requests,
            (self.status[0], self.status[1], self.status[2], self.status[3], self.status[4]),
            self.bytes_in,
            self.bytes_out,
            pct(0.50),
            pct(0.95),
            pct(0.99),
            rate,
            (self.cache[0], self.cache[1], self.cache[2], self.cache[3], self.cache[4]),
            self.cache_bytes,
        )


class Stats:
    """Per-site and total request statistics fed by the event bus."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        history: int = 300,
        window: int = 4096,
        upstream_window: int = 1024,
        max_upstreams: int = 1024,
    ) -> None:
        self._clock = clock
        self._history = history
        self._window = window
        self._upstream_window = upstream_window
        self._max_upstreams = max_upstreams
        self._lock = threading.Lock()
        self._sites: dict[str, _Counter] = {}
        # Least recently used first: an upstream gone from the config (or an mDNS address that
        # moved) stops being fed and is the first to go when the table is full.
        self._upstreams: OrderedDict[tuple[str, str], _UpstreamCounter] = OrderedDict()
        self.started = clock()

    def record(self, batch: Sequence[RequestCompleted]) -> None:
        """Add a batch of finished requests."""
        with self._lock:
            total = self._counter(TOTAL)
            for ev in batch:
                total.add(ev)
                self._counter(ev.site).add(ev)
                if ev.upstream:
                    self._upstream_counter(ev.site, ev.upstream).add(ev)

    def _upstream_counter(self, site: str, upstream: str) -> _UpstreamCounter:
        key = (site, upstream)
        c = self._upstreams.get(key)
        if c is None:
            if len(self._upstreams) >= self._max_upstreams:
                self._upstreams.popitem(last=False)
            c = self._upstreams[key] = _UpstreamCounter(self._upstream_window)
        else:
            self._upstreams.move_to_end(key)
        return c

    def _counter(self, site: str) -> _Counter:
        c = self._sites.get(site)
        if c is None:
            c = self._sites[site] = _Counter(self._history, self._window)
        return c

    def snapshot(self) -> dict[str, SiteStats]:
        """Every site's numbers plus the totals under `TOTAL` ("" is unknown hosts)."""
        now = self._clock()
        with self._lock:
            views = {name: c.view(now) for name, c in self._sites.items()}
        if TOTAL not in views:
            views[TOTAL] = _Counter(self._history, 1).view(now)
        return views

    def upstreams(self, site: str | None = None) -> dict[tuple[str, str], UpstreamStats]:
        """Every (site, upstream URL) that requests went to, or only `site`'s; each upstream's
        `share` is of the requests its site sent to any upstream."""
        with self._lock:
            counters = [(k, c) for k, c in self._upstreams.items() if site is None or k[0] == site]
            per_site: dict[str, int] = {}
            for (name, _url), c in counters:
                per_site[name] = per_site.get(name, 0) + c.requests
            return {k: c.view(per_site[k[0]]) for k, c in counters}

    def site(self, name: str) -> SiteStats:
        """One site's numbers (zeros if it has seen no request)."""
        return self.snapshot().get(name) or _Counter(self._history, 1).view(self._clock())
