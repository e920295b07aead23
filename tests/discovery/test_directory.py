"""`ServiceDirectory`: homeproxy's own adverts are kept (the TUI shows them) but never resolved as
an upstream, since every request would come back to homeproxy."""

from __future__ import annotations

from dataclasses import replace

from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.service import DiscoveredService

PLEX = DiscoveredService(
    name="Plex._http._tcp.local.",
    instance="Plex",
    type="_http._tcp.local.",
    host="plex.local.",
    addresses=("192.168.1.5",),
    port=8080,
)


def test_an_own_advert_is_kept_but_not_resolved() -> None:
    directory = ServiceDirectory()
    directory.upsert(PLEX)
    assert directory.resolve("mdns://Plex._http._tcp") == "http://192.168.1.5:8080"
    assert directory.upsert(replace(PLEX, own=True)) == PLEX  # a change: the TUI hears of it
    assert directory.get(PLEX.name) == replace(PLEX, own=True)
    assert directory.resolve("mdns://Plex._http._tcp") is None
    assert directory.resolve(PLEX.ref) is None
