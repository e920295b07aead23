"""A site in the model: `Site`, its path `Route`s, and the `SiteDefaults` that new sites start with."""

from __future__ import annotations

from dataclasses import dataclass

from homeproxy.config.model_features import AuthSettings, CacheSettings, CompressionSettings, HeaderRules, RateLimit
from homeproxy.config.model_upstreams import HealthCheck, PassiveHealth, Upstream

#: Default per-site upstream timeouts, in seconds.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
#: Default per-site idle time after which a pooled upstream connection is closed, in seconds.
DEFAULT_UPSTREAM_KEEPALIVE = 4.0


@dataclass(frozen=True, slots=True)
class Route:
    """A path prefix inside a site that goes to its own upstreams."""

    path: str
    """Path prefix, starting with `/` (e.g. `/api/`). The longest matching prefix wins."""

    upstreams: tuple[Upstream, ...]
    """The servers for this route (as a site's `upstreams`); the site's `balance` and health settings apply."""

    strip_prefix: bool = False
    """Remove the prefix before forwarding (`/api/users` goes upstream as `/users`)."""

    rewrite: str = ""
    """Replace the prefix with this one before forwarding (`path = "/v1/"`, `rewrite = "/"`:
    `/v1/users` goes upstream as `/users`). Takes the place of `strip_prefix`."""


