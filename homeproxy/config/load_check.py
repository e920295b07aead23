"""`_Checker`: converts one table at a time against its schema, and checks a site's features and TLS."""

from __future__ import annotations

import difflib
import ipaddress
import math
from collections.abc import Mapping
from typing import Any

from homeproxy.config.convert import Schema, _rate, _show
from homeproxy.config.errors import ConfigError, format_key
from homeproxy.config.load_schema import (
    AUTH_KEYS,
    CACHE_KEYS,
    COMPRESSION_KEYS,
    HEADER_RULE_KEYS,
    HEADERS_KEYS,
    RATE_KEYS,
)
from homeproxy.config.model import AuthSettings, CacheSettings, CompressionSettings, HeaderRules, RateLimit
from homeproxy.config.toml_scan import KeyPath


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


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
