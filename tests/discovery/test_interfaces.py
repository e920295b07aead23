"""Choosing mDNS interfaces: the selection logic over plain adapter data (as `ifaddr` gives it),
the environment override, and the real machine's adapters read without error."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from homeproxy.discovery.interfaces import (
    ENV_INTERFACES,
    Interface,
    addresses_of,
    choose_interfaces,
    is_virtual,
    lan_interfaces,
    zeroconf_addresses,
)


@dataclass
class IP:
    ip: str | tuple[str, int, int]


@dataclass
class Adapter:
    name: str
    ips: list[IP]


def adapter(name: str, *addresses: str) -> Adapter:
    return Adapter(name, [IP((a, 0, 3) if ":" in a else a) for a in addresses])


HOME = [
    adapter("lo", "127.0.0.1", "::1"),
    adapter("eth0", "192.168.1.5", "fe80::1", "fd00::5", "2001:db8::5"),
    adapter("wlan0", "fd12:3456::9", "fe80::9"),
    adapter("eth1", "203.0.113.7"),  # a public address only: not a LAN
    adapter("usb0", "169.254.10.1"),  # link-local only
    adapter("docker0", "172.17.0.1"),
    adapter("br-0a1b2c", "172.18.0.1"),
    adapter("veth12ab", "172.17.0.2"),
    adapter("virbr0", "192.168.122.1"),
    adapter("tailscale0", "100.101.102.103", "fd7a:115c::1"),
    adapter("wg0", "10.8.0.1"),
    adapter("tun0", "10.9.0.1"),
    adapter("zt7nnig26", "10.147.17.1"),
    adapter("cni0", "10.244.0.1"),
    adapter("down0"),
]

NO_ENV: dict[str, str] = {}


def test_lan_interfaces_skip_loopback_virtual_and_public_ones() -> None:
    assert lan_interfaces(HOME) == (
        Interface("eth0", ("192.168.1.5", "fd00::5", "2001:db8::5")),
        Interface("wlan0", ("fd12:3456::9",)),
    )


@pytest.mark.parametrize("name", ["lo", "docker0", "br-0a1b2c", "veth1", "virbr0", "tailscale0", "wg0", "zt1", "cali9"])
def test_virtual_names(name: str) -> None:
    assert is_virtual(name)


@pytest.mark.parametrize("name", ["eth0", "enp3s0", "wlan0", "wlp2s0", "br0", "bond0", "eno1"])
def test_real_names(name: str) -> None:
    assert not is_virtual(name)


def test_empty_config_means_the_lan_interfaces() -> None:
    assert choose_interfaces([], adapters=HOME, environ=NO_ENV) == lan_interfaces(HOME)


def test_names_and_addresses_are_chosen_as_configured() -> None:
    chosen = choose_interfaces(["wlan0", "192.168.1.5", "docker0"], adapters=HOME, environ=NO_ENV)
    assert chosen == (
        Interface("wlan0", ("fd12:3456::9",)),
        Interface("eth0", ("192.168.1.5",)),
        Interface("docker0", ("172.17.0.1",)),  # asked for by name: allowed
    )


def test_an_address_no_interface_holds_is_a_pseudo_interface() -> None:
    assert choose_interfaces(["127.0.0.2"], adapters=HOME, environ=NO_ENV) == (Interface("127.0.0.2", ("127.0.0.2",)),)
    assert choose_interfaces(["127.0.0.1"], adapters=HOME, environ=NO_ENV) == (Interface("lo", ("127.0.0.1",)),)


def test_unknown_and_address_less_entries_are_reported_with_what_exists() -> None:
    with pytest.raises(ValueError) as e:
        choose_interfaces(["eth9", "down0", "eth0"], adapters=HOME, environ=NO_ENV)
    message = str(e.value)
    assert 'no interface "eth9"' in message
    assert 'interface "down0" has no IP address' in message
    assert "have: lo 127.0.0.1 ::1, eth0 192.168.1.5" in message


def test_no_lan_interface_at_all_is_reported() -> None:
    with pytest.raises(ValueError, match="no LAN interface found"):
        choose_interfaces([], adapters=[adapter("lo", "127.0.0.1"), adapter("docker0", "172.17.0.1")], environ=NO_ENV)


def test_the_environment_overrides_the_config() -> None:
    env = {ENV_INTERFACES: " 127.0.0.1 , "}
    assert choose_interfaces(["eth0"], adapters=HOME, environ=env) == (Interface("lo", ("127.0.0.1",)),)
    assert choose_interfaces([], adapters=HOME, environ={ENV_INTERFACES: ""}) == lan_interfaces(HOME)


def test_the_test_suite_keeps_mdns_on_loopback() -> None:
    """conftest sets the variable for every test; the real adapters are read."""
    assert choose_interfaces([]) == (Interface("lo", ("127.0.0.1",)),)
    lan_interfaces()  # the real machine's: whatever they are, reading them works


def test_zeroconf_gets_every_ipv4_and_one_ipv6_address_per_interface() -> None:
    chosen = lan_interfaces(HOME)
    assert zeroconf_addresses(chosen) == ["192.168.1.5", "fd00::5", "fd12:3456::9"]
    assert addresses_of(chosen) == ["192.168.1.5", "fd00::5", "2001:db8::5", "fd12:3456::9"]
