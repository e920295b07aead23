"""The typed, immutable configuration model: the single source of truth.

Every field carries a docstring under it; `docs/configuration.md` is written
from these. Instances are frozen: an edit builds a new model with
`dataclasses.replace` (or through `ConfigStore`), never mutates one in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from homeproxy.config.model_features import DEFAULT_COMPRESSIBLE as DEFAULT_COMPRESSIBLE
from homeproxy.config.model_features import AuthSettings as AuthSettings
from homeproxy.config.model_features import CacheSettings as CacheSettings
from homeproxy.config.model_features import CompressionSettings as CompressionSettings
from homeproxy.config.model_features import HeaderRules as HeaderRules
from homeproxy.config.model_features import RateLimit as RateLimit
from homeproxy.config.model_settings import ACCESS_LOG_FORMATS as ACCESS_LOG_FORMATS
from homeproxy.config.model_settings import ACME_DIRECTORIES as ACME_DIRECTORIES
from homeproxy.config.model_settings import ISSUERS as ISSUERS
from homeproxy.config.model_settings import DiscoverySettings as DiscoverySettings
from homeproxy.config.model_settings import LoggingSettings as LoggingSettings
from homeproxy.config.model_settings import MetricsSettings as MetricsSettings
from homeproxy.config.model_settings import ServerSettings as ServerSettings
from homeproxy.config.model_settings import SharedCacheSettings as SharedCacheSettings
from homeproxy.config.model_settings import TlsSettings as TlsSettings
from homeproxy.config.model_settings import TuiSettings as TuiSettings
from homeproxy.config.model_settings import split_host_port as split_host_port
from homeproxy.config.model_site import DEFAULT_CONNECT_TIMEOUT as DEFAULT_CONNECT_TIMEOUT
from homeproxy.config.model_site import DEFAULT_READ_TIMEOUT as DEFAULT_READ_TIMEOUT
from homeproxy.config.model_site import DEFAULT_UPSTREAM_KEEPALIVE as DEFAULT_UPSTREAM_KEEPALIVE
from homeproxy.config.model_site import Route as Route
from homeproxy.config.model_site import Site as Site
from homeproxy.config.model_site import SiteDefaults as SiteDefaults
from homeproxy.config.model_upstreams import BALANCE_POLICIES as BALANCE_POLICIES
from homeproxy.config.model_upstreams import STICKY_COOKIE as STICKY_COOKIE
from homeproxy.config.model_upstreams import HealthCheck as HealthCheck
from homeproxy.config.model_upstreams import PassiveHealth as PassiveHealth
from homeproxy.config.model_upstreams import Upstream as Upstream


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

    tui: TuiSettings = field(default_factory=TuiSettings)
    """The `[tui]` table."""

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
