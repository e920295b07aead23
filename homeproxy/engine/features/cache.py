"""cache: the shared HTTP cache (RFC 9111), in memory, one for every site that turns it on.

`SharedCache` holds the entries: a byte-bounded LRU across all sites, with a
per-site byte limit (`[[sites]] cache.max_bytes`) and a per-entry limit
(`cache.max_entry_bytes`; larger responses stream through uncached). Entries
are counted with their headers and a fixed overhead, not just their bodies.
All cache work happens on the engine's loop; a lock makes `resize()`,
`set_site_limit()` and `purge()` safe from the thread that applies a config.

`make_cache(site, ctx)` is the middleware. It keys responses by site, scheme,
host and request target (HEAD uses GET's entry), with one variant per set of
values of the request headers that the response's `Vary` names, and:

- stores what a shared cache may store (RFC 9111 section 3): responses to GET,
  final statuses other than 206 and 304, with explicit freshness (`s-maxage`,
  `max-age`, `Expires`) or a validator and a heuristically cacheable status;
  never `no-store`, unqualified `private`, `Vary: *`, responses carrying
  Set-Cookie (unless `cache.cookies`; the cookie itself is never stored), or
  answers to requests that send credentials upstream (Authorization, or the
  identity headers of forward auth) unless `public`, `s-maxage` or
  `must-revalidate` allow it (section 3.5);
- computes freshness (section 4.2.1, `s-maxage` first) and age (section 4.2.3:
  apparent age, corrected Age value, resident time; never negative), sends
  `Age` on every answer from an entry, and never changes the stored `Date`;
- revalidates with If-None-Match / If-Modified-Since (section 4.3.1) when an
  entry is stale, when the response said `no-cache`, or when the request says
  `no-cache`, `max-age` or `min-fresh` that the entry does not meet; a 304
  refreshes the stored headers (sections 3.2 and 4.3.4), never Content-Length;
- answers a client's own If-None-Match / If-Modified-Since from a usable entry
  with a 304 carrying ETag, Cache-Control, Date, Expires, Vary and
  Content-Location (RFC 9110 section 15.4.5);
- collapses concurrent fetches of one key into one upstream request; waiters
  that cannot use its result (not storable, failed) fetch for themselves;
- serves a stale entry when the upstream errs (500, 502, 503, 504, including
  homeproxy's own 502/504 for an unreachable or slow upstream) within
  `stale-if-error` (response or request, RFC 5861) or the site's
  `stale_on_error`, but never when `must-revalidate`, `proxy-revalidate`,
  `s-maxage` or `no-cache` forbid stale answers;
- invalidates the URL, and same-host Location / Content-Location, after a
  non-error answer to an unsafe method (section 4.4);
- passes through uncached (BYPASS): other methods, Range, If-Match,
  If-Unmodified-Since, If-Range, upgrades, GETs with a body, and requests with
  `Cache-Control: no-store`; `only-if-cached` gets a 504 when nothing usable
  is stored.

Heuristic freshness (section 4.2.2) is the site's `default_ttl` and nothing
else: a response with a validator but no explicit lifetime, and a status that
is heuristically cacheable (or `public`), is fresh for `default_ttl` seconds;
with the default 0 it is stored and revalidated on every use. homeproxy does
not invent lifetimes from Last-Modified (the common "10%" rule), so a changed
file behind a site shows at once unless the owner opted in.

Bodies are never decompressed: the compression feature sits inside the cache,
so a compressed answer is a variant under `Vary: Accept-Encoding`. A streamed
body is teed into the entry chunk by chunk and committed only when the stream
ended cleanly with the declared length; an error, a client hang-up or an
oversized body discards it, so no half entry is ever stored.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urljoin, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from homeproxy.config.model import CacheSettings, Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply

HIT = "HIT"
"""Answered from the cache without asking the upstream."""
MISS = "MISS"
"""Nothing usable stored: the upstream answered (and the answer may have been stored)."""
REVALIDATED = "REVALIDATED"
"""A stored response was confirmed by the upstream (304) and answered from the cache."""
STALE = "STALE"
"""The upstream failed and a stale stored response was served instead."""
BYPASS = "BYPASS"
"""The request is not one a cache may answer (method, Range, no-store, ...); passed through."""

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

#: RFC 9111 section 1.2.2: delta-seconds beyond what we represent are 2^31.
MAX_DELTA = 2**31
#: Statuses a cache may give a heuristic lifetime (RFC 9110 section 15.1).
HEURISTIC_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
#: Final statuses homeproxy understands (for `must-understand`, RFC 9111 section 5.2.2.3).
UNDERSTOOD_STATUS = frozenset(
    {200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 500, 501, 502, 503, 504}
)
#: Upstream answers that count as errors for stale-if-error (RFC 5861 section 4).
ERROR_STATUS = frozenset({500, 502, 503, 504})
#: Methods that change nothing (RFC 9110 section 9.2.1); the others invalidate.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "SEARCH", "REPORT"})
#: A response whose Vary names more request headers than this is not stored.
MAX_VARY_FIELDS = 32
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

#: Request headers that make a GET something a cache must not answer or store.
_BYPASS_REQUEST = ("Range", "If-Match", "If-Unmodified-Since", "If-Range", "Upgrade")
#: Never stored (RFC 9111 section 3.1: proxy-specific fields; Age is recomputed; cookies are
#: per client). Hop-by-hop fields are gone already (the forwarder drops them).
_NOT_STORED = frozenset(
    {"age", "proxy-authenticate", "proxy-authentication-info", "proxy-authorization", "set-cookie", "set-cookie2"}
)
#: Never updated from a 304 (RFC 9111 section 3.2): they describe the stored body.
_NOT_UPDATED = frozenset({"content-length", "content-encoding", "content-range", "transfer-encoding", "age"})
#: What a 304 from the cache carries (RFC 9110 section 15.4.5).
_NOT_MODIFIED_FIELDS = ("Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Vary")

Key = tuple[str, str, str, str]
"""(site, scheme, host, request target): the primary cache key."""
Variant = tuple[str | None, ...]
"""The normalised values of the Vary-nominated request headers (None: absent)."""
Slot = tuple[Key, Variant]


# --- parsing ----------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(r"[0-9]+")


class Directives:
    """Cache-Control directives of one message, lower-cased, over all its header lines.

    Parsed as RFC 9111 section 5.2 says: `token [ "=" ( token / quoted-string ) ]`,
    comma separated; a directive inside a quoted string is no directive; an element that
    breaks the grammar (`max-age =1`, `max-age= 1`) makes that directive invalid.
    """

    __slots__ = ("bad", "values")

    def __init__(self, lines: Iterable[str] = ()) -> None:
        self.values: dict[str, list[str | None]] = {}
        self.bad: set[str] = set()
        for line in lines:
            self._parse(line)

    def _parse(self, s: str) -> None:
        i, n = 0, len(s)
        while i < n:
            while i < n and s[i] in " \t,":
                i += 1
            if i >= n:
                return
            m = _TOKEN.match(s, i)
            if m is None:
                i = _next_element(s, i)
                continue
            name = m.group().lower()
            i = m.end()
            value: str | None = None
            bad = False
            if i < n and s[i] == "=":
                i += 1
                if i < n and s[i] == '"':
                    value, i = _quoted(s, i)
                    bad = value is None
                else:
                    m = _TOKEN.match(s, i)
                    if m is None:
                        bad = True
                    else:
                        value, i = m.group(), m.end()
            while i < n and s[i] in " \t":
                i += 1
            if i < n and s[i] != ",":
                bad = True
                i = _next_element(s, i)
            if bad:
                self.bad.add(name)
            else:
                self.values.setdefault(name, []).append(value)

    def __contains__(self, name: str) -> bool:
        return name in self.values or name in self.bad

    def seconds(self, name: str) -> int | None:
        """A delta-seconds directive: None if absent, -1 if invalid or given twice with different values."""
        if name in self.bad:
            return -1
        values = self.values.get(name)
        if not values:
            return None
        if len(set(values)) > 1:  # conflicting duplicates: the conservative reading (RFC 9111 4.2.1)
            return -1
        return delta_seconds(values[0])

    def fields(self, name: str) -> frozenset[str] | None:
        """For `private` and `no-cache`: None if absent or unqualified, else the named header fields.

        An invalid qualified form counts as the unqualified one (the stricter reading).
        """
        values = self.values.get(name)
        if name in self.bad or (values is not None and None in values):
            return None
        if not values:
            return None
        names = {f.strip().lower() for v in values if v is not None for f in v.split(",")}
        names.discard("")
        return frozenset(names)

    def unqualified(self, name: str) -> bool:
        """The directive is present without field names (or malformed, which counts the same)."""
        if name in self.bad:
            return True
        values = self.values.get(name)
        return values is not None and (None in values or not any(v and v.strip() for v in values))


def _quoted(s: str, i: int) -> tuple[str | None, int]:
    """The quoted-string starting at s[i] (a quote): its content and the index after it."""
    out: list[str] = []
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n:
            out.append(s[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return None, n


def _next_element(s: str, i: int) -> int:
    """The index of the next comma outside a quoted string (or the end)."""
    n = len(s)
    while i < n and s[i] != ",":
        if s[i] == '"':
            _, i = _quoted(s, i)
        else:
            i += 1
    return i


def delta_seconds(value: str | None) -> int:
    """RFC 9111 section 1.2.2 delta-seconds, capped at 2^31; -1 when it is not one."""
    if value is None or not _DIGITS.fullmatch(value):
        return -1
    if len(value) > 10:  # also keeps int() away from absurdly long digit strings
        return MAX_DELTA
    return min(int(value), MAX_DELTA)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = {
    m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))
}
_MON = "(" + "|".join(_MONTHS) + ")"
_IMF = re.compile(r"(" + "|".join(_DAYS) + r"), (\d\d) " + _MON + r" (\d{4}) (\d\d):(\d\d):(\d\d) gmt", re.I)
_RFC850 = re.compile(r"(" + "|".join(_LONG_DAYS) + r"), (\d\d)-" + _MON + r"-(\d\d) (\d\d):(\d\d):(\d\d) gmt", re.I)
_ASCTIME = re.compile(r"(" + "|".join(_DAYS) + r") " + _MON + r" ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})", re.I)


def parse_http_date(value: str | None, now: float | None = None) -> float | None:
    """An HTTP-date (RFC 9110 section 5.6.7) as epoch seconds; None if it is not one.

    The three formats are accepted exactly (names in any case); anything else (`UTC`,
    a two-digit year in the IMF form, missing comma, extra spaces, `0`) is invalid.
    """
    if value is None:
        return None
    value = value.strip()
    if len(value) > 40:
        return None
    if m := _IMF.fullmatch(value):
        _, day, mon, year, hh, mm, ss = m.groups()
        parts = (int(year), _MONTHS[mon.lower()], int(day), int(hh), int(mm), int(ss))
    elif m := _RFC850.fullmatch(value):
        _, day, mon, yy, hh, mm, ss = m.groups()
        # RFC 9110: a two-digit year more than 50 years ahead is the most recent past one.
        this_year = _year(now)
        year = this_year - this_year % 100 + int(yy)
        if year > this_year + 50:
            year -= 100
        parts = (year, _MONTHS[mon.lower()], int(day), int(hh), int(mm), int(ss))
    elif m := _ASCTIME.fullmatch(value):
        _, mon, day, hh, mm, ss, year = m.groups()
        parts = (int(year), _MONTHS[mon.lower()], int(day.strip()), int(hh), int(mm), int(ss))
    else:
        return None
    year, month, day_n, hour, minute, second = parts
    if not (1 <= day_n <= calendar.monthrange(year, month)[1] and hour < 24 and minute < 60 and second < 61):
        return None
    return float(calendar.timegm((year, month, day_n, hour, minute, min(second, 59), 0, 0, 0)))


def _year(now: float | None) -> int:
    return (time.gmtime(now) if now is not None else time.gmtime()).tm_year


def http_date(t: float) -> str:
    """Epoch seconds as an IMF-fixdate."""
    return formatdate(t, usegmt=True)


def vary_fields(headers: Headers) -> tuple[str, ...] | None:
    """The request headers a response varies on, lower-cased, sorted; None for `Vary: *`."""
    names: set[str] = set()
    for line in headers.getall("Vary", ()):
        for name in line.split(","):
            name = name.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def variant_of(fields: tuple[str, ...], headers: Headers) -> Variant:
    """The normalised values of `fields` in request `headers`: all lines of a field joined,
    whitespace around list members removed (so `1,2`, ` 1, 2 ` and two lines match)."""
    out: list[str | None] = []
    for name in fields:
        lines = headers.getall(name, ())
        if not lines:
            out.append(None)
        else:
            out.append(",".join(m.strip() for line in lines for m in line.split(",")))
    return tuple(out)


def age_value(headers: Headers) -> int:
    """The Age header: the first member of the first line; ignored (0) if invalid (RFC 9111 5.1)."""
    value = headers.get("Age")
    if value is None:
        return 0
    seconds = delta_seconds(value.split(",", 1)[0].strip())
    return max(seconds, 0)


def _opaque(tag: str) -> str:
    """An entity-tag for weak comparison: no W/ flag, no quotes (lenient with odd upstreams)."""
    tag = tag.strip()
    if tag[:2] in ("W/", "w/"):
        tag = tag[2:]
    if len(tag) >= 2 and tag[0] == '"' and tag[-1] == '"':
        tag = tag[1:-1]
    return tag


def _etag_list(value: str) -> list[str]:
    tags: list[str] = []
    i, n = 0, len(value)
    while i < n and len(tags) < 64:
        j = _next_element(value, i)
        tag = value[i:j].strip()
        if tag:
            tags.append(tag)
        i = j + 1
    return tags


def etag_matches(stored: str, if_none_match: Iterable[str]) -> bool:
    """If-None-Match against a stored ETag, by weak comparison (RFC 9110 section 13.1.2)."""
    mine = _opaque(stored)
    for line in if_none_match:
        for tag in _etag_list(line):
            if tag == "*" or tag == stored or _opaque(tag) == mine:
                return True
    return False


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


def freshness_lifetime(cc: Directives, headers: Headers, date: float, status: int, default_ttl: float) -> int | float:
    """RFC 9111 section 4.2.1 for a shared cache: s-maxage, max-age, Expires - Date, then the
    site's default TTL as the only heuristic. Invalid or conflicting values mean stale (0)."""
    for name in ("s-maxage", "max-age"):
        seconds = cc.seconds(name)
        if seconds is not None:
            return max(seconds, 0)
    expires = headers.getall("Expires", ())
    if expires:
        if len(set(expires)) > 1:
            return 0
        when = parse_http_date(expires[0], date)
        if when is None:  # RFC 9111 section 5.3: an invalid date (e.g. "0") is in the past
            return 0
        return min(max(when - date, 0.0), float(MAX_DELTA))
    heuristic = status in HEURISTIC_STATUS or "public" in cc
    if default_ttl > 0 and heuristic and ("ETag" in headers or "Last-Modified" in headers):
        return min(default_ttl, float(MAX_DELTA))
    return 0


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
        # (epoch, site, host or None for any, target or None for all): what was invalidated when.
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
        how many were dropped."""
        site, scheme, host, target = key
        with self._lock:
            self._epoch += 1
            self._invalidations.append((self._epoch, site, host, target))
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
                    if e.key[3] == target and (host is None or e.key[2] == host)
                ]
            for entry in victims:
                self._drop(entry)
            return len(victims)

    def _invalidated(self, key: Key, since: int) -> bool:
        if since >= self._epoch:
            return False
        if not self._invalidations or self._invalidations[0][0] > since + 1:
            return True  # history lost: assume the worst
        return any(
            epoch > since and site == key[0] and (host is None or host == key[2]) and (target in (None, key[3]))
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


def _split_url(url: str) -> tuple[str | None, str]:
    """(host or None, request target) of a purge argument."""
    if url.startswith("/"):
        return None, url
    parts = urlsplit(url if "://" in url else "http://" + url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return (parts.hostname or "").lower() or None, target


# --- the tee ----------------------------------------------------------------------------


class _Tee:
    """Passes a streamed body through while copying it; `commit` gets the whole body only
    if the stream ended cleanly with the expected length, otherwise `abandon` runs."""

    __slots__ = ("_abandon", "_chunks", "_commit", "_expected", "_limit", "_size", "_source")

    def __init__(
        self,
        source: AsyncIterator[bytes],
        *,
        limit: int,
        expected: int | None,
        commit: Callable[[bytes], None],
        abandon: Callable[[], None],
    ) -> None:
        self._source = source
        self._limit = limit
        self._expected = expected
        self._commit: Callable[[bytes], None] | None = commit
        self._abandon = abandon
        self._chunks: list[bytes] | None = []
        self._size = 0

    def __aiter__(self) -> _Tee:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await anext(self._source)
        except StopAsyncIteration:
            self._finish(clean=True)
            raise
        except BaseException:
            self._finish(clean=False)
            raise
        if self._chunks is not None:
            self._size += len(chunk)
            if self._size > self._limit:
                self._finish(clean=False)  # too big after all: stream on, store nothing
            else:
                self._chunks.append(chunk)
        return chunk

    async def aclose(self) -> None:
        self._finish(clean=False)
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    def _finish(self, *, clean: bool) -> None:
        commit, self._commit = self._commit, None
        if commit is None:
            return
        chunks, self._chunks = self._chunks, None
        if clean and chunks is not None and (self._expected is None or self._expected == self._size):
            commit(b"".join(chunks))
        else:
            self._abandon()


# --- the middleware ---------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    """What the cache reads from one request's Cache-Control (or Pragma)."""

    no_cache: bool = False
    max_age: int | None = None
    min_fresh: int | None = None
    max_stale: int | None = None
    """-1: any staleness (`max-stale` without a value)."""
    only_if_cached: bool = False
    stale_if_error: int = -1


