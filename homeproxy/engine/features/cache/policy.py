"""RFC 9111 rules: Cache-Control and HTTP-date parsing, freshness and age, stored fields, request directives."""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate

from multidict import CIMultiDict

from homeproxy.engine.features.cache.keys import Headers

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
#: Never stored (RFC 9111 section 3.1: proxy-specific fields; Age is recomputed; cookies are
#: per client). Hop-by-hop fields are gone already (the forwarder drops them).
_NOT_STORED = frozenset(
    {"age", "proxy-authenticate", "proxy-authentication-info", "proxy-authorization", "set-cookie", "set-cookie2"}
)


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


def age_value(headers: Headers) -> int:
    """The Age header: the first member of the first line; ignored (0) if invalid (RFC 9111 5.1)."""
    value = headers.get("Age")
    if value is None:
        return 0
    seconds = delta_seconds(value.split(",", 1)[0].strip())
    return max(seconds, 0)


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


# --- request directives -----------------------------------------------------------------


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
