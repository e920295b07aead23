"""Which network interfaces mDNS uses: `lan_interfaces()` and `choose_interfaces()`.

mDNS is link-local multicast: it only reaches the networks of the interfaces
zeroconf joins. By default homeproxy uses the LAN ones (an interface with a
private IPv4 or an IPv6 ULA address), never loopback, container bridges or
VPN tunnels, where announcing a home lab's names would be noise at best.

Interface data comes from `ifaddr` (a zeroconf dependency); the selection
logic takes the adapters as a parameter so it can be tested with plain data.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

ENV_INTERFACES = "HOMEPROXY_MDNS_INTERFACES"
"""Comma-separated interface names or addresses that override `discovery.interfaces`."""

VIRTUAL_PREFIXES: tuple[str, ...] = (
    "docker",
    "br-",
    "veth",
    "virbr",
    "lxcbr",
    "lxdbr",
    "podman",
    "cni",
    "flannel",
    "cali",
    "cilium",
    "weave",
    "kube",
    "vboxnet",
    "vmnet",
    "tailscale",
    "nordlynx",
    "wg",
    "tun",
    "tap",
    "utun",
    "zt",
)
"""Name prefixes of container, VM-host and VPN interfaces, never chosen automatically."""


@dataclass(frozen=True, slots=True)
class Interface:
    """A network interface as mDNS uses it."""

    name: str
    """`"eth0"`; for an address that no interface holds, the address itself."""
    addresses: tuple[str, ...]
    """The IP addresses to use on it, IPv4 first (IPv6 link-local ones are left out)."""

    def __str__(self) -> str:
        return f"{self.name} ({', '.join(self.addresses)})" if self.addresses else self.name


class _IP(Protocol):
    @property
    def ip(self) -> str | tuple[str, int, int]: ...


class Adapter(Protocol):
    """What `ifaddr.Adapter` offers that is used here."""

    @property
    def name(self) -> str: ...

    @property
    def ips(self) -> Sequence[_IP]: ...


def _adapters(adapters: Iterable[Adapter] | None) -> list[Adapter]:
    if adapters is not None:
        return list(adapters)
    import ifaddr

    return list(ifaddr.get_adapters())


def _addresses(adapter: Adapter) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for ip in adapter.ips:
        text = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
        try:
            out.append(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            continue
    return out


def _usable(addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> tuple[str, ...]:
    """IPv4 first, then IPv6; IPv6 link-local left out (zeroconf joins IPv6 by interface index anyway)."""
    v4 = [str(a) for a in addresses if a.version == 4]
    v6 = [str(a) for a in addresses if a.version == 6 and not a.is_link_local]
    return tuple(dict.fromkeys([*v4, *v6]))


def _is_lan(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An RFC 1918 private IPv4 or an IPv6 unique-local (RFC 4193) address."""
    if a.version == 6:
        return a in _ULA
    return any(a in net for net in _RFC1918)


_ULA = ipaddress.ip_network("fc00::/7")
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def is_virtual(name: str) -> bool:
    """A loopback, container, VM-host or VPN interface, by its name."""
    n = name.lower()
    return n == "lo" or n.startswith("lo:") or n.startswith(VIRTUAL_PREFIXES)


def lan_interfaces(adapters: Iterable[Adapter] | None = None) -> tuple[Interface, ...]:
    """The LAN interfaces: a private IPv4 or an IPv6 ULA address, not loopback or virtual.

    Each keeps its IPv4 addresses and its non-link-local IPv6 ones (global ones
    too: a LAN with an ISP prefix announces those as well).
    """
    found: list[Interface] = []
    for adapter in _adapters(adapters):
        if is_virtual(adapter.name):
            continue
        addrs = _addresses(adapter)
        if any(a.is_loopback for a in addrs) or not any(_is_lan(a) for a in addrs):
            continue
        # An IPv4 link-local (169.254/16) address beside a private one is of no use to announce.
        usable = tuple(a for a in _usable(addrs) if not ipaddress.ip_address(a).is_link_local)
        if usable:
            found.append(Interface(adapter.name, usable))
    return tuple(found)


