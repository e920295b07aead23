"""The model's top-level settings tables: `[server]`, `[logging]`, `[metrics]`, `[tls]`, `[cache]`, `[discovery]`."""

from __future__ import annotations

from dataclasses import dataclass

from homeproxy.discovery.service import DEFAULT_SERVICE_TYPES


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


@dataclass(frozen=True, slots=True)
class TuiSettings:
    """The `[tui]` table: how the terminal UI behaves."""

    keymap: tuple[tuple[str, str], ...] = ()
    """`[tui.keymap]`: binding id -> key(s), such as `"sites.toggle" = "t"` or
    `"screen.traffic" = "ctrl+3,3"`; an id not listed keeps its default key. Help lists every id's
    keys; the ids are in `homeproxy/keymap.py`."""


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
