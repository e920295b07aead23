"""The typed, immutable configuration model: the single source of truth.

Every field carries a docstring under it; `docs/configuration.md` is written
from these. Instances are frozen: an edit builds a new model with
`dataclasses.replace` (or through `ConfigStore`), never mutates one in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from homeproxy.config.model_upstreams import BALANCE_POLICIES as BALANCE_POLICIES
from homeproxy.config.model_upstreams import STICKY_COOKIE as STICKY_COOKIE
from homeproxy.config.model_upstreams import HealthCheck as HealthCheck
from homeproxy.config.model_upstreams import PassiveHealth as PassiveHealth
from homeproxy.config.model_upstreams import Upstream as Upstream
from homeproxy.discovery.service import DEFAULT_SERVICE_TYPES

#: Default per-site upstream timeouts, in seconds.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
#: Default per-site idle time after which a pooled upstream connection is closed, in seconds.
DEFAULT_UPSTREAM_KEEPALIVE = 4.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where homeproxy listens and how it treats its peers."""

    listen: tuple[str, ...] = ("0.0.0.0",)
    """Addresses to listen on (IPv4 or IPv6 literals, or a host name)."""

    http_port: int = 8080
    """Plain-HTTP port; 80 on a real server (needs CAP_NET_BIND_SERVICE). 0 picks a free port."""

    https_port: int = 8443
    """HTTPS port for every site with `tls = true` (one listener; the certificate is chosen by SNI);
    443 on a real server. Opened only while at least one enabled site has TLS on."""

    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of proxies in front of homeproxy whose X-Forwarded-* headers are believed."""

    drain_timeout: float = 10.0
    """Seconds that a shutdown waits for in-flight requests before closing them."""

    default_site: str = ""
    """The name of the site that answers requests for host names no site claims; "" (the
    default) gives them homeproxy's neutral 404 page."""

    max_request_line: int = 8190
    """Longest request target, and longest single header line, in bytes (nginx's
    `large_client_header_buffers` size): a longer target is a 414, a longer header line a 431."""

    max_header_size: int = 64 * 1024
    """Bytes of header lines one request may send in all: more is a 431."""

    max_headers: int = 200
    """Header lines one request may send: more is a 431. 0: no count limit (`max_header_size`
    still holds)."""

    client_header_timeout: float = 60.0
    """Seconds a client has to send a whole request head, counted from its first byte (and from
    the connection's opening for its first request): then a 408 and the connection is closed
    (nginx's `client_header_timeout`)."""

    client_body_timeout: float = 60.0
    """Seconds a client may stay silent while it sends a request body (between two reads, not
    for the whole body): then a 408, the connection is closed and the upstream request is
    aborted (nginx's `client_body_timeout`). Time that homeproxy itself holds the body back
    (a slow upstream, a pending `100 Continue`) does not count."""

    send_timeout: float = 60.0
    """Seconds a client may leave a response unread while homeproxy has more of it to send
    (between two writes): then the connection is closed and the upstream's response abandoned
    (nginx's `send_timeout`)."""

    keepalive_timeout: float = 75.0
    """Seconds an idle keep-alive connection is kept open between two requests (nginx's
    `keepalive_timeout`)."""

    max_connections: int = 4096
    """Client connections open at once, in all; a new one over it is closed at once. 0: no limit
    (the process's open-file limit still holds: each proxied request uses two)."""

    max_connections_per_ip: int = 256
    """Client connections open at once from one address (an IPv6 client counts by its /64);
    a new one over it is closed at once. 0: no limit. Addresses in `trusted_proxies` are not
    capped (they carry many clients)."""


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """The access log (JSON lines or the combined format, in the user log dir) and the process log."""

    access_log: bool = True
    """Write one line per request. In the file: `true` (`access.log` in the user log dir),
    `false` or `"off"`, or a file path (`"/var/log/homeproxy/access.log"`)."""

    access_log_path: str = ""
    """The access log file when `access_log` names one; "" means `access.log` in the user log dir."""

    max_bytes: int = 10 * 1024 * 1024
    """Rotate the access log when it grows past this many bytes."""

    keep_files: int = 7
    """How many rotated access logs to keep."""

    level: str = "info"
    """Process log level: debug, info, warning or error."""

    access_log_format: str = "json"
    """How access log lines look: "json" (one JSON object per line) or "combined" (the
    Apache/nginx combined log format, for goaccess, fail2ban and other log tools)."""


ACCESS_LOG_FORMATS = ("json", "combined")


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The `[metrics]` table: a Prometheus `/metrics` endpoint on its own admin listener."""

    listen: str = ""
    """`"host:port"` (`"127.0.0.1:9180"`, `"[::1]:9180"`) of the admin listener that serves
    `/metrics`; "" is off. It has no login: keep it on loopback or a trusted network."""

    @property
    def address(self) -> tuple[str, int] | None:
        """`listen` as (host, port), or None when off."""
        return split_host_port(self.listen) if self.listen else None


def split_host_port(text: str) -> tuple[str, int]:
    """`"127.0.0.1:9180"` -> ("127.0.0.1", 9180); `"[::1]:9180"` -> ("::1", 9180).

    Raises ValueError (with what was expected) for anything else."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f'write an IPv6 address in brackets, such as "[::1]:9180", got "{text}"')
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'expected "host:port" such as "127.0.0.1:9180" or "[::1]:9180", got "{text}"')
    return host, int(port)


