"""The store writes per-site feature settings back so they load as the same settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from homeproxy.config import ConfigStore
from homeproxy.config.model import (
    AuthSettings,
    CacheSettings,
    CompressionSettings,
    HealthCheck,
    PassiveHealth,
    RateLimit,
    Site,
    Upstream,
)
from homeproxy.passwords import hash_password

BASE = '# mine\n[[sites]]\nname = "app"  # the app\nhosts = ["app.lan"]\nupstreams = ["http://127.0.0.1:9"]\n'


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    path = tmp_path / "config.toml"
    path.write_text(BASE, encoding="utf-8")
    s = ConfigStore(path)
    s.load()
    return s


SETTINGS = [
    {"cache": CacheSettings(enabled=True, default_ttl=300.0)},
    {"cache": CacheSettings(enabled=False, default_ttl=300.0)},  # off, options kept
    {"compression": CompressionSettings(enabled=False, min_bytes=10)},
    {"compression": CompressionSettings(enabled=True, algorithms=("gzip",))},
    {"rate_limit": RateLimit(10.0, 50)},
    {"auth": AuthSettings(mode="forward", forward="http://auth:9091/api/verify?rd=https://a.lan/")},
]


@pytest.mark.parametrize("change", SETTINGS, ids=lambda c: f"{next(iter(c))}-{next(iter(c.values()))!r:.40}")
def test_update_site_round_trips_feature_settings(store: ConfigStore, change: dict[str, object]) -> None:
    site = replace(store.config.sites[0], **change)  # type: ignore[arg-type]
    store.update_site("app", site)
    assert ConfigStore(store.path).load() == store.config
    assert store.config.sites[0] == site
    assert "# mine" in store.path.read_text() and "# the app" in store.path.read_text()


def test_turning_auth_off_removes_the_key(store: ConfigStore) -> None:
    user = ("alice", hash_password("pw", n=2**4))
    on = replace(store.config.sites[0], auth=AuthSettings(mode="basic", users=(user,)))
    store.update_site("app", on)
    assert "auth = " in store.path.read_text()
    store.update_site("app", replace(on, auth=AuthSettings()))
    assert "auth" not in store.path.read_text()
    assert store.config.sites[0].auth == AuthSettings()


def test_a_new_site_with_every_feature_loads_back_equal(store: ConfigStore) -> None:
    site = Site(
        "full",
        ("full.lan",),
        (Upstream("http://127.0.0.1:9"), Upstream("http://127.0.0.1:10", weight=3, backup=True, max_conns=5)),
        balance="weighted",
        health=HealthCheck(path="/healthz", interval=2.5, status=(200, 204), body="ok", passes=1),
        passive_health=PassiveHealth(fails=5, window=60.0, status_5xx=True),
        retries=1,
        retry_idempotent=True,
        retry_deadline=0.5,
        header_timeout=90.0,
        max_body=10_000_000,
        upstream_sni="nas.home.arpa",
        error_pages=((502, "/srv/502.html"), (503, "/srv/503.html")),
        cache=CacheSettings(enabled=True),
        compression=CompressionSettings(enabled=True),
        allow=("192.168.0.0/16",),
        rate_limit=RateLimit(20.0, 20),
    )
    store.add_site(site)
    assert ConfigStore(store.path).load().site("full") == site