_PLAIN = _Request()
"""The directives of a request that has neither Cache-Control nor Pragma (shared, never changed)."""


def _request_directives(headers: Headers) -> _Request | None:
    """The request's cache directives; None if it says `no-store` (bypass)."""
    if "Cache-Control" not in headers and "Pragma" not in headers:
        return _PLAIN
    lines = headers.getall("Cache-Control", ())
    if not lines:
        # RFC 7234 section 5.4: HTTP/1.0's `Pragma: no-cache` when there is no Cache-Control.
        pragma = headers.getall("Pragma", ())
        no_cache = any(t.strip().lower() == "no-cache" for line in pragma for t in line.split(","))
        return _Request(no_cache=no_cache)
    cc = Directives(lines)
    if "no-store" in cc:
        return None
    req = _Request(no_cache="no-cache" in cc, only_if_cached="only-if-cached" in cc)
    if "max-age" in cc:
        req.max_age = max(cc.seconds("max-age") or 0, 0)  # invalid: the strictest, 0
    if "min-fresh" in cc:
        seconds = cc.seconds("min-fresh")
        req.min_fresh = MAX_DELTA if seconds is None or seconds < 0 else seconds
    if "max-stale" in cc and "max-stale" not in cc.bad:
        values = cc.values["max-stale"]
        if values == [None] * len(values):
            req.max_stale = -1
        else:
            seconds = cc.seconds("max-stale")
            req.max_stale = seconds if seconds is not None and seconds >= 0 else None
    if "stale-if-error" in cc:
        req.stale_if_error = cc.seconds("stale-if-error") or -1
    return req


