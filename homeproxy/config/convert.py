"""Value converters for the config loader: each takes a parsed TOML value and returns the
model's value, or raises ValueError saying what was expected (the loader adds file, line and key)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

from homeproxy.discovery.service import is_mdns_ref, parse_mdns_ref

Schema = dict[str, Callable[[Any], Any]]
"""A table's keys and the converter of each."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)


_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError(f"expected true or false, got {_show(v)}")


def _str(v: Any) -> str:
    if isinstance(v, str):
        return str(v)
    raise ValueError(f"expected a string, got {_show(v)}")


def _port(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected a port number (1-65535, or 0 for any free port), got {_show(v)}")
    if not 0 <= v <= 65535:
        raise ValueError(f"port {int(v)} is out of range: expected 1-65535 (or 0 for any free port)")
    return int(v)


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a whole number >= 0, got {_show(v)}")
    return int(v)


def _duration(v: Any) -> float:
    """`10`, `2.5`, `"500ms"`, `"10s"`, `"2m"`, `"1h"` -> seconds."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        secs = float(v)
    elif isinstance(v, str) and (m := _DURATION.match(v)):
        secs = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    else:
        raise ValueError(f'expected a duration such as 10, "500ms", "30s", "2m" or "7d", got {_show(v)}')
    if not math.isfinite(secs):
        raise ValueError(f"expected a finite duration, got {_show(v)}")
    if secs <= 0:
        raise ValueError(f"expected a duration above zero, got {_show(v)}")
    return secs


def _size(v: Any) -> int:
    """`1048576`, `"10MiB"`, `"500KB"` -> bytes."""
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return int(v)
    if isinstance(v, str) and (m := _SIZE.match(v)) and int(m.group(1)) > 0:
        return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    raise ValueError(f'expected a size such as 1048576, "512KiB" or "10MiB", got {_show(v)}')


def _level(v: Any) -> str:
    s = _str(v).lower()
    if s not in ("debug", "info", "warning", "error"):
        raise ValueError(f'expected one of "debug", "info", "warning", "error", got {_show(v)}')
    return s


def _list_of(item: Callable[[Any], Any], what: str) -> Callable[[Any], tuple[Any, ...]]:
    def convert(v: Any) -> tuple[Any, ...]:
        if isinstance(v, str):
            v = [v]  # a single value where a list is expected is forgiven
        if not isinstance(v, list):
            raise ValueError(f"expected a list of {what}, got {_show(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except ValueError as e:
                raise ValueError(f"item {i + 1}: {e}") from None
        return tuple(out)

    return convert


def _split_http_url(v: Any, example: str) -> tuple[str, SplitResult]:
    """The stripped text of an http(s) URL with a host and a valid port, and its parts."""
    s = _str(v).strip()
    try:
        parts = urlsplit(s)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f'expected an http(s) URL such as "{example}", got {_show(v)}') from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f'expected an http(s) URL such as "{example}", got {_show(v)}')
    return s, parts


def _upstream(v: Any) -> str:
    if isinstance(v, str) and is_mdns_ref(v):
        return str(parse_mdns_ref(v))
    s, parts = _split_http_url(v, "http://192.168.1.20:8123")
    if parts.query or parts.fragment:
        raise ValueError(f"an upstream URL takes no query or fragment, got {_show(v)}")
    return s.rstrip("/")


def _host(v: Any) -> str:
    s = _str(v).strip().lower().rstrip(".")
    name = s[2:] if s.startswith("*.") else s
    labels = name.split(".")
    if not name or not all(_HOST_LABEL.match(lbl) for lbl in labels):
        raise ValueError(f'expected a host name such as "plex.home.arpa" or "*.home.arpa", got {_show(v)}')
    return s


def _cidr(v: Any) -> str:
    try:
        return str(ipaddress.ip_network(_str(v).strip(), strict=False))
    except ValueError:
        raise ValueError(f'expected an IP network such as "192.168.0.0/16" or "fd00::/8", got {_show(v)}') from None


def _listen(v: Any) -> str:
    s = _str(v).strip()
    if not s:
        raise ValueError('expected an address such as "0.0.0.0", "::" or "127.0.0.1"')
    return s


def _domain(v: Any) -> str:
    s = _str(v).strip().lower().strip(".")
    if not s or not all(_HOST_LABEL.match(lbl) for lbl in s.split(".")):
        raise ValueError(f'expected a domain such as "home.arpa" or "lan", got {_show(v)}')
    return s


def _path_prefix(v: Any) -> str:
    s = _str(v)
    if not s.startswith("/"):
        raise ValueError(f'expected a path starting with "/", such as "/api/", got {_show(v)}')
    return s


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, Mapping):
        return "a table"
    if isinstance(v, list):
        return "a list"
    return repr(v)


def _file_path(v: Any) -> str:
    s = _str(v).strip()
    if "\x00" in s:
        raise ValueError("expected a file path")
    return s


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")


def _header_name(v: Any, *, allow_empty: bool = False) -> str:
    s = _str(v).strip()
    if (allow_empty and not s) or _TOKEN.match(s):
        return s
    raise ValueError(f'expected a header name such as "X-Frame-Options", got {_show(v)}')


def _header_value(v: Any) -> str:
    s = _str(v)
    if "\r" in s or "\n" in s or "\0" in s:
        raise ValueError("a header value cannot contain line breaks or NUL")
    return s


def _rate(v: Any) -> float:
    """`"20/s"`, `"600/m"`, `"1000/h"` -> requests per second."""
    m = _RATE.match(v) if isinstance(v, str) else None
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f'expected a rate such as "20/s", "600/m" or "1000/h", got {_show(v)}')
    return float(m.group(1)) / {"s": 1, "m": 60, "h": 3600}[m.group(2)[0]]


def _http_url(v: Any) -> str:
    """An http(s) URL that may carry a query (Authelia's `?rd=`), unlike an upstream."""
    s, parts = _split_http_url(v, "http://authelia:9091/api/verify")
    if parts.fragment:
        raise ValueError(f"a URL sent to a server takes no fragment, got {_show(v)}")
    return s


def _choice(v: Any, options: tuple[str, ...]) -> str:
    s = _str(v).strip().lower()
    if s not in options:
        raise ValueError("expected one of " + ", ".join(f'"{o}"' for o in options) + f", got {_show(v)}")
    return s
