"""`SelfIdentity`: how homeproxy tells its own adverts (and its own listener) from other devices."""

from __future__ import annotations

from homeproxy.discovery.service import SELF_KEY, DiscoveredService, SelfIdentity, new_instance_id

ME = SelfIdentity.of("3f2a9c1e00000000", ["192.168.1.5", "fe80::5%eth0", "0.0.0.0", "not-an-ip"], [8080, 0])


def advert(
    address: str = "192.168.1.5", port: int = 8080, properties: tuple[tuple[str, str | None], ...] = ()
) -> DiscoveredService:
    return DiscoveredService(
        name="Plex._http._tcp.local.",
        instance="Plex",
        type="_http._tcp.local.",
        host="plex.local.",
        addresses=(address,) if address else (),
        port=port,
        properties=properties,
    )


def test_the_identity_keeps_real_addresses_and_ports_only() -> None:
    assert ME.addresses == frozenset({"192.168.1.5", "fe80::5"})
    assert ME.ports == frozenset({8080})


def test_an_advert_with_our_instance_id_is_ours_wherever_it_points() -> None:
    assert ME.recognizes(advert("10.9.9.9", 9999, ((SELF_KEY, ME.instance_id),)))
    assert ME.recognizes(advert("", 0, (("HomeProxy", ME.instance_id),)))  # TXT keys ignore case


def test_without_the_id_our_address_and_port_make_it_ours() -> None:
    # An older homeproxy's advert (no id), or a crashed run's still in the LAN's caches.
    assert ME.recognizes(advert("192.168.1.5", 8080))
    assert ME.recognizes(advert("fe80::5%eth0", 8080))
    assert ME.recognizes(advert("127.0.0.1", 8080))  # loopback is always this machine
    assert ME.recognizes(advert("::1", 8080))


def test_other_devices_and_other_homeproxies_are_not_ours() -> None:
    assert not ME.recognizes(advert("192.168.1.5", 32400))  # this machine, another program
    assert not ME.recognizes(advert("192.168.1.6", 8080))  # another machine, same port
    other = advert("192.168.1.6", 8080, ((SELF_KEY, new_instance_id()),))
    assert not ME.recognizes(other)  # another homeproxy on the LAN: adding it is fine
    assert not ME.recognizes(advert("", 0))  # unresolved
    assert not SelfIdentity("").recognizes(advert("192.168.1.5", 8080, ((SELF_KEY, ""),)))


def test_is_us_takes_addresses_and_localhost() -> None:
    assert ME.is_us("localhost", 8080) and ME.is_us("LOCALHOST.", 8080)
    assert ME.is_us("127.0.0.2", 8080) and ME.is_us("[::1]", 8080) and ME.is_us("192.168.1.5", 8080)
    assert not ME.is_us("192.168.1.5", 8443)
    assert not ME.is_us("plex.local", 8080)  # a name: not resolved here


def test_instance_ids_are_random() -> None:
    assert len({new_instance_id() for _ in range(100)}) == 100
