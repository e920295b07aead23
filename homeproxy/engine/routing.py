"""The compiled, immutable routing table: host -> site -> path route -> handler.

Built once per `Engine.apply()` (never per request) and swapped in whole, so a
request in flight finishes on the table it started with.

Host matching is case-insensitive and ignores the port. Exact names win over
wildcards; `*.example.lan` matches any name ending in `.example.lan` (one or
more labels, not `example.lan` itself), the longest wildcard first. A host that
no site names goes to `[server] default_site` when one is set (and enabled).
Inside a site the longest matching path prefix wins; `/api/` also matches `/api`.
Paths are compared in their normal form (`paths.py`: escapes of letters decoded,
`%2F` and `\\` as `/`, dot segments resolved), never as the client spelled them.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from homeproxy.config.model import Config, Route, Site
from homeproxy.engine.chain import Handler
from homeproxy.engine.paths import match_prefix

if TYPE_CHECKING:
    from homeproxy.engine.upstream import Forwarder

HandlerFactory = Callable[[Site, Route | None], "Handler | tuple[Handler, Forwarder | None]"]
"""A route's handler, or its handler and the forwarder the express lane may use for it."""
PagesLoader = Callable[[Site], Mapping[int, bytes]]


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A path prefix of a site and the chain that serves it."""

    prefix: str
    """In normal form (`paths.match_prefix`); "" for the site's default route."""
    handler: Handler
    express: Forwarder | None = None
    """The route's forwarder when the express lane may take its requests (`engine/express.py`):
    the site has no feature in its chain but the ranges guard."""

    def matches(self, path: str) -> bool:
        p = self.prefix
        return not p or path.startswith(p) or (p.endswith("/") and path == p[:-1])


@dataclass(frozen=True, slots=True)
class CompiledSite:
    """A site with its routes, longest prefix first and the default route last."""

    site: Site
    routes: tuple[CompiledRoute, ...]
    error_pages: Mapping[int, bytes] = field(default_factory=dict, compare=False)
    """The site's own pages by status (`error_pages`), read when the config was applied."""

    def route_for(self, path: str) -> CompiledRoute:
        """The route for a path in normal form (`paths.normalize_path`)."""
        for route in self.routes:
            if route.matches(path):
                return route
        return self.routes[-1]


@functools.lru_cache(maxsize=1024)
def normalize_host(raw: str) -> str:
    """`"Plex.Home.Arpa:8080"` -> `"plex.home.arpa"`; `"[::1]:80"` -> `"[::1]"` (the few a home
    lab sends are kept: this is on every request's path)."""
    host = raw.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and (port.isdigit() or not port):  # "name:" has an empty port (RFC 3986 section 3.2.3)
        host = name
    return host.rstrip(".")


class RoutingTable:
    """Host -> `CompiledSite` lookups."""

    def __init__(self, sites: Iterable[CompiledSite], default: CompiledSite | None = None) -> None:
        self.default = default
        """The site for hosts no site names (`[server] default_site`), or None (404)."""
        self.exact: dict[str, CompiledSite] = {}
        wildcards: list[tuple[str, CompiledSite]] = []
        for cs in sites:
            for host in cs.site.hosts:
                if host.startswith("*."):
                    wildcards.append((host[1:], cs))  # ".example.lan"
                else:
                    self.exact[host] = cs
        self.wildcards = tuple(sorted(wildcards, key=lambda w: -len(w[0])))

    def lookup(self, host: str) -> CompiledSite | None:
        """The site for a normalised host name: the one naming it, else the default site, else None."""
        cs = self.exact.get(host)
        if cs is not None:
            return cs
        for suffix, cs in self.wildcards:
            if host.endswith(suffix):
                return cs
        return self.default

    def names(self, host: str) -> bool:
        """Some site names `host` (exactly or by wildcard): not only the default site answers it."""
        return host in self.exact or any(host.endswith(suffix) for suffix, _ in self.wildcards)

    def https_host(self, compiled: CompiledSite, host: str) -> str:
        """The host a plain-HTTP request for `compiled`, a TLS site, is redirected to on HTTPS, or
        "" to serve it on plain HTTP: without `redirect_to_https`, and for an address, which cannot
        be served over HTTPS, having no SNI. A name no site names (answered by `default_site`) has
        no certificate either: it goes to the default site's first host name, or stays on plain
        HTTP when that site has only wildcards."""
        if not compiled.site.redirect_to_https or is_address(host):
            return ""
        default = self.default
        if default is None or self.names(host):
            return host
        return next((h for h in default.site.hosts if not h.startswith("*.")), "")


@functools.lru_cache(maxsize=256)
def is_address(host: str) -> bool:
    """Is this Host an IP address (no SNI, so never HTTPS)?"""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _no_pages(site: Site) -> Mapping[int, bytes]:
    return {}


def _route(prefix: str, made: Handler | tuple[Handler, Forwarder | None]) -> CompiledRoute:
    if isinstance(made, tuple):
        return CompiledRoute(prefix, made[0], made[1])
    return CompiledRoute(prefix, made)


def compile_table(config: Config, make_handler: HandlerFactory, load_pages: PagesLoader = _no_pages) -> RoutingTable:
    """Compile the enabled sites of `config`; `load_pages` reads a site's `error_pages`."""
    compiled = []
    default = None
    for site in config.sites:
        if not site.enabled:
            continue  # a disabled site is no default site either
        routes = [_route(match_prefix(r.path), make_handler(site, r)) for r in site.routes]
        routes.sort(key=lambda r: -len(r.prefix))
        routes.append(_route("", make_handler(site, None)))
        cs = CompiledSite(site, tuple(routes), load_pages(site) if site.error_pages else {})
        compiled.append(cs)
        if site.name == config.server.default_site:
            default = cs
    return RoutingTable(compiled, default)
