"""TOML text -> `Config`, with errors that name the file, the line and the key.

`parse_config(text, file)` returns a `Config` or raises `ConfigInvalid`
carrying *every* error found (not just the first), each as
`path:line: key.path: what was wrong, what was expected`.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomlkit
import tomlkit.exceptions

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
    AuthSettings,
    CacheSettings,
    CompressionSettings,
    Config,
    DiscoverySettings,
    HeaderRules,
    LoggingSettings,
    MetricsSettings,
    RateLimit,
    Route,
    ServerSettings,
    SharedCacheSettings,
    Site,
    SiteDefaults,
    TlsSettings,
    split_host_port,
)
from homeproxy.config.toml_scan import KeyPath, scan_toml
from homeproxy.discovery.service import normalize_type
from homeproxy.passwords import is_hash


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in a config file."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigInvalid(Exception):
    """A config failed to parse or validate; `errors` lists every problem."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(e) for e in errors))


def format_key(path: KeyPath) -> str:
    """`("sites", 0, "hosts")` -> `sites[0].hosts`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


# --- value converters: each returns the converted value or raises ValueError(expected) ---


# --- the schema: key -> converter, per table ------------------------------------------


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
TOP_KEYS = ("server", "logging", "cache", "defaults", "discovery", "tls", "sites", "metrics")


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


class _Checker:
    """Walks a parsed document, converting values and collecting errors."""

    def __init__(self, file: str, lines: Mapping[KeyPath, int]) -> None:
        self.file = file
        self.lines = lines
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []

    def line_of(self, path: KeyPath) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, path: KeyPath, message: str) -> None:
        self.errors.append(ConfigError(self.file, self.line_of(path), format_key(path), message))

    def table(self, raw: Any, path: KeyPath, schema: Schema, required: tuple[str, ...] = ()) -> dict[str, Any]:
        """Convert one table; unknown keys are errors with a suggestion."""
        if not isinstance(raw, Mapping):
            self.error(path, f"expected a table, got {_show(raw)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in schema:
                self.unknown(path + (key,), key, schema)
                continue
            try:
                out[key] = schema[key](value)
            except ValueError as e:
                self.error(path + (key,), str(e))
        for key in required:
            if key not in raw:
                self.error(path, f'missing required key "{key}"')
        return out

    def switch(self, raw: Any, path: KeyPath, schema: Schema) -> dict[str, Any]:
        """`key = true|false` or a table of options (a table means on unless `enabled = false`)."""
        if isinstance(raw, bool):
            return {"enabled": raw}
        values = self.table(raw, path, schema)
        if isinstance(raw, Mapping):
            values.setdefault("enabled", True)
        return values

    def site_features(self, values: dict[str, Any], path: KeyPath) -> None:
        """Turn the raw feature tables of a site into their settings objects, in place."""
        if "cache" in values:
            values["cache"] = CacheSettings(**self.switch(values["cache"], path + ("cache",), CACHE_KEYS))
        if "compression" in values:
            raw = values["compression"]
            values["compression"] = CompressionSettings(**self.switch(raw, path + ("compression",), COMPRESSION_KEYS))
        if "rate_limit" in values:
            raw, rpath = values.pop("rate_limit"), path + ("rate_limit",)
            if isinstance(raw, str):
                try:
                    rate = _rate(raw)
                    values["rate_limit"] = RateLimit(rate, max(1, math.ceil(rate)))
                except ValueError as e:
                    self.error(rpath, str(e))
            else:
                rv = self.table(raw, rpath, RATE_KEYS, required=("rate",))
                if "rate" in rv:
                    values["rate_limit"] = RateLimit(rv["rate"], rv.get("burst") or max(1, math.ceil(rv["rate"])))
        if "headers" in values:
            hpath = path + ("headers",)
            hv = self.table(values["headers"], hpath, HEADERS_KEYS)
            rules: dict[str, Any] = {"security": hv.get("security", False)}
            for side in ("request", "response"):
                if side in hv:
                    sv = self.table(hv[side], hpath + (side,), HEADER_RULE_KEYS)
                    rules[f"{side}_set"] = sv.get("set", ())
                    rules[f"{side}_remove"] = sv.get("remove", ())
            values["headers"] = HeaderRules(**rules)
        if "auth" in values:
            values["auth"] = self.auth(values["auth"], path + ("auth",))

    def auth(self, raw: Any, path: KeyPath) -> AuthSettings:
        av = self.table(raw, path, AUTH_KEYS)
        given = raw if isinstance(raw, Mapping) else {}
        mode = av.get("mode") or ("forward" if "forward" in given else "basic" if "users" in given else "")
        if not mode:
            if isinstance(raw, Mapping) and "mode" not in given:
                self.error(path, 'expected users (Basic auth or mode = "login") or forward = "http://..."')
        elif mode in ("basic", "login") and not av.get("users") and "users" not in given:
            self.error(path, f'{mode} auth needs at least one user: users = {{ alice = "scrypt$..." }}')
        elif mode == "forward" and not av.get("forward"):
            self.error(path, 'forward auth needs forward = "http://auth-service/verify-path"')
        if mode == "forward" and av.get("users"):
            self.error(path + ("users",), "forward auth takes no users: the auth service decides")
        av["mode"] = mode
        return AuthSettings(**av)

    def site_tls(self, values: dict[str, Any], path: KeyPath, default_issuer: str = "internal") -> None:
        """A site's TLS: both files or neither, only with TLS on; the pair itself (readable, the key
        the leaf's, not expired; hosts it does not cover are warnings); for the local CA, hosts it
        may vouch for."""
        cert, key = values.get("cert", ""), values.get("key", "")
        if bool(cert) != bool(key):
            missing, given = ("key", "cert") if cert else ("cert", "key")
            self.error(path + (given,), f"{given} needs {missing} too: the certificate and its private key")
            return
        if cert and not values.get("tls", False):
            self.error(path + ("cert",), "a certificate is used only with tls = true; add tls = true to the site")
            return
        if not values.get("tls", False) or not values.get("enabled", True):
            return
        hosts: tuple[str, ...] = values.get("hosts", ())
        for host in hosts:
            if _is_address(host):
                self.warn(
                    path + ("hosts",),
                    f'"{host}": a client that connects to an address sends no server name (SNI), so '
                    "homeproxy cannot pick a certificate for it and refuses the HTTPS handshake; reach "
                    "the site by a name (plain HTTP to the address still works)",
                )
        issuer = values.get("issuer") or default_issuer
        if cert:
            self._site_pair(values, path, cert, key, hosts)
        elif issuer == "acme":
            for host in hosts:
                if host.startswith("*."):
                    self.error(
                        path + ("hosts",),
                        f'"{host}": ACME certificates are fetched with the HTTP challenge, which cannot prove a '
                        "wildcard; list the names one by one, or get a wildcard with certbot's DNS plugin and "
                        "set cert and key",
                    )
        elif issuer == "internal":
            from homeproxy.certs.ca import PERMITTED_SUFFIXES, names_outside

            for host in names_outside(hosts):
                self.error(
                    path + ("hosts",),
                    f'"{host}" cannot get a certificate from homeproxy\'s local CA: it only vouches for names '
                    f"under {', '.join('.' + s for s in PERMITTED_SUFFIXES)} and private addresses, so a "
                    'stolen key cannot impersonate other sites. Use issuer = "acme" for a public name, or your '
                    "own cert and key",
                )
            for host in hosts:
                if host.startswith("*.") and "." not in host[2:]:
                    self.error(
                        path + ("hosts",),
                        f'"{host}": TLS clients refuse a wildcard directly under a top-level name; '
                        'use a longer one such as "*.home.arpa"',
                    )

    def _site_pair(self, values: dict[str, Any], path: KeyPath, cert: str, key: str, hosts: tuple[str, ...]) -> None:
        from pathlib import Path

        from homeproxy.certs.pairs import PairError, load_pair, uncovered_hosts

        for k, file in (("cert", cert), ("key", key)):
            try:
                absolute = Path(file).expanduser().is_absolute()
            except RuntimeError:  # "~nobody-here/..."; load_pair names the user
                absolute = True
            if not absolute:
                self.error(
                    path + (k,),
                    f'expected an absolute path (or "~/..."), got {_show(file)}: a relative one would depend on '
                    "the directory homeproxy was started from",
                )
                return
        try:
            pair = load_pair(cert, key)
        except PairError as e:
            self.error(path + (e.key,), f"{e.file}: {e.message}")
            return
        for host in uncovered_hosts(pair, hosts):
            self.warn(
                path + ("hosts",),
                f'the certificate in {cert} does not cover "{host}" (it names {", ".join(pair.names) or "nothing"}); '
                "browsers will refuse that host",
            )

    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append(ConfigError(self.file, self.line_of(path), format_key(path), message))

    def unknown(self, path: KeyPath, key: str, valid: Mapping[str, Any] | tuple[str, ...]) -> None:
        close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
        hint = f'; did you mean "{close[0]}"?' if close else f"; valid keys: {', '.join(valid)}"
        self.error(path, f'unknown key "{key}"{hint}')


def build_config(
    data: Mapping[str, Any],
    file: str = "<config>",
    lines: Mapping[KeyPath, int] | None = None,
    warnings: list[ConfigError] | None = None,
) -> Config:
    """Validate plain TOML data (as parsed) and build the model, or raise `ConfigInvalid`.

    Problems that do not stop the config (a host its own certificate does not cover) are
    appended to `warnings` when given, else logged on the `homeproxy.config` logger.
    """
    c = _Checker(file, lines or {})
    try:
        return _build(c, data)
    finally:
        _report_warnings(c.warnings, warnings)


#: Warnings already logged (bounded): a config parsed again and again (live validation in the
#: site editor, every reload) logs each distinct warning once.
_LOGGED: dict[str, None] = {}
_LOGGED_LOCK = threading.Lock()


def _report_warnings(found: list[ConfigError], out: list[ConfigError] | None) -> None:
    if out is not None:
        out.extend(found)  # the caller reports them (`homeproxy check`, the site editor)
        return
    for w in found:
        text = str(w)
        with _LOGGED_LOCK:
            if text in _LOGGED:
                continue
            _LOGGED[text] = None
            if len(_LOGGED) > 256:
                del _LOGGED[next(iter(_LOGGED))]
        logging.getLogger("homeproxy.config").warning("%s", text)


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


def decode_config(data: bytes, file: str = "<config>") -> str:
    """The file's bytes as text; TOML is UTF-8, anything else is a `ConfigInvalid` naming the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigInvalid(
            [ConfigError(file, line, "", f"not UTF-8 text (byte 0x{data[e.start]:02x}): save the file as UTF-8")]
        ) from None


