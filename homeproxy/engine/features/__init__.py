"""Per-site features, one module each, each a `make_<x>(site, ctx) -> Middleware`.

`build_middlewares()` is the one place that knows the order of a site's chain
(requests flow down it, responses flow back up):

    access (allow/deny) -> auth -> rate limit -> headers -> ranges -> cache -> compression -> forward

- access first: a denied network learns nothing, not even that a login exists;
- auth before the rate limit, so a flood of bad passwords is throttled by auth's own
  failure counter and a logged-in user's burst is limited per client IP;
- headers outside the cache, so its rules also apply to cache hits;
- ranges (the guard against abusive `Range` headers) in every chain, before the cache, so
  that a request it disarms can be answered from the cache like any other GET;
- cache outside compression, so the cache stores the compressed variant (with
  `Vary: Accept-Encoding`) and a hit does not compress again.

A feature that a site leaves off is not in its chain at all, and its module is
not even imported: it costs that site nothing. Factories run when a config is
applied (off the event loop), never per request; they must not create objects
bound to an event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeproxy.config.model import Site
from homeproxy.engine.chain import Middleware

if TYPE_CHECKING:
    from homeproxy.engine.features.cache import SharedCache


@dataclass
class FeatureContext:
    """What the engine shares with every feature."""

    clock: Callable[[], float]
    """Wall-clock seconds (tests inject a fixed clock)."""
    data_dir: Path
    """Where homeproxy keeps secrets (the login cookie key): created 0700 on demand, files 0600."""
    cache: SharedCache | None = None
    """The cache shared by all sites (made by the engine when a site turns caching on)."""
    cache_header: str = "X-Cache"
    """Response header naming the cache status ("" for none)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Per-engine state that must outlive an apply (e.g. login throttles), keyed by feature and site."""


def forwards_as_is(site: Site) -> bool:
    """The site turns no feature on: its chain is the ranges guard alone (the express lane's
    condition, `engine/express.py`). Kept beside `build_middlewares`, which it mirrors."""
    return not (
        site.allow
        or site.deny
        or site.auth.mode
        or site.rate_limit is not None
        or site.headers.active
        or site.cache.enabled
        or site.compression.enabled
    )


def build_middlewares(site: Site, ctx: FeatureContext) -> list[Middleware]:
    """The middlewares of `site`'s chain, outermost first."""
    chain: list[Middleware] = []
    if site.allow or site.deny:
        from homeproxy.engine.features.access import make_access

        chain.append(make_access(site, ctx))
    if site.auth.mode:
        from homeproxy.engine.features.auth import make_auth

        chain.append(make_auth(site, ctx))
    if site.rate_limit is not None:
        from homeproxy.engine.features.ratelimit import make_ratelimit

        chain.append(make_ratelimit(site, ctx))
    if site.headers.active:
        from homeproxy.engine.features.headers import make_headers

        chain.append(make_headers(site, ctx))
    from homeproxy.engine.features.ranges import make_ranges

    chain.append(make_ranges(site, ctx))
    if site.cache.enabled:
        from homeproxy.engine.features.cache import make_cache

        chain.append(make_cache(site, ctx))
    if site.compression.enabled:
        from homeproxy.engine.features.compression import make_compression

        chain.append(make_compression(site, ctx))
    return chain