#: ACME directories known by name (`[tls] acme_directory`); anything else is a URL.
ACME_DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
ISSUERS = ("internal", "acme")
"""How a site with several upstreams picks one per request (`Site.balance`)."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The `[tls]` table: where certificates for sites with `tls = true` come from."""

    issuer: str = "internal"
    """"internal" (homeproxy's own local CA: devices trust its root once) or "acme"
    (Let's Encrypt or another RFC 8555 CA, HTTP-01 on the HTTP port). A site may override it,
    and a site with its own `cert` and `key` uses those."""

    serve_root: bool = True
    """Serve the local CA's root certificate (only the public root) on the plain-HTTP listener at
    `/.well-known/homeproxy/root.crt` (and `root.mobileconfig` for iOS), on any host, so phones can
    install it by scanning the QR code on the Certificates screen."""

    acme_email: str = ""
    """The e-mail address for the ACME account (the CA's expiry notices); may be empty."""

    acme_directory: str = "letsencrypt"
    """The ACME directory: "letsencrypt", "letsencrypt-staging", or a URL (a LAN step-ca)."""

    acme_ca_bundle: str = ""
    """A PEM file of CA certificates to trust for the ACME server itself (a LAN CA); "" uses the system's."""

    @property
    def acme_url(self) -> str:
        """`acme_directory` as a URL."""
        return ACME_DIRECTORIES.get(self.acme_directory, self.acme_directory)


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

    auth: AuthSettings = AuthSettings()
    """Who may use the site: `auth = { users = { alice = "scrypt$..." } }` and friends."""

    rate_limit: RateLimit | None = None
    """Per-client-IP limit, e.g. `"20/s"` or `{ rate = "20/s", burst = 40 }`; over it: 429."""

    headers: HeaderRules = HeaderRules()
    """Security preset and header rules."""

    cache: CacheSettings = CacheSettings()
    """HTTP caching for this site (`cache = true`)."""

    compression: CompressionSettings = CompressionSettings()
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


@dataclass(frozen=True, slots=True)
class SharedCacheSettings:
    """The cache shared by every site that turns caching on."""

    max_bytes: int = 256 * 1024 * 1024
    """The whole cache's memory bound; the least recently used entries go first."""

    header: str = "X-Cache"
    """Response header that tells HIT, MISS, REVALIDATED, STALE or BYPASS ("" to send none)."""


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """The `[discovery]` table: finding services on the LAN over mDNS, and announcing sites' names."""

    browse: bool = True
    """Browse the LAN for services (the TUI's Discovery screen, `homeproxy discover`)."""

    service_types: tuple[str, ...] = DEFAULT_SERVICE_TYPES
    """Service types to browse (`"_http._tcp"`, ...); the default is a list of home-lab web UIs."""

    browse_all_types: bool = True
    """Also browse every type that the LAN's devices list (`_services._dns-sd._udp`)."""

    publish_hostnames: bool = True
    """Answer mDNS for each site's flat `.local` host names (`plex.local`) with this machine's
    addresses, so phones and laptops find them without a DNS server. A name that another
    machine already answers is never taken."""

    advertise: bool = False
    """Also advertise each site as an `_http._tcp` service, so it shows in other mDNS browsers."""

    interfaces: tuple[str, ...] = ()
    """Interfaces (names such as `"eth0"`, or IP addresses) for mDNS; empty means the LAN
    interfaces: those with a private address, skipping loopback, container and VPN ones."""

    domain: str = "home.arpa"
    """The domain of suggested host names for discovered services (`plex.home.arpa`)."""

    max_services: int = 1000
    """The most services kept in the table; more are ignored (and counted)."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    server: ServerSettings = field(default_factory=ServerSettings)
    """The `[server]` table."""

    logging: LoggingSettings = field(default_factory=LoggingSettings)
    """The `[logging]` table."""

    cache: SharedCacheSettings = field(default_factory=SharedCacheSettings)
    """The `[cache]` table."""

    defaults: SiteDefaults = field(default_factory=SiteDefaults)
    """The `[defaults]` table: what new sites start with."""

    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    """The `[discovery]` table."""

    tls: TlsSettings = field(default_factory=TlsSettings)
    """The `[tls]` table."""

    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    """The `[metrics]` table."""

    sites: tuple[Site, ...] = ()
    """The `[[sites]]` array."""

    def publishes(self, site: Site) -> bool:
        """Does `site` announce its `.local` names (its own `publish`, else the discovery default)?"""
        return self.discovery.publish_hostnames if site.publish is None else site.publish

    def issuer_of(self, site: Site) -> str:
        """Where `site`'s certificate comes from: "files", "internal" or "acme"."""
        if site.uses_own_cert:
            return "files"
        return site.issuer or self.tls.issuer

    @property
    def tls_sites(self) -> tuple[Site, ...]:
        """The enabled sites with TLS on."""
        return tuple(s for s in self.sites if s.enabled and s.tls)

    def site(self, name: str) -> Site | None:
        """The site called `name`, or None."""
        return next((s for s in self.sites if s.name == name), None)