def configured_interfaces(configured: Sequence[str], environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The interface entries in force: `HOMEPROXY_MDNS_INTERFACES` if set, else `configured`."""
    env = (os.environ if environ is None else environ).get(ENV_INTERFACES, "")
    if env.strip():
        return tuple(p.strip() for p in env.split(",") if p.strip())
    return tuple(configured)


def choose_interfaces(
    configured: Sequence[str],
    *,
    adapters: Iterable[Adapter] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Interface, ...]:
    """The interfaces mDNS should use.

    `configured` holds interface names (`"eth0"`) or IP addresses
    (`"192.168.1.5"`); empty means `lan_interfaces()`. An address that no
    interface holds is used as given (zeroconf accepts addresses), as a
    pseudo-interface named by the address.

    The environment variable `HOMEPROXY_MDNS_INTERFACES` (comma-separated
    names or addresses), when set, overrides the configuration: it is meant
    for tests (`127.0.0.1`, so mDNS never leaves the machine) and for
    containers, where the LAN interface is not the one a host would pick.

    Raises ValueError naming every unknown or address-less entry and the
    interfaces that exist, or saying that no LAN interface was found.
    """
    entries = configured_interfaces(configured, environ)
    all_adapters = _adapters(adapters)
    if not entries:
        found = lan_interfaces(all_adapters)
        if not found:
            raise ValueError(
                "no LAN interface found for mDNS (one with a private IPv4 or IPv6 ULA address); "
                f"set discovery.interfaces (have: {_describe(all_adapters)})"
            )
        return found
    chosen: list[Interface] = []
    problems: list[str] = []
    for entry in entries:
        try:
            ip = ipaddress.ip_address(entry.split("%", 1)[0])
        except ValueError:
            ip = None
        if ip is not None:
            holder = next((a for a in all_adapters if ip in _addresses(a)), None)
            chosen.append(Interface(holder.name if holder is not None else str(ip), (str(ip),)))
            continue
        adapter = next((a for a in all_adapters if a.name == entry), None)
        if adapter is None:
            problems.append(f'no interface "{entry}"')
            continue
        usable = _usable(_addresses(adapter))
        if not usable:
            problems.append(f'interface "{entry}" has no IP address')
            continue
        chosen.append(Interface(adapter.name, usable))
    if problems:
        raise ValueError(f"mDNS interfaces: {'; '.join(problems)} (have: {_describe(all_adapters)})")
    return _merge(chosen)


def _merge(interfaces: Iterable[Interface]) -> tuple[Interface, ...]:
    """One entry per interface name, addresses in order and deduplicated."""
    merged: dict[str, list[str]] = {}
    for i in interfaces:
        merged.setdefault(i.name, []).extend(i.addresses)
    return tuple(Interface(n, tuple(dict.fromkeys(a))) for n, a in merged.items())


def _describe(adapters: Iterable[Adapter]) -> str:
    parts = []
    for a in adapters:
        addrs = _usable(_addresses(a))
        parts.append(f"{a.name} {' '.join(addrs)}".strip())
    return ", ".join(parts) or "none"


def zeroconf_addresses(interfaces: Iterable[Interface]) -> list[str]:
    """The `interfaces=` list for `AsyncZeroconf`: every IPv4 address, and one IPv6 address per
    interface (zeroconf joins IPv6 multicast by interface index, once per interface)."""
    out: list[str] = []
    for i in interfaces:
        out.extend(a for a in i.addresses if ":" not in a)
        v6 = [a for a in i.addresses if ":" in a]
        if v6:
            out.append(v6[0])
    return list(dict.fromkeys(out))


def addresses_of(interfaces: Iterable[Interface]) -> list[str]:
    """Every address of `interfaces`, IPv4 first (what a host name announcement answers with)."""
    all_ = [a for i in interfaces for a in i.addresses]
    return list(dict.fromkeys([*(a for a in all_ if ":" not in a), *(a for a in all_ if ":" in a)]))
