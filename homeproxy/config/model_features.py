"""A site's feature settings in the model: cache, compression, auth, rate limit and header rules."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_COMPRESSIBLE = (
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/x-javascript",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "image/svg+xml",
    "application/manifest+json",
    "application/x-ndjson",
)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """A site's share of the shared in-memory HTTP cache (RFC 9111). `cache = true` turns it on."""

    enabled: bool = False
    """Store and serve cacheable responses for this site."""

    max_bytes: int = 64 * 1024 * 1024
    """The most this site may hold in the cache (the whole cache is bounded by `[cache] max_bytes`)."""

    max_entry_bytes: int = 8 * 1024 * 1024
    """Responses larger than this stream through uncached."""

    default_ttl: float = 0.0
    """Freshness, in seconds, for responses that have a validator (ETag/Last-Modified) but no
    explicit lifetime; 0 stores them but revalidates them every time."""

    cookies: bool = False
    """Also store responses that carry Set-Cookie (off: they are never stored)."""

    stale_on_error: float = 0.0
    """Serve a stale entry up to this many seconds past its freshness when the upstream fails
    or times out, even without `stale-if-error` from the upstream."""


@dataclass(frozen=True, slots=True)
class CompressionSettings:
    """Response compression. `compression = true` turns it on with these defaults."""

    enabled: bool = False
    """Compress responses for clients that accept it."""

    min_bytes: int = 1024
    """Smaller responses (of known length) are sent as they are."""

    types: tuple[str, ...] = DEFAULT_COMPRESSIBLE
    """Media types to compress (`type/*` and `type/*+suffix` patterns allowed)."""

    algorithms: tuple[str, ...] = ("br", "zstd", "gzip")
    """Codings homeproxy may use, in order of preference when the client likes several equally."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Access control by identity: Basic auth, a login page, or a forward-auth service."""

    mode: str = ""
    """"basic", "login" or "forward"; "" is off. Inferred: `users` alone means basic, `forward` means forward."""

    users: tuple[tuple[str, str], ...] = ()
    """User names and their password hashes (`homeproxy passwd`); never plain passwords."""

    realm: str = "homeproxy"
    """The Basic auth realm the browser shows."""

    pass_authorization: bool = False
    """Forward the client's Authorization header upstream after Basic auth (off: it is removed)."""

    bypass: tuple[str, ...] = ()
    """Networks (CIDRs) whose clients need no login, e.g. the LAN."""

    forward: str = ""
    """The auth service to ask in forward mode (e.g. "http://authelia:9091/api/verify")."""

    forward_headers: tuple[str, ...] = ("Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email")
    """Headers copied from the auth service's 2xx answer onto the request to the upstream."""

    cookie_domain: str = ""
    """Login mode: the parent domain the session cookie covers (one login for all its sites); "" is this host only."""

    session_ttl: float = 7 * 24 * 3600.0
    """Login mode: how long a session lasts, in seconds."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket per client IP."""

    rate: float
    """Requests per second allowed on average."""

    burst: int
    """How many requests may come at once before the rate applies."""


@dataclass(frozen=True, slots=True)
class HeaderRules:
    """Security headers and set/remove rules for request and response headers."""

    security: bool = False
    """Add X-Content-Type-Options, X-Frame-Options and Referrer-Policy (and HSTS on TLS) if absent."""

    request_set: tuple[tuple[str, str], ...] = ()
    """Headers set on the request to the upstream (replacing the client's)."""

    request_remove: tuple[str, ...] = ()
    """Request headers removed before the upstream sees them."""

    response_set: tuple[tuple[str, str], ...] = ()
    """Headers set on the response to the client (replacing the upstream's)."""

    response_remove: tuple[str, ...] = ()
    """Response headers removed before the client sees them."""

    @property
    def active(self) -> bool:
        return bool(
            self.security or self.request_set or self.request_remove or self.response_set or self.response_remove
        )