def parse_config(text: str, file: str = "<config>", warnings: list[ConfigError] | None = None) -> Config:
    """Parse TOML text and build the model, or raise `ConfigInvalid` with every error.

    A key or table defined twice is found by homeproxy's own scanner, so the
    message names the key and both lines whatever the TOML library's wording;
    the standard library's parser confirms the text is invalid before we say so.
    Warnings (the config still loads) go to `warnings` when given, else to the log.
    """
    scan = scan_toml(text)
    if scan.repeats and not _is_valid_toml(text):
        raise ConfigInvalid([ConfigError(file, r.line, format_key(r.path), r.message) for r in scan.repeats])
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as e:
        raise ConfigInvalid([_malformed(text, file, e)]) from None
    return build_config(doc.unwrap(), file, scan.lines, warnings)


def _malformed(text: str, file: str, err: Exception) -> ConfigError:
    """The clearest report of a TOML syntax error.

    tomlkit's messages can be cryptic and some carry no line; the standard
    library's parser always knows the line. Use its line and message.
    """
    line: int | None = getattr(err, "line", None)
    msg = re.sub(r" at line \d+ col \d+$", "", str(err))
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"^(.*) \((?:at line (\d+), column (\d+)|at end of document)\)$", str(e))
        if m:
            line = int(m.group(2)) if m.group(2) else len(text.splitlines()) or 1
            msg = m.group(1) + (f" (column {m.group(3)})" if m.group(3) else " (at the end of the file)")
    return ConfigError(file, line, "", f"malformed TOML: {msg}")


def _is_valid_toml(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def load_file(path: Path, warnings: list[ConfigError] | None = None) -> Config:
    """Read and parse the config file at `path` (OSError if unreadable, ConfigInvalid if invalid)."""
    return parse_config(decode_config(path.read_bytes(), str(path)), str(path), warnings)
