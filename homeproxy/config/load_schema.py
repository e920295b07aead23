"""The loader's schemas: each table's keys and the converter of each (and the converters only one table uses)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from homeproxy.config import load_upstreams as upstreams
from homeproxy.config.convert import (
    Schema,
    _bool,
    _choice,
    _cidr,
    _count,
    _domain,
    _duration,
    _file_path,
    _header_name,
    _header_value,
    _host,
    _http_url,
    _level,
    _list_of,
    _listen,
    _path_prefix,
    _port,
    _rate,
    _show,
    _size,
    _split_http_url,
    _str,
)
from homeproxy.config.model import (
    ACCESS_LOG_FORMATS,
    ACME_DIRECTORIES,
    BALANCE_POLICIES,
    ISSUERS,
    split_host_port,
)
from homeproxy.discovery.service import normalize_type
from homeproxy.passwords import is_hash

SERVER_KEYS: Schema = {
    "listen": _list_of(_listen, "addresses"),
    "http_port": _port,
    "https_port": _port,
    "trusted_proxies": _list_of(_cidr, "networks"),
    "drain_timeout": _duration,
    "default_site": _str,
    "max_request_line": _size,
    "max_header_size": _size,
    "max_headers": _count,
    "client_header_timeout": _duration,
    "client_body_timeout": _duration,
    "send_timeout": _duration,
    "keepalive_timeout": _duration,
    "max_connections": _count,
    "max_connections_per_ip": _count,
}


def _email(v: Any) -> str:
    s = _str(v).strip()
    if s and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", s):
        raise ValueError(f'expected an e-mail address such as "you@example.com", got {_show(v)}')
    return s


def _acme_directory(v: Any) -> str:
    s = _str(v).strip()
    if s in ACME_DIRECTORIES:
        return s
    parts = urlsplit(s)
    if parts.scheme != "https" or not parts.netloc:
        names = ", ".join(f'"{n}"' for n in ACME_DIRECTORIES)
        raise ValueError(f"expected {names} or an https:// directory URL, got {_show(v)}")
    return s


def _access_log(v: Any) -> tuple[bool, str]:
    """`true` | `false` | `"off"` | a file path -> (enabled, path)."""
    if isinstance(v, bool):
        return v, ""
    if isinstance(v, str) and v.strip():
        s = v.strip()
        return (False, "") if s.lower() == "off" else (True, s)
    raise ValueError(f'expected true, false, "off" or a file path, got {_show(v)}')


LOGGING_KEYS: Schema = {
    "access_log": _access_log,
    "max_bytes": _size,
    "keep_files": _count,
    "level": _level,
    "access_log_format": lambda v: _choice(v, ACCESS_LOG_FORMATS),
}


def _admin_listen(v: Any) -> str:
    """`""` (off) or `"host:port"`, as `[metrics] listen` takes it."""
    s = _str(v).strip()
    if s:
        split_host_port(s)  # raises ValueError saying what was expected
    return s


def _redirect_url(v: Any) -> str:
    """Where a redirect site sends its visitors: an http(s) URL without a query or fragment."""
    s, parts = _split_http_url(v, "https://example.org")
    if parts.query or parts.fragment:
        raise ValueError(f"a redirect URL takes no query or fragment (the request's are kept), got {_show(v)}")
    return s.rstrip("/")


def _redirect_code(v: Any) -> int:
    if isinstance(v, bool) or v not in (301, 302, 307, 308):
        raise ValueError(f"expected 301, 302, 307 or 308, got {_show(v)}")
    return int(v)


METRICS_KEYS: Schema = {"listen": _admin_listen}
ROUTE_KEYS: Schema = {
    "path": _path_prefix,
    "upstreams": upstreams.upstream_list,
    "strip_prefix": _bool,
    "rewrite": upstreams.rewrite_prefix,
}
SITE_KEYS: Schema = {
    "name": _str,
    "hosts": _list_of(_host, "host names"),
    "upstreams": upstreams.upstream_list,
    "routes": lambda v: v,  # checked item by item below
    "enabled": _bool,
    "websockets": _bool,
    "preserve_host": _bool,
    "connect_timeout": _duration,
    "read_timeout": _duration,
    "header_timeout": _duration,
    "retries": upstreams.retries,
    "retry_idempotent": _bool,
    "retry_deadline": _duration,
    "health": upstreams.health_check,
    "passive_health": upstreams.passive_health,
    "upstream_ca": _file_path,
    "upstream_sni": lambda v: _host(v) if v else "",
    "max_body": lambda v: 0 if v in (0, "0") else _size(v),
    "error_pages": upstreams.error_pages,
    "upstream_keepalive": _duration,
    "balance": lambda v: _choice(v, BALANCE_POLICIES),
    "maintenance": _bool,
    "redirect": _redirect_url,
    "redirect_code": _redirect_code,
    "keep_path": _bool,
    "allow": _list_of(_cidr, "networks"),
    "deny": _list_of(_cidr, "networks"),
    # The tables below are checked key by key in _Checker.site_features.
    "auth": lambda v: v,
    "rate_limit": lambda v: v,
    "headers": lambda v: v,
    "cache": lambda v: v,
    "compression": lambda v: v,
    "verify_upstream": _bool,
    "publish": _bool,
    "tls": _bool,
    "issuer": lambda v: _choice(v, ISSUERS),
    "cert": _file_path,
    "key": _file_path,
    "redirect_to_https": _bool,
    "access_log": _bool,
}
TLS_KEYS: Schema = {
    "issuer": lambda v: _choice(v, ISSUERS),
    "serve_root": _bool,
    "acme_email": _email,
    "acme_directory": _acme_directory,
    "acme_ca_bundle": _file_path,
}
SHARED_CACHE_KEYS: Schema = {"max_bytes": _size, "header": lambda v: _header_name(v, allow_empty=True)}
DEFAULTS_KEYS: Schema = {
    "websockets": _bool,
    "compression": _bool,
    "cache": _bool,
    "connect_timeout": _duration,
    "read_timeout": _duration,
}
DISCOVERY_KEYS: Schema = {
    "browse": _bool,
    "service_types": _list_of(normalize_type, "service types"),
    "browse_all_types": _bool,
    "publish_hostnames": _bool,
    "advertise": _bool,
    "interfaces": _list_of(lambda v: _listen(v), "interface names or addresses"),
    "domain": _domain,
    "max_services": _count,
}
TOP_KEYS = ("server", "logging", "cache", "defaults", "discovery", "tls", "sites", "metrics", "tui")
TUI_KEYS = ("keymap",)


def _header_map(v: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, Mapping):
        raise ValueError(
            f'expected a table of header names and values, such as {{ "X-Robots-Tag" = "none" }}, got {_show(v)}'
        )
    return tuple((_header_name(k), _header_value(x)) for k, x in v.items())


def _media_type(v: Any) -> str:
    s = _str(v).strip().lower()
    if not re.match(r"^[a-z0-9*][a-z0-9.+*-]*/[a-z0-9*][a-z0-9.+*-]*$", s):
        raise ValueError(f'expected a media type such as "text/*" or "application/json", got {_show(v)}')
    return s


def _algorithm(v: Any) -> str:
    s = _str(v).strip().lower()
    if s not in ("br", "zstd", "gzip"):
        raise ValueError(f'expected "br", "zstd" or "gzip", got {_show(v)}')
    return s


def _users(v: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, Mapping):
        raise ValueError(
            f'expected a table of user names and password hashes, such as {{ alice = "scrypt$..." }}, got {_show(v)}'
        )
    out = []
    for name, hashed in v.items():
        if not name or ":" in name:
            raise ValueError(f'user name {_show(name)} cannot be empty or contain ":"')
        if not isinstance(hashed, str) or not is_hash(hashed):
            raise ValueError(
                f'the password of "{name}" must be a hash made by `homeproxy passwd` (scrypt$...), '
                "never the password itself"
            )
        out.append((str(name), str(hashed)))
    return tuple(out)


CACHE_KEYS: Schema = {
    "enabled": _bool,
    "max_bytes": _size,
    "max_entry_bytes": _size,
    "default_ttl": lambda v: 0.0 if v in (0, "0", "0s") else _duration(v),
    "cookies": _bool,
    "stale_on_error": lambda v: 0.0 if v in (0, "0", "0s") else _duration(v),
}
COMPRESSION_KEYS: Schema = {
    "enabled": _bool,
    "min_bytes": _count,
    "types": _list_of(_media_type, "media types"),
    "algorithms": _list_of(_algorithm, "codings"),
}
AUTH_KEYS: Schema = {
    "mode": lambda v: _choice(v, ("basic", "login", "forward")),
    "users": _users,
    "realm": _header_value,
    "pass_authorization": _bool,
    "bypass": _list_of(_cidr, "networks"),
    "forward": _http_url,
    "forward_headers": _list_of(_header_name, "header names"),
    "cookie_domain": lambda v: _host(v) if v else "",
    "session_ttl": _duration,
}
RATE_KEYS: Schema = {"rate": _rate, "burst": _count}
HEADERS_KEYS: Schema = {"security": _bool, "request": lambda v: v, "response": lambda v: v}
HEADER_RULE_KEYS: Schema = {"set": _header_map, "remove": _list_of(_header_name, "header names")}
