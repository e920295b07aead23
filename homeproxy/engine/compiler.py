"""`compile_routes`: a config into the routing table, each route's handler its site's chain around its terminal."""

from __future__ import annotations

from collections.abc import Callable

from homeproxy.config.model import Config, Route, Site
from homeproxy.engine.chain import Handler, Middleware, compose
from homeproxy.engine.features import FeatureContext, build_middlewares, forwards_as_is
from homeproxy.engine.pages import load_error_pages
from homeproxy.engine.routing import RoutingTable, compile_table
from homeproxy.engine.site_answers import site_answer
from homeproxy.engine.upstream import Forwarder, Resolver, UpstreamClient


def express_ok(site: Site) -> bool:
    """May the express lane (`express.py`) take this site's plain requests? Only when its chain is
    the ranges guard alone and its answer needs nothing the lane leaves out (the `cookie` policy)."""
    return forwards_as_is(site) and site.balance != "cookie"


def compile_routes(
    config: Config, ctx: FeatureContext, client: UpstreamClient, resolver: Resolver, clock: Callable[[], float]
) -> RoutingTable:
    """The routing table for `config` (compiled in the caller's thread, off the loop)."""
    ctx.cache_header = config.cache.header
    if ctx.cache is None and any(s.cache.enabled for s in config.sites):
        from homeproxy.engine.features.cache import SharedCache

        ctx.cache = SharedCache(config.cache.max_bytes, clock=clock)
    elif ctx.cache is not None:
        ctx.cache.resize(config.cache.max_bytes)
    # One chain per site, shared by its routes (a site's rate limit and cache are the site's).
    chains: dict[str, list[Middleware]] = {}
    client.health.begin()

    def make_handler(site: Site, route: Route | None) -> tuple[Handler, Forwarder | None]:
        if site.name not in chains:
            chains[site.name] = build_middlewares(site, ctx)
        terminal = site_answer(site) or Forwarder(client, site, route, resolver=resolver)
        express = terminal if isinstance(terminal, Forwarder) and express_ok(site) else None
        return compose(chains[site.name], terminal), express

    return compile_table(config, make_handler, load_error_pages)
