"""`_build`: the parsed document, table by table, into a `Config`, with the checks across tables and sites."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from homeproxy.config import load_upstreams as upstreams
from homeproxy.config.convert import _show
from homeproxy.config.errors import ConfigInvalid
from homeproxy.config.load_check import _Checker
from homeproxy.config.load_schema import (
    DEFAULTS_KEYS,
    DISCOVERY_KEYS,
    LOGGING_KEYS,
    METRICS_KEYS,
    ROUTE_KEYS,
    SERVER_KEYS,
    SHARED_CACHE_KEYS,
    SITE_KEYS,
    TLS_KEYS,
    TOP_KEYS,
    TUI_KEYS,
)
from homeproxy.config.model import (
    Config,
    DiscoverySettings,
    LoggingSettings,
    MetricsSettings,
    Route,
    ServerSettings,
    SharedCacheSettings,
    Site,
    SiteDefaults,
    TlsSettings,
    TuiSettings,
)
from homeproxy.config.toml_scan import KeyPath
from homeproxy.keymap import BINDING_IDS, key_problem


def _build(c: _Checker, data: Mapping[str, Any]) -> Config:
    for key in data:
        if key not in TOP_KEYS:
            c.unknown((key,), key, TOP_KEYS)
    server_values = c.table(data.get("server", {}), ("server",), SERVER_KEYS)
    listen = server_values.get("listen")
    if listen is not None and not listen:
        c.error(("server", "listen"), 'expected at least one address, such as "0.0.0.0"')
    elif listen is not None and len(set(listen)) != len(listen):
        c.error(("server", "listen"), "an address is listed twice")
    server = ServerSettings(**server_values)
    shared_cache = SharedCacheSettings(**c.table(data.get("cache", {}), ("cache",), SHARED_CACHE_KEYS))
    defaults = SiteDefaults(**c.table(data.get("defaults", {}), ("defaults",), DEFAULTS_KEYS))
    log_values = c.table(data.get("logging", {}), ("logging",), LOGGING_KEYS)
    if "access_log" in log_values:
        log_values["access_log"], log_values["access_log_path"] = log_values["access_log"]
    logging = LoggingSettings(**log_values)
    disc_values = c.table(data.get("discovery", {}), ("discovery",), DISCOVERY_KEYS)
    if disc_values.get("max_services") == 0:
        c.error(("discovery", "max_services"), "expected at least 1")
    discovery = DiscoverySettings(**disc_values)
    tls = TlsSettings(**c.table(data.get("tls", {}), ("tls",), TLS_KEYS))
    metrics = MetricsSettings(**c.table(data.get("metrics", {}), ("metrics",), METRICS_KEYS))
    _check_admin_port(c, metrics, server)
    tui = _tui(c, data.get("tui", {}))

    raw_sites = data.get("sites", [])
    sites: list[Site] = []
    if not isinstance(raw_sites, list):
        c.error(("sites",), "expected an array of tables ([[sites]]), got " + _show(raw_sites))
        raw_sites = []
    names: dict[str, int] = {}
    owners: dict[str, tuple[int, str]] = {}
    for i, raw in enumerate(raw_sites):
        path: KeyPath = ("sites", i)
        redirecting = isinstance(raw, Mapping) and bool(raw.get("redirect"))
        # A redirect site forwards nothing: it needs no upstreams.
        required = ("name", "hosts") if redirecting else ("name", "hosts", "upstreams")
        values = c.table(raw, path, SITE_KEYS, required=required)
        if redirecting:
            values.setdefault("upstreams", ())
        routes: list[Route] = []
        raw_routes = values.pop("routes", None) or []
        if not isinstance(raw_routes, list):
            raw_routes = []  # reported below
        for j, raw_route in enumerate(raw_routes):
            rpath = path + ("routes", j)
            rv = c.table(raw_route, rpath, ROUTE_KEYS, required=("path", "upstreams"))
            if "path" in rv and "upstreams" in rv:
                if any(r.path == rv["path"] for r in routes):
                    c.error(rpath + ("path",), f'path "{rv["path"]}" already has a route in this site')
                if not rv["upstreams"]:
                    c.error(rpath + ("upstreams",), "a route needs at least one upstream URL")
                elif problem := upstreams.check_upstreams(rv["upstreams"]):
                    c.error(rpath + ("upstreams",), problem)
                if rv.get("rewrite") and rv.get("strip_prefix"):
                    c.error(rpath + ("rewrite",), 'use rewrite or strip_prefix, not both (rewrite = "/" strips)')
                routes.append(Route(**rv))
        if isinstance(raw, Mapping) and "routes" in raw and not isinstance(raw["routes"], list):
            c.error(path + ("routes",), "expected an array of tables ([[sites.routes]])")
        c.site_features(values, path)
        name = values.get("name")
        if name is not None:
            if not name.strip():
                c.error(path + ("name",), "a site name cannot be empty")
            elif name in names:
                c.error(path + ("name",), f'site name "{name}" is already used by sites[{names[name]}]')
            else:
                names[name] = i
        hosts = values.get("hosts", ())
        if len(set(hosts)) != len(hosts):
            c.error(path + ("hosts",), "a host name is listed twice")
        for host in hosts:
            if host in owners and owners[host][0] != i:
                j, other = owners[host]
                c.error(path + ("hosts",), f'host "{host}" is already claimed by site "{other}" (sites[{j}])')
            owners.setdefault(host, (i, str(name)))
        if "hosts" in values and not values["hosts"]:
            c.error(path + ("hosts",), "a site needs at least one host name")
        if "upstreams" in values and not values["upstreams"] and not redirecting:
            c.error(path + ("upstreams",), "a site needs at least one upstream URL (or a redirect)")
        elif problem := upstreams.check_upstreams(values.get("upstreams", ())):
            c.error(path + ("upstreams",), problem)
        c.site_tls(values, path, tls.issuer)
        urls = [u.url.lower() for u in (*values.get("upstreams", ()), *(u for r in routes for u in r.upstreams))]
        if values.get("upstream_ca") and not any(u.startswith(("https://", "mdns://")) for u in urls):
            c.warn(path + ("upstream_ca",), "used only for https:// upstreams, and this site has none")
        if {"name", "hosts", "upstreams"} <= values.keys():
            sites.append(Site(routes=tuple(routes), **values))
    if server.default_site and server.default_site not in names:
        c.error(("server", "default_site"), f'no site is named "{server.default_site}"')
    if c.errors:
        raise ConfigInvalid(sorted(c.errors, key=lambda e: e.line or 0))
    return Config(
        server=server,
        logging=logging,
        cache=shared_cache,
        defaults=defaults,
        discovery=discovery,
        tls=tls,
        metrics=metrics,
        tui=tui,
        sites=tuple(sites),
    )


def _check_admin_port(c: _Checker, metrics: MetricsSettings, server: ServerSettings) -> None:
    """The admin listener is its own server: it cannot take an address and port the proxy listens on."""
    address = metrics.address
    if address is None or address[1] == 0:
        return
    wildcard = ("0.0.0.0", "::")
    host = address[0]
    if not (host in wildcard or host in server.listen or any(a in wildcard for a in server.listen)):
        return
    for key in ("http_port", "https_port"):
        if address[1] == getattr(server, key):
            c.error(
                ("metrics", "listen"),
                f"port {address[1]} is the proxy's server.{key}; the metrics listener needs a port of its own",
            )


def _tui(c: _Checker, raw: Any) -> TuiSettings:
    """`[tui]`: the keymap's ids must name a binding and its values must be keys."""
    if not isinstance(raw, Mapping):
        c.error(("tui",), f"expected a table, got {_show(raw)}")
        return TuiSettings()
    for key in raw:
        if key not in TUI_KEYS:
            c.unknown(("tui", key), key, TUI_KEYS)
    keymap: dict[str, str] = {}
    raw_keymap = raw.get("keymap", {})
    if not isinstance(raw_keymap, Mapping):
        c.error(
            ("tui", "keymap"),
            f'expected a table of binding ids and keys, such as {{ "sites.add" = "n" }}, got {_show(raw_keymap)}',
        )
        return TuiSettings()
    for parts, value in _flatten(raw_keymap, ()):
        path: KeyPath = ("tui", "keymap", *parts)
        binding = ".".join(parts)
        if binding not in BINDING_IDS:
            close = difflib.get_close_matches(binding, sorted(BINDING_IDS), n=1, cutoff=0.6)
            hint = (
                f' (did you mean "{close[0]}"?)'
                if close
                else " (Help lists each screen's keys; the ids are in homeproxy/keymap.py)"
            )
            c.error(path, "no binding has this id" + hint)
        elif not isinstance(value, str):
            c.error(path, f'expected a key as a string, such as "ctrl+k", got {_show(value)}')
        elif (problem := key_problem(value)) is not None:
            c.error(path, problem)
        else:
            keymap[binding] = ",".join(k.strip() for k in value.split(","))
    return TuiSettings(keymap=tuple(sorted(keymap.items())))


def _flatten(table: Mapping[str, Any], parts: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """A keymap's entries: `sites.add = "n"` (a dotted key, so nested tables in TOML) and
    `"sites.add" = "n"` (one quoted key) both give the id `sites.add`."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.extend(_flatten(value, (*parts, key)))
        else:
            out.append(((*parts, key), value))
    return out
