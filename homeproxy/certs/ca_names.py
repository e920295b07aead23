"""The root's name constraints: the names and addresses it may vouch for, and the names outside them."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cryptography import x509

#: The DNS suffixes the root may vouch for (`homeproxy.certs.ca`'s docstring says why).
PERMITTED_SUFFIXES = ("home.arpa", "internal", "local", "lan", "home", "localdomain", "localhost", "test")
#: The address ranges the root may vouch for (RFC 1918, RFC 6598 CGNAT, loopback, link-local, ULA).
PERMITTED_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
)

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_name(name: str) -> str:
    """A host as it goes into a certificate: trimmed, lower case, no trailing dot, IDNA A-labels."""
    out = name.strip().rstrip(".").lower()
    if not out:
        raise ValueError("an empty name cannot be in a certificate")
    if not out.isascii():
        out = out.encode("idna").decode("ascii")
    return out


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def _allowed(name: str, suffixes: Sequence[str], networks: Sequence[_Net]) -> bool:
    """RFC 5280 4.2.1.10: a permitted list of a type constrains only names of that type."""
    ip = _ip(name)
    if ip is not None:
        return not networks or any(ip.version == n.version and ip in n for n in networks)
    if not suffixes:
        return True
    return any(name == s or name.endswith("." + s) for s in suffixes)


def names_outside(names: Sequence[str]) -> list[str]:
    """The names a new homeproxy root (`PERMITTED_SUFFIXES` and `PERMITTED_NETWORKS`) cannot vouch for."""
    nets = [ipaddress.ip_network(n) for n in PERMITTED_NETWORKS]
    return [n for n in names if not _allowed(normalize_name(n), PERMITTED_SUFFIXES, nets)]


def _constraints_of(root: x509.Certificate) -> tuple[tuple[str, ...], tuple[_Net, ...]]:
    try:
        ext = root.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return (), ()
    permitted = ext.permitted_subtrees or []
    suffixes = tuple(g.value.lstrip(".").lower() for g in permitted if isinstance(g, x509.DNSName))
    nets = tuple(g.value for g in permitted if isinstance(g, x509.IPAddress) and not isinstance(g.value, str))
    return suffixes, tuple(n for n in nets if isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network))
