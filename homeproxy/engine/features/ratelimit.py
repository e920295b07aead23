"""rate_limit: a token bucket per client IP (IPv6 by /64), per site; over it, 429 with Retry-After.

Each client starts with `burst` tokens; a request takes one, and tokens come
back at `rate` per second up to `burst`. A request that finds no token gets
homeproxy's 429 page with `Retry-After` (whole seconds until a token is back,
RFC 9110 section 10.2.3).

A client is keyed by `hop.ip_key`, the grouping the per-IP connection cap and
auth's failed-login budget use: an IPv4 address as it is (IPv4-mapped IPv6 as
the IPv4 address), an IPv6 one by its /64, since one host commonly holds a
whole /64 and could otherwise take a fresh address, and a fresh bucket, per
request.

The buckets of a site live in `FeatureContext.state`, so a config apply (even
one that changes the rate) neither forgets nor resets them. The table is
bounded: a bucket that has refilled completely is the same as no bucket and is
dropped when seen; past `MAX_CLIENTS` the least recently seen client goes first
(it only gets a fresh, full bucket back).
"""

from __future__ import annotations

import math
from collections import OrderedDict

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.hop import ip_key
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply

#: Clients remembered per site.
MAX_CLIENTS = 10_000
#: Idle buckets are swept this many at a time, oldest first, as requests come.
_SWEEP = 8


class Buckets:
    """Token buckets keyed by client: (tokens, time of the last update)."""

    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self.max_clients = max_clients
        self._table: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def take(self, key: str, now: float, rate: float, burst: int) -> float:
        """Take a token for `key`: 0.0 if granted, else the seconds until one is back."""
        self._sweep(now, rate, burst)
        tokens, last = self._table.pop(key, (float(burst), now))
        # max(0, ...): a wall clock that steps back must not drain anyone's bucket.
        tokens = min(float(burst), tokens + max(0.0, now - last) * rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / rate
        self._table[key] = (tokens, now)
        while len(self._table) > self.max_clients:
            self._table.popitem(last=False)
        return wait

    def _sweep(self, now: float, rate: float, burst: int) -> None:
        """Drop a few of the oldest buckets if they are full again (as good as new)."""
        for _ in range(_SWEEP):
            if not self._table:
                return
            key, (tokens, last) = next(iter(self._table.items()))
            if tokens + max(0.0, now - last) * rate < burst:
                return
            del self._table[key]


def make_ratelimit(site: Site, ctx: FeatureContext) -> Middleware:
    """A per-client-IP (IPv6: per /64) token bucket for `site` (`site.rate_limit` must be set)."""
    limit = site.rate_limit
    assert limit is not None
    rate, burst = limit.rate, max(1, limit.burst)
    buckets = ctx.state.setdefault(f"ratelimit:{site.name}", Buckets())
    assert isinstance(buckets, Buckets)
    clock = ctx.clock

    async def ratelimit(ex: Exchange, nxt: Handler) -> Reply:
        wait = buckets.take(ip_key(ex.client), clock(), rate, burst)
        if wait > 0.0:
            ex.error = "rate limited"
            reply = error_reply(429, ex.request)
            reply.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return reply
        return await nxt(ex)

    return ratelimit
