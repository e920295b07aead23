"""headers: the security preset and set/remove rules for request and response headers.

On the way down, `request.remove` names are removed and `request.set` values
replace the client's (all copies of a name). On the way back up, in this order:

1. the security preset, only where the upstream sent no value of its own:
   `X-Content-Type-Options: nosniff`, `X-Frame-Options: SAMEORIGIN`,
   `Referrer-Policy: strict-origin-when-cross-origin`, and HSTS only on a TLS
   connection (homeproxy has no TLS listener yet, so never today: HSTS sent
   over plain HTTP is ignored by browsers, and sent by mistake it locks a
   home lab out of its own sites for a year);
2. `response.remove` (so a site can drop a preset header, e.g. to be framed);
3. `response.set` (replacing every copy).

It sits outside the cache and compression, so its rules apply to cache hits
too, and to homeproxy's own pages from further down (502, 504). Note that
homeproxy sets X-Forwarded-For/-Proto/-Host and X-Real-IP itself after the
chain, and drops hop-by-hop headers, so request rules cannot change those.
"""

from __future__ import annotations

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.reply import Reply

SECURITY_PRESET: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
)
HSTS = ("Strict-Transport-Security", "max-age=31536000")


def make_headers(site: Site, ctx: FeatureContext) -> Middleware:
    """Apply `site.headers` to the request going up and the response coming back."""
    rules = site.headers
    security = rules.security
    request_remove = tuple(rules.request_remove)
    request_set = tuple(rules.request_set)
    response_remove = tuple(rules.response_remove)
    response_set = tuple(rules.response_set)
    sets_hsts = any(name.lower() == HSTS[0].lower() for name, _ in response_set)

    async def headers(ex: Exchange, nxt: Handler) -> Reply:
        if request_remove or request_set:
            out = ex.edit_headers()
            for name in request_remove:
                out.popall(name, None)
            for name, value in request_set:
                out[name] = value  # replaces every copy
        reply = await nxt(ex)
        if reply.sent:  # a relayed WebSocket: its handshake is long gone
            return reply
        h = reply.headers
        if security:
            for name, value in SECURITY_PRESET:
                h.setdefault(name, value)
            # The transport's own TLS only: a trusted proxy's X-Forwarded-Proto is not enough
            # to make *this* hop promise HTTPS for a year.
            if ex.request.secure:
                h.setdefault(*HSTS)
        for name in response_remove:
            h.popall(name, None)
        for name, value in response_set:
            h[name] = value
        if sets_hsts and not ex.request.secure:  # RFC 6797 section 7.2: never over plain HTTP
            h.popall(HSTS[0], None)
        return reply

    return headers
