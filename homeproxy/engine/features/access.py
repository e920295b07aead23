"""allow / deny: who may reach a site at all, by client network. First in the chain.

The client is `Exchange.client`: the socket peer, or the address a configured
trusted proxy forwarded for. `deny` wins over `allow`; with `allow` set, only
its networks are served. A refused client gets the 403 page and nothing else
(not even whether the site has a login).

IPv4-mapped IPv6 clients (`::ffff:192.168.1.7`, what a dual-stack listener
reports for IPv4 peers) are matched as the IPv4 address they are, and a rule
written in mapped form matches the plain IPv4 client too. A client address that
does not parse is refused when any rule is set (fail closed).

`Networks` and `client_address()` are shared with auth's `bypass`; `client_group()` keys auth's
failed logins (an IPv6 /64 is one; the rate limit and the connection cap count by the same key).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.hop import ip_key
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ::ffff:0:0/96, where IPv4-mapped IPv6 addresses live (RFC 4291 section 2.5.5.2).
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def client_address(client: str) -> Address | None:
    """`client` as an address, IPv4-mapped IPv6 unwrapped to IPv4; None if it is not one."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_group(client: str) -> str:
    """The key of the budget a client shares (auth's failed logins): an IPv4 address as it is,
    an IPv6 one by its /64 (`2001:db8:1:2::/64`), since one host commonly holds a whole /64
    (RFC 4291 section 2.5.1; SLAAC, privacy addresses) and can take a fresh address per
    guess. IPv4-mapped addresses count as the IPv4 address; anything else as its raw text."""
    return ip_key(client)  # the same key the server's per-address connection cap counts by


def _network(cidr: str) -> Network:
    net = ipaddress.ip_network(cidr, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}")
    return net


class Networks:
    """A set of CIDRs, built once, asked `client in networks` per request."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, cidrs: Iterable[str]) -> None:
        nets = [_network(c) for c in cidrs]
        self._v4 = tuple(n for n in nets if isinstance(n, ipaddress.IPv4Network))
        self._v6 = tuple(n for n in nets if isinstance(n, ipaddress.IPv6Network))

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

    def contains(self, ip: Address | None) -> bool:
        if isinstance(ip, ipaddress.IPv4Address):
            return any(ip in n for n in self._v4)
        if isinstance(ip, ipaddress.IPv6Address):
            return any(ip in n for n in self._v6)
        return False


def make_access(site: Site, ctx: FeatureContext) -> Middleware:
    """403 for clients in `site.deny`, or outside `site.allow` when it is set."""
    allow = Networks(site.allow)
    deny = Networks(site.deny)

    async def access(ex: Exchange, nxt: Handler) -> Reply:
        ip = client_address(ex.client)
        if ip is None:
            ex.error = "access: client address unknown"
            return error_reply(403, ex.request)
        if deny.contains(ip):
            ex.error = "access: client network denied"
            return error_reply(403, ex.request)
        if allow and not allow.contains(ip):
            ex.error = "access: client network not allowed"
            return error_reply(403, ex.request)
        return await nxt(ex)

    return access
