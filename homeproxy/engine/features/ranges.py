"""ranges: the guard against abusive `Range` requests, in every site's chain (not an option).

homeproxy never builds a partial answer itself (the cache answers no ranges, compression
never touches a 206); it passes `Range` on and streams the upstream's 206. A multi-range
request can still make an upstream do work and send bytes out of all proportion to the
entity: thousands of ranges, or overlapping ones such as `bytes=0-,0-,0-` (each part the
whole entity again), the "Apache Killer" of CVE-2011-3192. RFC 9110 section 14.2 lets a
server ignore such a `Range` ("more than two overlapping ranges, or a set of many small
ranges that are not listed in ascending order ... indications of either a broken client
or a deliberate denial-of-service attack").

So, before the cache, a `bytes` Range (or the legacy `Request-Range`, which old Apache
still reads) is removed from the request, and the client gets the whole entity with a
200, as nginx (`max_ranges`) and Apache (`MaxRanges`) do, when it

- names more than `MAX_RANGES` ranges (any unit: the count alone is checked for others),
- has ranges that overlap, or a suffix range (`-500`) or an open one (`500-`) beside
  others (their extent depends on the entity's length, which homeproxy does not know),
- does not parse (RFC 9110 section 14.2: an invalid Range is ignored anyway), or comes
  in several header lines.

A single range passes as it is (its answer is never larger than the entity), as does a
multi-range request of at most `MAX_RANGES` closed, disjoint ranges in any order: its
multipart answer is at most the entity plus about 100 bytes of part headers per range.
The work per request is bounded: at most `2 * MAX_RANGES` list elements are looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.reply import Reply

#: The most ranges one request may ask for (Apache's `MaxRanges` default is 200).
MAX_RANGES = 100
#: Longer numbers (over 10**18 bytes) are beyond any entity: treated as malformed.
_MAX_DIGITS = 18
_HEADERS = ("Range", "Request-Range")


def _position(text: str) -> int | None:
    text = text.strip()
    if not text or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def acceptable(lines: Sequence[str]) -> bool:
    """Whether a request's Range header lines may go to the upstream as they are."""
    if len(lines) != 1:
        return False
    unit, eq, spec = lines[0].partition("=")
    if not eq:
        return False
    # Bounded work: never more than 2 * MAX_RANGES elements, empty ones included (RFC 9110
    # section 5.6.1 lets a list have empty elements; a flood of them is no list).
    parts = spec.split(",", 2 * MAX_RANGES)
    if len(parts) > 2 * MAX_RANGES:
        return False
    elements = [p.strip() for p in parts if p.strip()]
    if not elements or len(elements) > MAX_RANGES:
        return False
    if unit.strip().lower() != "bytes":
        return True  # another unit: the upstream's to judge, within the count
    if len(elements) == 1:
        return True  # one range answers at most the entity; the upstream checks its syntax
    spans: list[tuple[int, int]] = []
    for element in elements:
        first, dash, last = element.partition("-")
        start = _position(first)
        end = _position(last)
        if not dash or start is None or end is None or end < start:
            # Malformed, suffix (`-500`) or open (`500-`) beside other ranges: refused.
            return False
        spans.append((start, end))
    spans.sort()
    # Overlapping ranges would send the same bytes again.
    return all(start > previous_end for (_, previous_end), (start, _) in pairwise(spans))


def make_ranges(site: Site, ctx: FeatureContext) -> Middleware:
    """Drop a request's abusive Range header (the client gets the whole entity, 200)."""

    async def ranges(ex: Exchange, nxt: Handler) -> Reply:
        headers = ex.headers
        for name in _HEADERS:
            if name in headers and not acceptable(headers.getall(name)):
                ex.edit_headers().popall(name, None)
                headers = ex.headers
        return await nxt(ex)

    return ranges


__all__ = ["MAX_RANGES", "acceptable", "make_ranges"]
