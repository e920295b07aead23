"""Stored responses (`Entry`) and `SharedCache`: bounded memory, LRU eviction, invalidation, purge, collapsing."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from multidict import CIMultiDict

from homeproxy.engine.features.cache.keys import Headers, Key, Slot, Variant, _split_url, hostname, variant_of
from homeproxy.engine.features.cache.policy import Directives, freshness_lifetime, http_date, parse_http_date

#: Variants kept per URL (the least recently used goes first), e.g. `Vary: User-Agent`.
MAX_VARIANTS = 32
#: Fixed bytes counted per entry on top of its body and header bytes (objects, keys).
ENTRY_OVERHEAD = 1024
#: Bytes counted per header line on top of its name and value.
HEADER_OVERHEAD = 96
#: How long a URL whose answer could not be shared is fetched without collapsing.
SOLO_SECONDS = 30.0
#: Bound on the remembered uncollapsible URLs and on the invalidation history.
MAX_SOLO = 4096
MAX_INVALIDATIONS = 512


# --- entries ----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Entry:
    """One stored response (one variant of one URL)."""

    key: Key
    variant: Variant
    fields: tuple[str, ...]
    status: int
    reason: str | None
    headers: CIMultiDict[str]
    body: bytes
    request_time: float
    response_time: float
    age: int
    """The Age value it arrived with."""
    default_ttl: float
    size: int = 0
    # Derived from the headers by `derive()`:
    lifetime: float = 0.0
    initial_age: float = 0.0
    etag: str | None = None
    last_modified: float | None = None
    last_modified_raw: str | None = None
    date: float = 0.0
    no_cache: bool = False
    no_stale: bool = False
    stale_if_error: int = -1

    def derive(self) -> None:
        """Recompute freshness, age and validators from the headers (after storing or a 304)."""
        h = self.headers
        cc = Directives(h.getall("Cache-Control", ()))
        date = parse_http_date(h.get("Date"), self.response_time)
        if date is None:
            # RFC 9110 section 6.6.1: a cache adds the Date it received the response at.
            date = self.response_time
            h["Date"] = http_date(date)
        self.date = date
        # RFC 9111 section 4.2.3.
        apparent_age = max(0.0, self.response_time - date)
        corrected_age = self.age + (self.response_time - self.request_time)
        self.initial_age = max(apparent_age, corrected_age)
        self.lifetime = float(freshness_lifetime(cc, h, date, self.status, self.default_ttl))
        etag = h.get("ETag")
        self.etag = etag.strip() if etag and etag.strip() else None
        self.last_modified_raw = h.get("Last-Modified")
        self.last_modified = parse_http_date(self.last_modified_raw, self.response_time)
        self.no_cache = cc.unqualified("no-cache")
        # RFC 9111 sections 5.2.2.2, 5.2.2.8, 5.2.2.10: no stale answers without validation.
        self.no_stale = "must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc or self.no_cache
        sie = cc.seconds("stale-if-error")
        self.stale_if_error = -1 if sie is None else sie

    def current_age(self, now: float) -> float:
        """RFC 9111 section 4.2.3: corrected initial age plus resident time, never negative."""
        return max(0.0, self.initial_age + (now - self.response_time))

    @property
    def validators(self) -> bool:
        return self.etag is not None or self.last_modified is not None


def entry_size(headers: CIMultiDict[str], body: bytes, key: Key, variant: Variant = ()) -> int:
    """The bytes an entry is counted for: body, headers, key (with the Vary-selected request
    header values, up to `MAX_VARY_FIELDS` of them) and a fixed overhead."""
    size = ENTRY_OVERHEAD + len(body) + sum(len(p) for p in key) + sum(len(v) + 64 for v in variant if v)
    for name, value in headers.items():
        size += len(name) + len(value) + HEADER_OVERHEAD
    return size


@dataclass(slots=True)
class _Resource:
    """The stored variants of one URL; they share the Vary field names of the latest response."""

    fields: tuple[str, ...]
    variants: OrderedDict[Variant, Entry]


# --- the store --------------------------------------------------------------------------


class SharedCache:
    """The in-memory store shared by every site: bounded by bytes, least recently used first out."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float]) -> None:
        self.max_bytes = max(0, max_bytes)
        self.clock = clock
        self._lock = threading.Lock()
        self._lru: OrderedDict[Slot, Entry] = OrderedDict()
        self._site_lru: dict[str, OrderedDict[Slot, Entry]] = {}
        self._site_bytes: dict[str, int] = {}
        self._site_limits: dict[str, int] = {}
        self._resources: dict[Key, _Resource] = {}
        self._bytes = 0
        self._flights: dict[Slot, asyncio.Future[None]] = {}
        self.waiting = 0
        """Requests waiting right now for another request's fetch of the same key."""
        self._solo: OrderedDict[Slot, float] = OrderedDict()
        self._epoch = 0
        # (epoch, site, host name or None for any, target or None for all): what was invalidated when.
        self._invalidations: deque[tuple[int, str, str | None, str | None]] = deque(maxlen=MAX_INVALIDATIONS)

    # --- sizes ---------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes held (as counted: bodies, headers and overhead)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._lru)

    def usage(self) -> dict[str, tuple[int, int]]:
        """Entries and bytes held per site."""
        with self._lock:
            return {site: (len(lru), self._site_bytes.get(site, 0)) for site, lru in self._site_lru.items() if lru}

    def resize(self, max_bytes: int) -> None:
        """Change the bound of the whole cache, evicting the least recently used to fit."""
        with self._lock:
            self.max_bytes = max(0, max_bytes)
            while self._bytes > self.max_bytes and self._lru:
                self._drop(next(iter(self._lru.values())))

    def set_site_limit(self, site: str, max_bytes: int) -> None:
        """Bound one site's share, evicting its least recently used entries to fit."""
        with self._lock:
            self._site_limits[site] = max(0, max_bytes)
            lru = self._site_lru.get(site)
            while lru and self._site_bytes.get(site, 0) > self._site_limits[site]:
                self._drop(next(iter(lru.values())))

    # --- lookup and storage --------------------------------------------------------------

    def fields(self, key: Key) -> tuple[str, ...]:
        """The Vary field names of the URL's stored variants (empty if none are stored)."""
        res = self._resources.get(key)
        return res.fields if res is not None else ()

    def find(self, key: Key, headers: Headers) -> Entry | None:
        """The stored variant of `key` that matches request `headers`, marked recently used."""
        res = self._resources.get(key)
        if res is None:
            return None
        variant = variant_of(res.fields, headers) if res.fields else ()
        with self._lock:
            entry = res.variants.get(variant)
            if entry is None:
                return None
            slot = (key, variant)
            self._lru.move_to_end(slot)
            self._site_lru[key[0]].move_to_end(slot)
            res.variants.move_to_end(variant)
        return entry

    @property
    def epoch(self) -> int:
        """Advances at every invalidation or purge (a fetch that began earlier checks it)."""
        return self._epoch

    def put(self, entry: Entry, *, site_limit: int, since: int) -> bool:
        """Store `entry` (replacing the same variant) unless it does not fit or its URL was
        invalidated since epoch `since`. Evicts least recently used entries to make room."""
        site = entry.key[0]
        with self._lock:
            self._site_limits[site] = site_limit
            if entry.size > site_limit or entry.size > self.max_bytes or self._invalidated(entry.key, since):
                return False
            res = self._resources.get(entry.key)
            if res is not None and res.fields != entry.fields:
                # The latest response's Vary wins: variants selected by other fields go.
                for other in list(res.variants.values()):
                    self._drop(other)
                res = None
            if res is None:
                res = self._resources[entry.key] = _Resource(entry.fields, OrderedDict())
            previous = res.variants.get(entry.variant)
            if previous is not None:
                self._drop(previous)
                res = self._resources.setdefault(entry.key, res)
            while len(res.variants) >= MAX_VARIANTS:
                self._drop(next(iter(res.variants.values())))
            slot = (entry.key, entry.variant)
            res.variants[entry.variant] = entry
            self._lru[slot] = entry
            self._site_lru.setdefault(site, OrderedDict())[slot] = entry
            self._site_bytes[site] = self._site_bytes.get(site, 0) + entry.size
            self._bytes += entry.size
            site_lru = self._site_lru[site]
            while self._site_bytes[site] > site_limit and site_lru:
                self._drop(next(iter(site_lru.values())))
            while self._bytes > self.max_bytes and self._lru:
                self._drop(next(iter(self._lru.values())))
            return slot in self._lru

    def resized(self, entry: Entry) -> None:
        """Account for `entry`'s new size after its headers changed (a 304 refresh)."""
        with self._lock:
            slot = (entry.key, entry.variant)
            if self._lru.get(slot) is not entry:
                return
            size = entry_size(entry.headers, entry.body, entry.key, entry.variant)
            site = entry.key[0]
            self._bytes += size - entry.size
            self._site_bytes[site] += size - entry.size
            entry.size = size

    def remove(self, entry: Entry) -> None:
        """Drop `entry` if it is still stored."""
        with self._lock:
            if self._lru.get((entry.key, entry.variant)) is entry:
                self._drop(entry)

    def _drop(self, entry: Entry) -> None:
        slot = (entry.key, entry.variant)
        if self._lru.pop(slot, None) is None:
            return
        site = entry.key[0]
        self._site_lru[site].pop(slot, None)
        self._site_bytes[site] -= entry.size
        self._bytes -= entry.size
        res = self._resources.get(entry.key)
        if res is not None:
            res.variants.pop(entry.variant, None)
            if not res.variants:
                del self._resources[entry.key]

    # --- invalidation and purge ------------------------------------------------------------

    def invalidate(self, key: Key) -> int:
        """Drop every variant of `key`, over http and https alike (RFC 9111 section 4.4);
        how many were dropped. A fetch of the same host name and target that is under way
        (any spelling of the host, `app.test:8443` too) is not stored."""
        site, scheme, host, target = key
        with self._lock:
            self._epoch += 1
            self._invalidations.append((self._epoch, site, hostname(host), target))
            dropped = 0
            for s in {scheme, "http", "https"}:
                res = self._resources.get((site, s, host, target))
                if res is not None:
                    entries = list(res.variants.values())
                    for entry in entries:
                        self._drop(entry)
                    dropped += len(entries)
            return dropped

    def purge(self, site: str, url: str | None = None) -> int:
        """Drop `site`'s entries, or only those of `url` (a path such as `/app.js?v=2`, which
        matches every host of the site, or a full `http://host/path`); how many were dropped."""
        with self._lock:
            self._epoch += 1
            lru = self._site_lru.get(site)
            if url is None:
                self._invalidations.append((self._epoch, site, None, None))
                victims = list(lru.values()) if lru else []
            else:
                host, target = _split_url(url)
                self._invalidations.append((self._epoch, site, host, target))
                victims = [
                    e
                    for e in (lru.values() if lru else ())
                    if e.key[3] == target and (host is None or hostname(e.key[2]) == host)
                ]
            for entry in victims:
                self._drop(entry)
            return len(victims)

    def _invalidated(self, key: Key, since: int) -> bool:
        if since >= self._epoch:
            return False
        if not self._invalidations or self._invalidations[0][0] > since + 1:
            return True  # history lost: assume the worst
        name = hostname(key[2])
        return any(
            epoch > since and site == key[0] and (host is None or host == name) and (target in (None, key[3]))
            for epoch, site, host, target in self._invalidations
        )

    # --- collapsing ----------------------------------------------------------------------

    def flight(self, slot: Slot) -> asyncio.Future[None] | None:
        """The fetch in progress for `slot`, if any."""
        fut = self._flights.get(slot)
        return fut if fut is not None and not fut.done() else None

    def take_off(self, slot: Slot) -> asyncio.Future[None]:
        """Register this request as the one fetching `slot`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flights[slot] = fut
        return fut

    def land(self, slot: Slot, fut: asyncio.Future[None]) -> None:
        """The fetch of `slot` is over (stored, not storable, or failed): wake the waiters."""
        if self._flights.get(slot) is fut:
            del self._flights[slot]
        if not fut.done():
            fut.set_result(None)

    def solo(self, slot: Slot, now: float) -> bool:
        """Whether `slot`'s recent answers could not be shared (fetch without collapsing)."""
        until = self._solo.get(slot)
        if until is None:
            return False
        if until < now:
            del self._solo[slot]
            return False
        return True

    def mark_solo(self, slot: Slot, now: float) -> None:
        self._solo[slot] = now + SOLO_SECONDS
        self._solo.move_to_end(slot)
        while len(self._solo) > MAX_SOLO:
            self._solo.popitem(last=False)

    def unmark_solo(self, slot: Slot) -> None:
        self._solo.pop(slot, None)
