"""Hop-by-hop headers (RFC 9110 section 7.6.1), what a proxy never passes on as it is, and the
client address behind trusted proxies (X-Forwarded-For)."""

from __future__ import annotations

import ipaddress

from multidict import CIMultiDict, CIMultiDictProxy

from homeproxy.config.model import ServerSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: RFC 9110 section 7.6.1, plus the non-standard Proxy-Connection.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Header names listed in `Connection` (they are hop-by-hop too)."""
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def forwarded_for(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str:
    """X-Forwarded-For as one list, however many header lines carry it (RFC 9110 section 5.3)."""
    return ", ".join(headers.getall("X-Forwarded-For", ()))


def without_hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """A copy without the hop-by-hop headers and those named in Connection."""
    drop = HOP_BY_HOP | connection_tokens(headers)
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in drop)


def trusted_networks(server: ServerSettings) -> tuple[Network, ...]:
    """`server.trusted_proxies` as networks (their X-Forwarded-For is believed)."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in server.trusted_proxies)


def in_networks(addr: str, networks: tuple[Network, ...]) -> bool:
    """Is `addr` an IP address inside one of `networks`?"""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def ip_key(addr: str) -> str:
    """The address a client connection counts against in per-IP limits: an IPv4 address as is,
    an IPv6 one by its /64 (one host commonly holds a whole /64, and can pick any address in it)."""
    if ":" not in addr:
        return addr
    try:
        ip = ipaddress.IPv6Address(addr.partition("%")[0])
    except ValueError:
        return addr
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def client_ip(peer: str, xff: str, trusted: tuple[Network, ...]) -> str:
    """The first address from the right of X-Forwarded-For that is not a trusted proxy."""
    hops = [h.strip() for h in xff.split(",") if h.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header: fall back to what we know
    return hops[0] if hops else peer
