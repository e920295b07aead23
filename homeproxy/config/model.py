"""The typed, immutable configuration model: the single source of truth.

Every field carries a docstring under it; `docs/configuration.md` is written
from these. Instances are frozen: an edit builds a new model with
`dataclasses.replace` (or through `ConfigStore`), never mutates one in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Default per-site upstream timeouts, in seconds.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where homeproxy listens and how it treats its peers."""

    listen: tuple[str, ...] = ("0.0.0.0",)
    """Addresses to listen on (IPv4 or IPv6 literals, or a host name)."""

    http_port: int = 8080
    """Plain-HTTP port; 80 on a real server (needs CAP_NET_BIND_SERVICE). 0 picks a free port."""

    https_port: int = 8443
    """HTTPS port, reserved for TLS (validated now, bound once TLS lands)."""

    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of proxies in front of homeproxy whose X-Forwarded-* headers are believed."""

    drain_timeout: float = 10.0
    """Seconds that a shutdown waits for in-flight requests before closing them."""


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """The access log (JSON lines in the user log dir) and the process log."""

    access_log: bool = True
    """Write one JSON line per request. In the file: `true` (`access.log` in the user log dir),
    `false` or `"off"`, or a file path (`"/var/log/homeproxy/access.log"`)."""

    access_log_path: str = ""
    """The access log file when `access_log` names one; "" means `access.log` in the user log dir."""

    max_bytes: int = 10 * 1024 * 1024
    """Rotate the access log when it grows past this many bytes."""

    keep_files: int = 7
    """How many rotated access logs to keep."""

    level: str = "info"
    """Process log level: debug, info, warning or error."""


@dataclass(frozen=True, slots=True)
class Route:
    """A path prefix inside a site that goes to its own upstreams."""

    path: str
    """Path prefix, starting with `/` (e.g. `/api/`). The longest matching prefix wins."""

    upstreams: tuple[str, ...]
    """http(s) URLs of the servers for this route."""

    strip_prefix: bool = False
    """Remove the prefix before forwarding (`/api/users` goes upstream as `/users`)."""


@dataclass(frozen=True, slots=True)
class Site:
    """One proxied service: the host names it answers and where it forwards."""

    name: str
    """Unique name, shown in the TUI and the access log."""

    hosts: tuple[str, ...]
    """Host names (case-insensitive; `*.example.lan` matches one or more labels)."""

    upstreams: tuple[str, ...]
    """http(s) URLs of the servers behind this site; several are used in turn."""

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


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    server: ServerSettings = field(default_factory=ServerSettings)
    """The `[server]` table."""

    logging: LoggingSettings = field(default_factory=LoggingSettings)
    """The `[logging]` table."""

    sites: tuple[Site, ...] = ()
    """The `[[sites]]` array."""

    def site(self, name: str) -> Site | None:
        """The site called `name`, or None."""
        return next((s for s in self.sites if s.name == name), None)
