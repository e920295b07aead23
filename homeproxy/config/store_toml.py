"""Model to TOML: `site_table`, `route_table` and the values in them (durations as people write them, short forms)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import MISSING, fields
from typing import Any

import tomlkit
from tomlkit.items import Table

from homeproxy.config.model import (
    AuthSettings,
    CacheSettings,
    CompressionSettings,
    HeaderRules,
    RateLimit,
    Route,
    Site,
)
from homeproxy.config.store_upstreams import error_pages_value, upstream_side_value


def _duration_text(secs: float) -> str | float:
    """Seconds as people write them ("30s", "500ms", "1.5s"), exactly; else a plain number."""
    if secs.is_integer():
        return f"{int(secs)}s"
    ms = secs * 1000
    if secs < 1 and ms.is_integer():
        return f"{int(ms)}ms"
    text = repr(secs)
    return f"{text}s" if "e" not in text else secs


_DURATION_KEYS = frozenset(
    {
        "connect_timeout",
        "read_timeout",
        "header_timeout",
        "retry_deadline",
        "upstream_keepalive",
        "default_ttl",
        "stale_on_error",
        "session_ttl",
    }
)


def _settings_value(obj: Any) -> Any:
    """A feature's settings as TOML: `true`/`false` when only the switch differs, else an inline table."""
    if isinstance(obj, RateLimit):
        per_second = f"{obj.rate:g}/s"
        if obj.burst == max(1, math.ceil(obj.rate)) and obj.rate == float(f"{obj.rate:g}"):
            return per_second
        table = tomlkit.inline_table()
        table.update({"rate": per_second, "burst": obj.burst})
        return table
    items = dict(_non_default(obj))
    if hasattr(obj, "enabled") and set(items) <= {"enabled"}:
        return bool(obj.enabled)
    if getattr(obj, "enabled", False):
        items.pop("enabled", None)  # a table means on
    elif hasattr(obj, "enabled"):
        items = {"enabled": False, **items}  # off, with options kept for later
    if isinstance(obj, AuthSettings) and items.get("mode") in ("basic", "forward"):
        items.pop("mode")  # inferred from users / forward
    table = tomlkit.inline_table()
    if isinstance(obj, HeaderRules):
        if obj.security:
            table["security"] = True
        for side in ("request", "response"):
            rules = tomlkit.inline_table()
            if items.get(f"{side}_set"):
                rules["set"] = _pairs(items[f"{side}_set"])
            if items.get(f"{side}_remove"):
                rules["remove"] = list(items[f"{side}_remove"])
            if rules:
                table[side] = rules
        return table
    for k, v in items.items():
        table[k] = _pairs(v) if k == "users" else _toml_value(k, v)
    return table


def _pairs(pairs: tuple[tuple[str, str], ...]) -> Any:
    table = tomlkit.inline_table()
    for k, v in pairs:
        table[k] = v
    return table


def _toml_value(key: str, value: Any) -> Any:
    if key in _DURATION_KEYS and isinstance(value, float):
        return _duration_text(value)
    if key == "error_pages":
        return error_pages_value(value)
    upstream_side = upstream_side_value(value, _duration_text)
    if upstream_side is not None:
        return upstream_side
    if isinstance(value, (CacheSettings, CompressionSettings, AuthSettings, RateLimit, HeaderRules)):
        return _settings_value(value)
    if isinstance(value, tuple) and value and isinstance(value[0], Route):
        aot = tomlkit.aot()
        for r in value:
            aot.append(route_table(r))
        return aot
    if isinstance(value, tuple):
        return list(value)
    return value


def _non_default(obj: Any) -> Iterator[tuple[str, Any]]:
    """The fields of a dataclass that are required or differ from their defaults."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        if f.default_factory is not MISSING and value == f.default_factory():
            continue
        yield f.name, value


def site_table(site: Site) -> Table:
    """A `[[sites]]` table for `site`, writing only the keys that differ from the defaults."""
    table = tomlkit.table()
    for key, value in _non_default(site):
        if key == "routes":
            continue
        table[key] = _toml_value(key, value)
    if site.routes:
        table["routes"] = _toml_value("routes", site.routes)
    return table


def route_table(route: Route) -> Table:
    """A `[[sites.routes]]` table for `route`."""
    table = tomlkit.table()
    for key, value in _non_default(route):
        table[key] = _toml_value(key, value)
    return table