@dataclass(frozen=True, slots=True)
class Site:
    """One proxied service: the host names it answers and where it forwards."""

    name: str
    """Unique name, shown in the TUI and the access log."""

    hosts: tuple[str, ...]
    """Host names (case-insensitive; `*.example.lan` matches one or more labels)."""

    upstreams: tuple[Upstream, ...]
    """The servers behind this site: URLs (`"http://10.0.0.5:8123"`), or tables with `url`,
    `weight`, `backup` and `max_conns`; with several, `balance` picks one per request."""

    routes: tuple[Route, ...] = ()
    """Optional path routes with their own upstreams."""

    enabled: bool = True
    """A disabled site is kept in the file but answers nothing (its hosts get the 404 page)."""

    websockets: bool = True
    """Proxy WebSocket upgrades (Home Assistant, Plex and others need this)."""

    preserve_host: bool = True
    """Send the client's Host header upstream; false sends the upstream's own host."""

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    """Seconds to wait for a TCP connection to an upstream (then 504; a refused connection is 502)."""

    read_timeout: float = DEFAULT_READ_TIMEOUT
    """Seconds to wait for upstream data, between reads (then 504)."""

    header_timeout: float | None = None
    """Seconds to wait for an upstream's response headers once the request is sent (then 504);
    unset: `read_timeout`."""

    retries: int = 2
    """How many other upstreams a request may be sent to when one fails before anything was
    sent (refused, reset on connect, a pooled connection found dead). 0: no retries."""

    retry_idempotent: bool = False
    """Also retry GET, HEAD, OPTIONS, PUT and DELETE requests on another upstream after a
    timeout or a lost connection while waiting for the answer (the upstream may have acted on it)."""

    retry_deadline: float = 15.0
    """Seconds that all the attempts of one request may take together, retries included."""

    health: HealthCheck | None = None
    """Active health checks (`health = true`, or a table); off by default."""

    passive_health: PassiveHealth = PassiveHealth()  # noqa: RUF009 - frozen
    """Passive health: failing requests take an upstream out for a cool-down (on by default)."""

    upstream_ca: str = ""
    """A PEM file of the certificate authority (a home CA) that https upstreams' certificates are checked against."""

    upstream_sni: str = ""
    """The server name sent to https upstreams (TLS SNI) and checked in their certificate;
    "" uses the upstream URL's host name."""

    max_body: int = 0
    """The largest request body accepted, in bytes or with a unit (`"100MB"`); over it: 413,
    without reading the rest. 0: no limit."""

    error_pages: tuple[tuple[int, str], ...] = ()
    """Your own pages for 502, 503 and 504: `error_pages = { 502 = "/srv/pages/502.html" }`
    (HTML files, read when the config is applied; homeproxy's page if one cannot be read)."""

    maintenance: bool = False
    """Down for maintenance: every request gets a friendly 503 page with Retry-After, and the
    upstreams are left alone (the rest of the chain, allow/deny and auth, still runs first)."""

    redirect: str = ""
    """A redirect site: every request is sent to this URL (`https://example.org`), with the
    request's path and query added unless `keep_path = false`; `upstreams` may be left out."""

    redirect_code: int = 302
    """The redirect's status: 301 or 308 (permanent, browsers remember it), 302 or 307 (temporary)."""

    keep_path: bool = True
    """With `redirect`: append the request's path and query to the redirect URL."""

    balance: str = "round_robin"
    """How a request picks one of several upstreams (its routes' too): "round_robin" in turn,
    "weighted" in proportion to their `weight`, "first" the first that takes the connection
    (failover in the listed order), "least_conn" the one answering the fewest requests now,
    "ip_hash" the same one for the same client address, "cookie" the same one for the same
    browser (homeproxy sets a cookie), "random_two" the less busy of two picked at random.
    Whatever the policy, upstreams that are down are skipped, and one that refuses the
    connection hands the request to the next in that order."""

    upstream_keepalive: float = DEFAULT_UPSTREAM_KEEPALIVE
    """Seconds a pooled upstream connection may sit idle before homeproxy closes it; keep it
    below the upstream's own keep-alive timeout so the upstream never closes one under a request."""

    allow: tuple[str, ...] = ()
    """If set, only clients in these networks (CIDRs, IPv4 or IPv6) are served; others get 403."""

    deny: tuple[str, ...] = ()
    """Clients in these networks get 403 (checked before `allow` and before auth)."""

    auth: AuthSettings = AuthSettings()  # noqa: RUF009 - frozen
    """Who may use the site: `auth = { users = { alice = "scrypt$..." } }` and friends."""

    rate_limit: RateLimit | None = None
    """Per-client-IP limit, e.g. `"20/s"` or `{ rate = "20/s", burst = 40 }`; over it: 429."""

    headers: HeaderRules = HeaderRules()  # noqa: RUF009 - frozen
    """Security preset and header rules."""

    cache: CacheSettings = CacheSettings()  # noqa: RUF009 - frozen
    """HTTP caching for this site (`cache = true`)."""

    compression: CompressionSettings = CompressionSettings()  # noqa: RUF009 - frozen
    """Response compression for this site (`compression = true`)."""

    verify_upstream: bool = True
    """Check the certificates of https upstreams. Turn off for LAN gear with a self-signed
    certificate (a NAS, a printer, a Hue bridge); the connection is still encrypted."""

    publish: bool | None = None
    """Announce this site's `.local` host names over mDNS (unset: `discovery.publish_hostnames`)."""

    tls: bool = False
    """Serve this site over HTTPS on `server.https_port` with a certificate for all its hosts."""

    issuer: str = ""
    """Where its certificate comes from: "internal" or "acme"; "" means `[tls] issuer`.
    Ignored when `cert` and `key` are set."""

    cert: str = ""
    """Your own certificate: a PEM file with the chain (leaf first). Needs `key`; reloaded when it changes."""

    key: str = ""
    """The private key of `cert` (PEM). Keep it readable only by homeproxy (mode 0600)."""

    redirect_to_https: bool = True
    """With `tls` on: answer plain-HTTP requests with a 308 to the same URL on HTTPS
    (ACME challenges and the root certificate download are exempt)."""

    access_log: bool = True
    """Write this site's requests to the access log (with `[logging] access_log` on); false
    leaves them out (a chatty health check, a media stream). Metrics still count them."""

    @property
    def uses_own_cert(self) -> bool:
        """The site brings its own certificate files."""
        return bool(self.cert and self.key)

    @property
    def all_upstreams(self) -> tuple[str, ...]:
        """The URL of every upstream of the site, its routes' included."""
        return (*(u.url for u in self.upstreams), *(u.url for r in self.routes for u in r.upstreams))

    @property
    def upstream_urls(self) -> tuple[str, ...]:
        """The URLs of the site's own upstreams (not its routes')."""
        return tuple(u.url for u in self.upstreams)


@dataclass(frozen=True, slots=True)
class SiteDefaults:
    """What a site added from the TUI starts with (the `[defaults]` table); existing sites are not changed."""

    websockets: bool = True
    """New sites proxy WebSocket upgrades."""

    compression: bool = False
    """New sites compress responses."""

    cache: bool = False
    """New sites cache responses."""

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    """New sites' connect timeout, in seconds."""

    read_timeout: float = DEFAULT_READ_TIMEOUT
    """New sites' read timeout, in seconds."""