def _target(ex: Exchange) -> str:
    return ex.request.path_qs


def _scheme(ex: Exchange) -> str:
    proto = ex.headers.get("X-Forwarded-Proto") if ex.trusted_peer else None
    if proto:
        return proto.split(",", 1)[0].strip().lower() or ex.request.scheme
    return ex.request.scheme


def _snapshot(headers: Headers) -> Headers:
    """Request headers as they are now (inner middlewares may edit a private copy in place)."""
    return CIMultiDict(headers) if isinstance(headers, CIMultiDict) else headers


async def _dispose(reply: Reply) -> None:
    """Release a reply the cache will not send (its body, its upstream connection)."""
    body = reply.body
    if isinstance(body, bytes):
        reply.done(True)
        return
    with contextlib.suppress(Exception):
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    reply.done(False)


def make_cache(site: Site, ctx: FeatureContext) -> Middleware:
    """Serve and store `site`'s responses through the engine's shared cache."""
    store = ctx.cache
    if store is None:
        raise RuntimeError("the engine makes the shared cache before building a caching site's chain")
    settings: CacheSettings = site.cache
    name = site.name
    header = ctx.cache_header
    clock = ctx.clock
    site_limit = settings.max_bytes
    entry_limit = min(settings.max_entry_bytes, settings.max_bytes)
    default_ttl = settings.default_ttl
    store_cookies = settings.cookies
    stale_on_error = settings.stale_on_error
    # Forward auth hands the upstream who the user is (Remote-User & co.): an answer made for
    # that identity is as personal as one made for Authorization (RFC 9111 section 3.5).
    credentials = ("Authorization", *(site.auth.forward_headers if site.auth.mode == "forward" else ()))
    # A waiter never waits longer than the leader's own fetch may take to answer.
    wait_limit = site.connect_timeout + site.read_timeout
    store.set_site_limit(name, site_limit)

    def label(reply: Reply, ex: Exchange, status: str) -> Reply:
        ex.cache = status
        if header and not reply.sent:
            reply.headers[header] = status
        return reply

    async def cache(ex: Exchange, nxt: Handler) -> Reply:
        request = ex.request
        method = request.method
        if method != "GET" and method != "HEAD":
            return await other_method(ex, nxt)
        headers = ex.headers
        for name_ in _BYPASS_REQUEST:
            if name_ in headers:
                return label(await nxt(ex), ex, BYPASS)
        if "Upgrade" in request.headers or (method == "GET" and request.body_exists):
            return label(await nxt(ex), ex, BYPASS)
        req = _request_directives(headers)
        if req is None:  # request no-store
            return label(await nxt(ex), ex, BYPASS)
        key: Key = (name, _scheme(ex), ex.host, _target(ex))
        return await serve(ex, nxt, key, req, collapse=True)

    async def serve(ex: Exchange, nxt: Handler, key: Key, req: _Request, *, collapse: bool) -> Reply:
        headers = ex.headers
        entry = store.find(key, headers)
        now = clock()
        if entry is not None and usable(entry, req, now):
            return label(from_entry(ex, entry, now), ex, HIT)
        if req.only_if_cached:
            # RFC 9111 section 5.2.1.7: nothing usable stored means a 504, not a fetch.
            return label(error_reply(504, ex.request), ex, MISS)
        conditional = "If-None-Match" in headers or "If-Modified-Since" in headers
        revalidating = entry is not None and entry.validators
        can_lead = (ex.request.method == "GET" and not conditional) or revalidating
        if collapse:
            fields = entry.fields if entry is not None else store.fields(key)
            slot: Slot = (key, variant_of(fields, headers) if fields else ())
            if not store.solo(slot, now):
                flight = store.flight(slot)
                if flight is not None:
                    store.waiting += 1
                    try:
                        await asyncio.wait({flight}, timeout=wait_limit)
                    finally:
                        store.waiting -= 1
                    return await serve(ex, nxt, key, req, collapse=False)
                if can_lead:
                    fut = store.take_off(slot)
                    handed = False

                    def landed(shared: bool) -> None:
                        if shared:
                            store.unmark_solo(slot)
                        else:
                            store.mark_solo(slot, clock())
                        store.land(slot, fut)

                    try:
                        reply, handed = await fetch(ex, nxt, key, req, entry, landed)
                        return reply
                    finally:
                        if not handed:
                            landed(False)
        reply, _ = await fetch(ex, nxt, key, req, entry, None)
        return reply

    def usable(entry: Entry, req: _Request, now: float) -> bool:
        """May `entry` answer this request without asking the upstream (RFC 9111 section 4.2)?"""
        if entry.no_cache or req.no_cache:
            return False
        age = entry.current_age(now)
        if req.max_age is not None and age > req.max_age:
            return False
        left = entry.lifetime - age
        if req.min_fresh is not None and left < req.min_fresh:
            return False
        if left > 0:
            return True
        # Stale: only with the client's max-stale, and never against must-revalidate & co.
        if req.max_stale is None or entry.no_stale:
            return False
        return req.max_stale < 0 or -left <= req.max_stale

    def stale_ok(entry: Entry, req: _Request, now: float) -> bool:
        """May `entry` stand in for an upstream error (RFC 5861 stale-if-error, `stale_on_error`)?"""
        if entry.no_stale:
            return False
        staleness = entry.current_age(now) - entry.lifetime
        allowance = max(entry.stale_if_error, req.stale_if_error, stale_on_error if stale_on_error > 0 else -1)
        return allowance >= 0 and staleness <= allowance

    async def fetch(
        ex: Exchange,
        nxt: Handler,
        key: Key,
        req: _Request,
        entry: Entry | None,
        landed: Callable[[bool], None] | None,
    ) -> tuple[Reply, bool]:
        """Ask the upstream (conditionally if `entry` has validators) and store what may be.
        Returns the reply and whether `landed` was handed on (to a streaming tee)."""
        request_headers = _snapshot(ex.headers)
        since = store.epoch
        revalidate = entry is not None and entry.validators
        if entry is not None and revalidate:
            out = ex.edit_headers()
            # Our validators replace the client's; its own condition is evaluated on our answer.
            out.popall("If-None-Match", None)
            out.popall("If-Modified-Since", None)
            if entry.etag is not None:
                out["If-None-Match"] = entry.etag if entry.etag[-1:] == '"' else f'"{entry.etag}"'
            if entry.last_modified_raw is not None and entry.last_modified is not None:
                out["If-Modified-Since"] = entry.last_modified_raw
        request_time = clock()
        reply = await nxt(ex)
        response_time = clock()
        if reply.sent:
            return label(reply, ex, BYPASS), False
        if entry is not None and revalidate and reply.status == 304:
            if _validates(entry, reply.headers):
                merged = freshen(entry, reply.headers, request_time, response_time)
                await _dispose(reply)
                if landed is not None:
                    landed(True)
                answer = from_entry(ex, entry, clock(), client_request=request_headers)
                # The 304's own Set-Cookie etc. go to this client, not into the entry.
                for name_, value in merged:
                    answer.headers.add(name_, value)
                return label(answer, ex, REVALIDATED), False
            # A 304 for some other representation (RFC 9111 4.3.4): ask again, unconditionally.
            await _dispose(reply)
            store.remove(entry)
            out = ex.edit_headers()
            out.popall("If-None-Match", None)
            out.popall("If-Modified-Since", None)
            entry = None
            request_time = clock()
            reply = await nxt(ex)
            response_time = clock()
        if entry is not None and reply.status in ERROR_STATUS and stale_ok(entry, req, response_time):
            await _dispose(reply)
            return label(from_entry(ex, entry, clock(), client_request=request_headers), ex, STALE), False
        if ex.request.method != "GET":
            return label(reply, ex, MISS), False
        new = storable(ex, key, reply, request_headers, request_time, response_time)
        body = reply.body
        expected = _content_length(reply.headers) if not isinstance(body, bytes) else None
        if new is None or (expected is not None and expected > entry_limit):
            if entry is not None and reply.status != 304 and reply.status not in ERROR_STATUS:
                store.remove(entry)  # outdated by an answer we may not keep
            return label(reply, ex, MISS), False
        label(reply, ex, MISS)

        def commit(data: bytes) -> None:
            assert new is not None
            if new.status != 204:
                new.headers["Content-Length"] = str(len(data))
            new.body = data
            new.size = entry_size(new.headers, data, key, new.variant)
            kept = store.put(new, site_limit=site_limit, since=since)
            if landed is not None:
                # Waiters can use it only if it needs no validation for a plain request.
                landed(kept and new.lifetime > 0 and not new.no_cache)

        if isinstance(body, bytes):
            commit(body)
            return reply, False

        def abandon() -> None:
            if landed is not None:
                landed(False)

        reply.body = _Tee(body, limit=entry_limit, expected=expected, commit=commit, abandon=abandon)
        return reply, landed is not None

    def storable(
        ex: Exchange,
        key: Key,
        reply: Reply,
        request_headers: Headers,
        request_time: float,
        response_time: float,
    ) -> Entry | None:
        """The entry to store for `reply` (headers copied now), or None if a shared cache may not."""
        status = reply.status
        if status < 200 or status in (206, 304):
            return None
        h = reply.headers
        cc = Directives(h.getall("Cache-Control", ()))
        if "must-understand" in cc:
            if status not in UNDERSTOOD_STATUS:
                return None
        elif "no-store" in cc:
            return None
        if cc.unqualified("private"):
            return None
        # RFC 9111 section 3.5: the upstream saw credentials; only an explicit yes shares the answer.
        if any(c in request_headers for c in credentials) and not (
            "public" in cc or "s-maxage" in cc or "must-revalidate" in cc
        ):
            return None
        if not store_cookies and ("Set-Cookie" in h or "Set-Cookie2" in h):
            return None
        fields = vary_fields(h)
        if fields is None or len(fields) > MAX_VARY_FIELDS:
            return None
        explicit = "s-maxage" in cc or "max-age" in cc or "Expires" in h
        validator = "ETag" in h or "Last-Modified" in h
        if not explicit and not (validator and (status in HEURISTIC_STATUS or "public" in cc)):
            return None
        if isinstance(reply.body, bytes):
            if len(reply.body) > entry_limit:
                return None
            declared = _content_length(h)
            if declared is not None and declared != len(reply.body):
                return None  # an upstream that lies about its length is not worth keeping
        stored = _stored_headers(h, cc, header)
        entry = Entry(
            key=key,
            variant=variant_of(fields, request_headers) if fields else (),
            fields=fields,
            status=status,
            reason=reply.reason,
            headers=stored,
            body=b"",
            request_time=request_time,
            response_time=response_time,
            age=age_value(h),
            default_ttl=default_ttl,
        )
        entry.derive()
        # Never reusable without a full fetch: kept only if it may stand in for an error.
        refetch_only = not entry.validators and (entry.lifetime <= 0 or entry.no_cache)
        if refetch_only and (entry.no_stale or (entry.stale_if_error < 0 and stale_on_error <= 0)):
            return None
        return entry

    def freshen(
        entry: Entry, update: CIMultiDict[str], request_time: float, response_time: float
    ) -> list[tuple[str, str]]:
        """Update `entry` from a 304 (RFC 9111 section 3.2); returns the fields for this client
        only (Set-Cookie and friends that are never stored)."""
        stored = entry.headers
        for_client: list[tuple[str, str]] = []
        incoming: dict[str, list[tuple[str, str]]] = {}
        for k, v in update.items():
            incoming.setdefault(k.lower(), []).append((k, v))
        for lower, pairs in incoming.items():
            if lower in _NOT_UPDATED or (header and lower == header.lower()):
                continue
            if lower in _NOT_STORED:
                for_client.extend(pairs)
                continue
            if lower == "etag" and entry.etag is not None and entry.etag[:2] in ("W/", "w/"):
                continue  # our variant's weak tag (e.g. compressed) stays weak
            stored.popall(pairs[0][0], None)
            for k, v in pairs:
                stored.add(k, v)
        cc = Directives(stored.getall("Cache-Control", ()))
        for f in _dropped_fields(cc):
            stored.popall(f, None)
        entry.request_time = request_time
        entry.response_time = response_time
        entry.age = age_value(update)
        if "Date" not in update:
            stored["Date"] = http_date(response_time)
        entry.derive()
        store.resized(entry)
        return for_client

    def from_entry(ex: Exchange, entry: Entry, now: float, *, client_request: Headers | None = None) -> Reply:
        """A reply made from `entry`: the stored response with its current Age, or a 304
        if the client's own conditional matches (RFC 9111 section 4.3.2)."""
        h = client_request if client_request is not None else ex.headers
        age = str(int(entry.current_age(now)))
        if 200 <= entry.status < 300 and _not_modified(entry, h):
            out: CIMultiDict[str] = CIMultiDict()
            for field_name in _NOT_MODIFIED_FIELDS:
                for value in entry.headers.getall(field_name, ()):
                    out.add(field_name, value)
            if entry.etag is None and entry.last_modified_raw is not None:
                out["Last-Modified"] = entry.last_modified_raw
            out["Age"] = age
            return Reply(304, out, b"")
        out = entry.headers.copy()
        out["Age"] = age
        return Reply(entry.status, out, entry.body, reason=entry.reason)

    async def other_method(ex: Exchange, nxt: Handler) -> Reply:
        method = ex.request.method
        reply = await nxt(ex)
        if method not in SAFE_METHODS and 200 <= reply.status < 400 and not reply.sent:
            # RFC 9111 section 4.4: the target and same-host Location/Content-Location go.
            scheme = _scheme(ex)
            target = _target(ex)
            store.invalidate((name, scheme, ex.host, target))
            base = f"{scheme}://{ex.host}{target}"
            for field_name in ("Location", "Content-Location"):
                value = reply.headers.get(field_name)
                if not value:
                    continue
                try:
                    parts = urlsplit(urljoin(base, value.strip()))
                    host = (parts.hostname or "").lower()
                except ValueError:
                    continue
                if host == ex.host:
                    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
                    store.invalidate((name, parts.scheme or scheme, host, path))
        return label(reply, ex, BYPASS)

    return cache


