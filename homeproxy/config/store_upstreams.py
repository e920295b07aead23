"""The upstream side of a site as TOML (the inverse of `load_upstreams`): short forms first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tomlkit

from homeproxy.config.model_upstreams import HealthCheck, PassiveHealth, Upstream

Duration = Callable[[float], Any]


def upstream_list(upstreams: tuple[Upstream, ...]) -> Any:
    """A URL for a plain upstream, an inline table for one with options."""
    out = tomlkit.array()
    for u in upstreams:
        if u == Upstream(u.url):
            out.append(u.url)
            continue
        table = tomlkit.inline_table()
        table["url"] = u.url
        if u.weight != 1:
            table["weight"] = u.weight
        if u.backup:
            table["backup"] = True
        if u.max_conns:
            table["max_conns"] = u.max_conns
        out.append(table)
    return out


def health_value(health: HealthCheck, duration: Duration) -> Any:
    """`true` for the defaults, else an inline table of what differs."""
    default = HealthCheck()
    if health == default:
        return True
    table = tomlkit.inline_table()
    for name in ("path", "interval", "timeout", "status", "body", "passes", "fails"):
        value = getattr(health, name)
        if value == getattr(default, name):
            continue
        if name in ("interval", "timeout"):
            value = duration(value)
        elif name == "status":
            low, high = value
            value = low if low == high else f"{low}-{high}"
        table[name] = value
    return table


def passive_value(passive: PassiveHealth, duration: Duration) -> Any:
    default = PassiveHealth()
    if passive == PassiveHealth(enabled=passive.enabled):
        return passive.enabled
    table = tomlkit.inline_table()
    for name in ("enabled", "fails", "window", "cooldown", "status_5xx"):
        value = getattr(passive, name)
        if value != getattr(default, name):
            table[name] = duration(value) if name in ("window", "cooldown") else value
    return table


def error_pages_value(pages: tuple[tuple[int, str], ...]) -> Any:
    table = tomlkit.inline_table()
    for code, path in pages:
        table[str(code)] = path
    return table


def upstream_side_value(value: Any, duration: Duration) -> Any:
    """The TOML for one of the upstream side's values, or None if `value` is none of them."""
    if isinstance(value, HealthCheck):
        return health_value(value, duration)
    if isinstance(value, PassiveHealth):
        return passive_value(value, duration)
    if isinstance(value, tuple) and value and isinstance(value[0], Upstream):
        return upstream_list(value)
    return None
