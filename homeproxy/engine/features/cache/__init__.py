"""cache: the shared HTTP cache (RFC 9111), in memory, one for every site that turns it on.

`SharedCache` holds the entries: a byte-bounded LRU across all sites, with a
per-site byte limit (`[[sites]] cache.max_bytes`) and a per-entry limit
(`cache.max_entry_bytes`; larger responses stream through uncached). Entries
are counted with their headers and a fixed overhead, not just their bodies.
All cache work happens on the engine's loop; a lock makes `resize()`,
`set_site_limit()` and `purge()` safe from the thread that applies a config.

`make_cache(site, ctx)` is the middleware. It keys responses by site, scheme,
Host as sent (lower case, port included: the upstream's X-Forwarded-Host quotes
it) and request target (HEAD uses GET's entry), with one variant per set of
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
  If-Unmodified-Since, If-Range, upgrades, GETs with a body, requests with
  `Cache-Control: no-store`, and requests carrying a header the upstream may
  build its answer from but the key does not hold (`Forwarded`, X-Original-URL,
  X-Forwarded-Scheme and the like, or a trusted proxy's X-Forwarded-Host naming
  another host than Host: `keys.unkeyed`), so that no client can poison the
  entry others get; `only-if-cached` gets a 504 when nothing usable is stored.

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

The package, one concern a module:

- `keys`: the cache key (site, scheme, authority, target), Vary variants, unkeyed headers;
- `policy`: RFC 9111 parsing and rules (Cache-Control, HTTP dates, freshness lifetime,
  age, which fields an entry keeps, a request's directives);
- `store`: `Entry` and `SharedCache` (bounded memory, eviction, invalidation, purge,
  collapsing of concurrent fetches);
- `revalidate`: conditional requests (ETag comparison, the 304 merge, answers from an entry);
- `tee`: the streamed-body tee that stores an entry only when the body is complete;
- `middleware`: `make_cache`, the middleware a site's chain runs; the decisions that read a
  site's settings (storable, usable, stale-if-error, fetch and collapse) live in it.
"""

from __future__ import annotations

from homeproxy.engine.features.cache.middleware import BYPASS, HIT, MISS, REVALIDATED, STALE, make_cache
from homeproxy.engine.features.cache.policy import Directives, http_date, parse_http_date
from homeproxy.engine.features.cache.store import Entry, SharedCache

__all__ = [
    "BYPASS",
    "HIT",
    "MISS",
    "REVALIDATED",
    "STALE",
    "Directives",
    "Entry",
    "SharedCache",
    "http_date",
    "make_cache",
    "parse_http_date",
]
