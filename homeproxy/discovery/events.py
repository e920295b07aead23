"""Discovery's events on the `EventBus` (subscribe with `kinds=DISCOVERY_EVENTS`)."""

from __future__ import annotations

from dataclasses import dataclass

from homeproxy.discovery.service import DiscoveredService


@dataclass(frozen=True, slots=True)
class ServiceFound:
    """A service appeared (and resolved as far as it could)."""

    service: DiscoveredService


@dataclass(frozen=True, slots=True)
class ServiceUpdated:
    """A known service changed: address, port, host or TXT."""

    service: DiscoveredService
    previous: DiscoveredService


@dataclass(frozen=True, slots=True)
class ServiceLost:
    """A service said goodbye or its records expired."""

    service: DiscoveredService


@dataclass(frozen=True, slots=True)
class NameAnnounced:
    """homeproxy now answers mDNS for `host` (e.g. `"plex.local"`) with `addresses`."""

    host: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NameConflict:
    """`host` is already answered by another machine on the LAN: homeproxy does not take it."""

    host: str
    holders: tuple[str, ...]
    """The addresses the other machine gave for the name (may be empty if unknown)."""


@dataclass(frozen=True, slots=True)
class NameWithdrawn:
    """homeproxy stopped answering for `host` (site removed or renamed, or shutdown): goodbye sent."""

    host: str


DiscoveryEvent = ServiceFound | ServiceUpdated | ServiceLost | NameAnnounced | NameConflict | NameWithdrawn
DISCOVERY_EVENTS: tuple[type, ...] = (
    ServiceFound,
    ServiceUpdated,
    ServiceLost,
    NameAnnounced,
    NameConflict,
    NameWithdrawn,
)