def _validates(entry: Entry, update: CIMultiDict[str]) -> bool:
    """Whether a 304 is about `entry` (RFC 9111 section 4.3.4, comparing tags weakly)."""
    etag = update.get("ETag")
    if etag is not None and etag.strip():
        return entry.etag is not None and _opaque(etag) == _opaque(entry.etag)
    modified = update.get("Last-Modified")
    if modified is not None and entry.last_modified_raw is not None:
        return parse_http_date(modified) == entry.last_modified
    return True


def _not_modified(entry: Entry, request: Headers) -> bool:
    """The client's If-None-Match (or, without one, If-Modified-Since) holds for `entry`."""
    inm = request.getall("If-None-Match", ())
    if inm:
        return entry.etag is not None and etag_matches(entry.etag, inm)
    ims = request.get("If-Modified-Since")
    if ims is None:
        return False
    since = parse_http_date(ims)
    if since is None:
        return False
    # RFC 9111 section 4.3.2: without Last-Modified, the stored Date stands in.
    modified = entry.last_modified if entry.last_modified is not None else entry.date
    return modified <= since


def _content_length(headers: Headers) -> int | None:
    value = headers.get("Content-Length", "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def _dropped_fields(cc: Directives) -> frozenset[str]:
    """Fields a shared cache must not store or reuse unvalidated: `private="..."` and
    `no-cache="..."` (RFC 9111 sections 5.2.2.4 and 5.2.2.7)."""
    out: set[str] = set()
    for directive in ("private", "no-cache"):
        named = cc.fields(directive)
        if named:
            out |= named
    return frozenset(out)


def _stored_headers(headers: CIMultiDict[str], cc: Directives, cache_header: str) -> CIMultiDict[str]:
    """The header fields kept in an entry."""
    drop = _NOT_STORED | _dropped_fields(cc)
    ours = cache_header.lower()
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop and k.lower() != ours)


__all__ = [
    "BYPASS",
    "HIT",
    "MISS",
    "REVALIDATED",
    "STALE",
    "Directives",
    "Entry",
    "SharedCache",
    "make_cache",
    "parse_http_date",
]
