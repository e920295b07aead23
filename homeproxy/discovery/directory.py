"""`ServiceDirectory`: the services seen on the LAN right now, shared between threads.

Discovery writes it (from its own loop thread); the engine reads it for every
request to an `mdns://` upstream (`resolve`, a dict lookup under no lock: the
mapping is replaced whole, never mutated); the TUI and the CLI read
`snapshot()`. It is bounded: past `max_services` new services are refused and
counted in `refused`, so a flood of announcements cannot grow memory.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from homeproxy.discovery.service import DiscoveredService, MdnsRef, is_mdns_ref, parse_mdns_ref

DEFAULT_MAX_SERVICES = 1000


class ServiceDirectory:
    """Name (case-insensitive) -> `DiscoveredService`, copy-on-write."""

    def __init__(self, max_services: int = DEFAULT_MAX_SERVICES) -> None:
        self.max_services = max_services
        self.refused = 0
        """New services turned away because the directory was full."""
        self._services: Mapping[str, DiscoveredService] = {}
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}
        """`mdns://` text -> lookup key, so a request parses nothing."""

    def __len__(self) -> int:
        return len(self._services)

    def get(self, name: str) -> DiscoveredService | None:
        return self._services.get(name.lower())

    def snapshot(self) -> tuple[DiscoveredService, ...]:
        """Every service, sorted by type label then instance name."""
        return tuple(sorted(self._services.values(), key=lambda s: (s.label.lower(), s.instance.lower())))

    def upsert(self, service: DiscoveredService) -> DiscoveredService | bool | None:
        """Add or replace. Returns the previous entry (an update), None (new), or
        False when nothing changed or the directory is full (then `refused` counts it)."""
        key = service.key
        with self._lock:
            old = self._services.get(key)
            if old is None and len(self._services) >= self.max_services:
                self.refused += 1
                return False
            if old is not None and _same(old, service):
                return False
            self._services = {**self._services, key: service}
            return old

    def remove(self, name: str) -> DiscoveredService | None:
        with self._lock:
            old = self._services.get(name.lower())
            if old is not None:
                self._services = {k: v for k, v in self._services.items() if k != name.lower()}
            return old

    def clear(self) -> None:
        with self._lock:
            self._services = {}

    def resolve(self, ref: MdnsRef | str) -> str | None:
        """The current base URL (`"http://192.168.1.20:32400"`, no path) of an `mdns://`
        upstream, or None while the service is unknown or unresolved, or is homeproxy's own advert."""
        if isinstance(ref, str):
            key = self._keys.get(ref)
            if key is None:
                if not is_mdns_ref(ref):
                    return None
                if len(self._keys) > 4096:
                    self._keys.clear()
                key = self._keys[ref] = parse_mdns_ref(ref).key
        else:
            key = ref.key
        service = self._services.get(key)
        if service is None or service.own:
            # Our own advert: forwarding to it would send each request back to us, for ever.
            return None
        return service.base_url()

    def maps(self, service: DiscoveredService, upstreams: tuple[str, ...]) -> bool:
        """Does one of `upstreams` point at `service` (by `mdns://` name or by its current URL)?"""
        base = service.base_url()
        for u in upstreams:
            if is_mdns_ref(u):
                try:
                    if parse_mdns_ref(u).key == service.key:
                        return True
                except ValueError:
                    continue
            elif base and (u == base or u.startswith(base + "/")):
                return True
        return False


def _same(a: DiscoveredService, b: DiscoveredService) -> bool:
    """Equal apart from `seen`."""
    return (a.host, a.addresses, a.port, a.properties, a.path, a.instance, a.own) == (
        b.host,
        b.addresses,
        b.port,
        b.properties,
        b.path,
        b.instance,
        b.own,
    )
