"""The names to announce: `wanted_names` from the config (`PublishSpec`), each one's `NameState`, the
held registrations (`_Held`), and the address and instance-name helpers."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from zeroconf import ServiceInfo

from homeproxy.config.model import Config

log = logging.getLogger("homeproxy.discovery.publish")  # one logger name for the whole publisher


NAME_TYPE = "_homeproxy._tcp.local."
"""The private service type that holds a bare host name (its instance is the name's label)."""

HTTP_TYPE = "_http._tcp.local."
HTTPS_TYPE = "_https._tcp.local."

MAX_INSTANCE_BYTES = 63
"""RFC 6763 §4.1.1: an instance name is at most 63 bytes of UTF-8."""

_FLAT_LOCAL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.local$")

NameStatus = Literal["probing", "announced", "conflict", "withdrawn", "error"]


@dataclass(frozen=True, slots=True)
class PublishSpec:
    """One name to announce: `host` (`"plex.local"`) for `site`, whose proxy listens on `port`."""

    host: str
    site: str
    port: int
    advertise: bool
    """Also register the site as an `_http._tcp` (or `_https._tcp`) service."""
    https: bool = False


@dataclass(frozen=True, slots=True)
class NameState:
    """Where announcing one name stands (for the TUI)."""

    host: str
    status: NameStatus
    addresses: tuple[str, ...] = ()
    """The addresses homeproxy answers with (announced), or would (probing)."""
    holders: tuple[str, ...] = ()
    """In conflict: the addresses another machine gave for the name (may be empty if unknown)."""
    detail: str = ""
    """One sentence saying what happens and why."""
    since: float = 0.0
    """When the name entered this status (the publisher's clock)."""


def is_flat_local(host: str) -> bool:
    """Is `host` exactly `label.local` (lower case, no wildcard)?

    Names with more labels (`a.b.local`) are skipped: Ubuntu's resolver (nss-mdns's
    `mdns4_minimal`) only asks mDNS for two-label `.local` names.
    """
    return bool(_FLAT_LOCAL.match(host))


def wanted_names(config: Config, port: int) -> dict[str, PublishSpec]:
    """The names to announce: each enabled, publishing site's flat `.local` hosts, in lower case.

    A host listed by two sites goes to the first.
    """
    wanted: dict[str, PublishSpec] = {}
    advertise = config.discovery.advertise
    for site in config.sites:
        if not site.enabled or not config.publishes(site):
            continue
        for raw in site.hosts:
            host = raw.strip().lower().rstrip(".")
            if is_flat_local(host) and host not in wanted:
                wanted[host] = PublishSpec(host=host, site=site.name, port=port, advertise=advertise)
    return wanted


def _normalize(addresses: Iterable[str]) -> tuple[str, ...]:
    """Valid, deduplicated address strings (IPv6 zone ids dropped: mDNS records carry none)."""
    seen: dict[str, None] = {}
    for raw in addresses:
        try:
            ip = ipaddress.ip_address(raw.split("%", 1)[0].strip())
        except ValueError:
            log.warning("mDNS: ignoring %r, not an IP address", raw)
            continue
        seen.setdefault(str(ip), None)
    return tuple(seen)


def _sorted_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """IPv4 before IPv6, then numerically."""
    ips = sorted({ipaddress.ip_address(a) for a in addresses}, key=lambda ip: (ip.version, int(ip)))
    return tuple(str(ip) for ip in ips)


def _instance(text: str) -> str:
    """A DNS-SD instance name from `text`: no dots (zeroconf would split on them), at most 63 bytes."""
    name = " ".join(text.replace(".", " ").split()) or "homeproxy"
    while len(name.encode()) > MAX_INSTANCE_BYTES:
        name = name[:-1]
    return name


@dataclass(slots=True)
class _Held:
    """A name homeproxy answers for: its registrations."""

    spec: PublishSpec
    name_info: ServiceInfo
    advert: ServiceInfo | None = None
