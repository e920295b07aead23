"""Property tests for the config loader and store (issue 14).

- Whatever plain TOML data it is given, the loader returns a `Config` or raises `ConfigInvalid`
  whose every error names a key path: never another exception.
- Any site it accepts is written back by the store (`site_table`) and loads back equal.
"""

from __future__ import annotations

from typing import Any

import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeproxy.config import ConfigInvalid, build_config, parse_config
from homeproxy.config.store import site_table

# Values a person might type (and some they should not): the loader sees these as parsed TOML.
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "http://10.0.0.1:80",
            "https://nas.lan:5001/dsm",
            "mdns://NAS._http._tcp",
            "ftp://x",
            "http://",
            "10s",
            "500ms",
            "0s",
            "20/s",
            "10MB",
            "200-399",
            "*.home.arpa",
            "a.lan",
            "/",
            "/api/",
            "round_robin",
            "weighted",
            "cookie",
            "internal",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
SITE_KEYS = [
    "name", "hosts", "upstreams", "balance", "health", "passive_health", "retries", "retry_idempotent",
    "retry_deadline", "max_body", "error_pages", "connect_timeout", "read_timeout", "header_timeout",
    "cache", "compression", "auth", "rate_limit", "headers", "allow", "deny", "tls", "redirect",
    "redirect_code", "maintenance", "upstream_sni", "routes", "websockets", "bogus",
]  # fmt: skip
sites = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", ""]), "hosts": st.one_of(st.just(["a.lan"]), values)},
    optional={key: values for key in SITE_KEYS if key not in ("name", "hosts", "upstreams")}
    | {"upstreams": st.one_of(values, st.lists(values, max_size=3))},
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "server": st.dictionaries(
            st.sampled_from(["http_port", "listen", "default_site", "drain_timeout", "bogus"]), values, max_size=3
        ),
        "sites": st.lists(sites, max_size=3),
        "logging": st.dictionaries(st.sampled_from(["access_log", "level", "max_bytes"]), values, max_size=2),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_data_is_a_config_or_errors_with_key_paths(data: dict[str, Any]) -> None:
    try:
        build_config(data, "fuzz.toml")
    except ConfigInvalid as e:
        assert e.errors
        for error in e.errors:
            assert error.file == "fuzz.toml"
            assert error.message
            assert error.key or "TOML" in error.message or error.line is not None


upstream_tables = st.fixed_dictionaries(
    {"url": st.sampled_from(["http://10.0.0.2:80", "https://nas.lan:5001", "mdns://TV._http._tcp/ui"])},
    optional={"weight": st.integers(1, 1000), "backup": st.booleans(), "max_conns": st.integers(0, 500)},
)
good_sites = st.fixed_dictionaries(
    {"name": st.just("app"), "hosts": st.just(["app.lan"]), "upstreams": st.just(["http://10.0.0.1:80"])},
    optional={
        "balance": st.sampled_from(["round_robin", "weighted", "least_conn", "ip_hash", "cookie", "first"]),
        "health": st.one_of(
            st.booleans(),
            st.fixed_dictionaries(
                {},
                optional={
                    "path": st.sampled_from(["/", "/healthz", "/api/health?full=1"]),
                    "interval": st.sampled_from(["1s", "500ms", "2m", 7]),
                    "status": st.sampled_from([200, "200-399", "204-204"]),
                    "body": st.text(alphabet="abcxyz ok", max_size=8),
                    "passes": st.integers(1, 100),
                    "fails": st.integers(1, 100),
                },
            ),
        ),
        "passive_health": st.one_of(
            st.booleans(),
            st.fixed_dictionaries(
                {},
                optional={"fails": st.integers(1, 1000), "cooldown": st.sampled_from(["30s", "1.5s", "2h"])},
            ),
        ),
        "retries": st.integers(0, 10),
        "retry_idempotent": st.booleans(),
        "retry_deadline": st.sampled_from(["15s", "250ms", 3.5]),
        "max_body": st.sampled_from([0, 1, "10MB", "1GiB"]),
        "header_timeout": st.sampled_from(["60s", "2m"]),
        "error_pages": st.dictionaries(st.sampled_from(["502", "503", "504"]), st.just("/srv/page.html"), max_size=3),
        "cache": st.booleans(),
        "compression": st.booleans(),
        "maintenance": st.booleans(),
        "tls": st.booleans(),
        "allow": st.lists(st.sampled_from(["10.0.0.0/8", "fd00::/8", "192.168.1.5"]), max_size=2, unique=True),
        "rate_limit": st.sampled_from(["20/s", "600/m"]),
        "upstream_sni": st.sampled_from(["", "nas.home.arpa"]),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(good_sites, st.lists(upstream_tables, max_size=3))
def test_an_accepted_site_saves_and_loads_back_equal(raw: dict[str, Any], more: list[dict[str, Any]]) -> None:
    raw = {**raw, "upstreams": raw["upstreams"] + [m for m in more if m["url"] not in str(raw["upstreams"])]}
    seen: set[str] = set()
    raw["upstreams"] = [u for u in raw["upstreams"] if not ((k := str(u)) in seen or seen.add(k))]  # type: ignore[func-returns-value]
    try:
        config = build_config({"sites": [raw]})
    except ConfigInvalid:
        return  # e.g. every upstream a backup: refused with a key path, as the test above checks
    (site,) = config.sites
    doc = tomlkit.document()
    sites = tomlkit.aot()
    sites.append(site_table(site))
    doc.append("sites", sites)
    again = parse_config(tomlkit.dumps(doc), "saved.toml")
    assert again.sites == (site,)
