"""Converters for a site's upstream side: each upstream, the health checks, the error pages.

Each raises ValueError saying what was expected; the loader adds the file, line and key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from homeproxy.config.convert import _bool, _count, _duration, _file_path, _list_of, _show, _str, _upstream
from homeproxy.config.model_upstreams import HealthCheck, PassiveHealth, Upstream

_STATUS_RANGE = re.compile(r"^\s*([1-5]\d\d)\s*(?:-\s*([1-5]\d\d)\s*)?$")


def _keys(v: Mapping[str, Any], valid: tuple[str, ...], what: str) -> None:
    for key in v:
        if key not in valid:
            names = ", ".join(valid)
            raise ValueError(f'{what} has no key "{key}" (it takes {names})')


def _positive(v: Any, most: int) -> int:
    n = _count(v)
    if not 1 <= n <= most:
        raise ValueError(f"expected a whole number from 1 to {most}, got {_show(v)}")
    return n


def upstream_item(v: Any) -> Upstream:
    """`"http://10.0.0.5:8123"` or `{ url = "...", weight = 2, backup = true, max_conns = 50 }`."""
    if not isinstance(v, Mapping):
        return Upstream(_upstream(v))
    _keys(v, ("url", "weight", "backup", "max_conns"), "an upstream table")
    if "url" not in v:
        raise ValueError('an upstream table needs a url, such as { url = "http://10.0.0.5:8123", backup = true }')
    return Upstream(
        url=_upstream(v["url"]),
        weight=_positive(v["weight"], 1000) if "weight" in v else 1,
        backup=_bool(v["backup"]) if "backup" in v else False,
        max_conns=_count(v["max_conns"]) if "max_conns" in v else 0,
    )


upstream_list = _list_of(upstream_item, 'http(s) or mdns:// URLs, or tables such as { url = "...", backup = true }')


def _status_range(v: Any) -> tuple[int, int]:
    """`200`, `"200"`, `"200-399"` -> (low, high)."""
    if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599:
        return int(v), int(v)
    m = _STATUS_RANGE.match(v) if isinstance(v, str) else None
    if m is None or int(m.group(2) or m.group(1)) < int(m.group(1)):
        raise ValueError(f'expected a status code or a range such as 200 or "200-399", got {_show(v)}')
    return int(m.group(1)), int(m.group(2) or m.group(1))


def _probe_path(v: Any) -> str:
    s = _str(v).strip()
    if not s.startswith("/") or any(c in s for c in " \r\n\t\0#"):
        raise ValueError(f'expected a path starting with "/", such as "/healthz", got {_show(v)}')
    return s


def _options(v: Mapping[str, Any], converters: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    """The keys of table `v` that `converters` knows, converted; a bad value names its key."""
    options: dict[str, Any] = {}
    for key, convert in converters.items():
        if key in v:
            try:
                options[key] = convert(v[key])
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
    return options


def health_check(v: Any) -> HealthCheck | None:
    """`true` (the defaults), `false` (off) or a table of options."""
    if isinstance(v, bool):
        return HealthCheck() if v else None
    if not isinstance(v, Mapping):
        raise ValueError(f'expected true, false or a table such as {{ path = "/", interval = "10s" }}, got {_show(v)}')
    _keys(v, ("enabled", "path", "interval", "timeout", "status", "body", "passes", "fails"), "health")
    if "enabled" in v and not _bool(v["enabled"]):
        return None
    converters: dict[str, Callable[[Any], Any]] = {
        "path": _probe_path,
        "interval": _duration,
        "timeout": _duration,
        "status": _status_range,
        "body": _str,
        "passes": lambda x: _positive(x, 100),
        "fails": lambda x: _positive(x, 100),
    }
    return HealthCheck(**_options(v, converters))


def passive_health(v: Any) -> PassiveHealth:
    """`true`, `false` or `{ fails = 3, window = "30s", cooldown = "30s", status_5xx = true }`."""
    if isinstance(v, bool):
        return PassiveHealth(enabled=v)
    if not isinstance(v, Mapping):
        raise ValueError(f'expected true, false or a table such as {{ fails = 3, window = "30s" }}, got {_show(v)}')
    _keys(v, ("enabled", "fails", "window", "cooldown", "status_5xx"), "passive_health")
    converters: dict[str, Callable[[Any], Any]] = {
        "enabled": _bool,
        "fails": lambda x: _positive(x, 1000),
        "window": _duration,
        "cooldown": _duration,
        "status_5xx": _bool,
    }
    return PassiveHealth(**_options(v, converters))


def error_pages(v: Any) -> tuple[tuple[int, str], ...]:
    """`{ 502 = "/srv/pages/502.html", 503 = "..." }` -> ((502, path), ...)."""
    if not isinstance(v, Mapping):
        example = '{ 502 = "/srv/502.html" }'
        raise ValueError(f"expected a table of status codes and files, such as {example}, got {_show(v)}")
    out = []
    for code, path in v.items():
        if not (isinstance(code, str) and code.isdigit() and 400 <= int(code) <= 599):
            raise ValueError(f"expected status codes from 400 to 599 as keys, got {_show(code)}")
        out.append((int(code), _file_path(path)))
    return tuple(sorted(out))


def retries(v: Any) -> int:
    n = _count(v)
    if n > 10:
        raise ValueError(f"expected a whole number from 0 to 10, got {_show(v)}")
    return n


def rewrite_prefix(v: Any) -> str:
    s = _str(v)
    if not s.startswith("/") or any(c in s for c in " \r\n\t\0?#"):
        raise ValueError(f'expected a path starting with "/", such as "/" or "/api/v2/", got {_show(v)}')
    return s


def check_upstreams(upstreams: tuple[Upstream, ...]) -> str:
    """What is wrong with a site's (or route's) list as a whole ("" if nothing)."""
    if upstreams and all(u.backup for u in upstreams):
        return "every upstream is a backup: at least one must not be"
    urls = [u.url for u in upstreams]
    for url in urls:
        if urls.count(url) > 1:
            return f'"{url}" is listed twice'
    return ""
