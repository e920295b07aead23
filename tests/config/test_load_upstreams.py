"""The upstream side of a site in the config: upstream tables, health, retries, limits, and the
errors they get (file, line, key, what was expected), plus the round trip through the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeproxy.config import ConfigError, ConfigInvalid, ConfigStore, parse_config
from homeproxy.config.model import HealthCheck, PassiveHealth, Upstream

FILE = "/srv/homeproxy/config.toml"


def site(extra: str, upstreams: str = '["http://10.0.0.1:80"]') -> str:
    return f'[[sites]]\nname = "app"\nhosts = ["app.lan"]\nupstreams = {upstreams}\n{extra}\n'


def errors(text: str) -> list[ConfigError]:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(text, FILE)
    return list(info.value.errors)


def test_an_upstream_may_be_a_url_or_a_table() -> None:
    text = site(
        'balance = "weighted"',
        '["http://10.0.0.1:80", { url = "http://10.0.0.2:80/", weight = 3, max_conns = 20 },'
        ' { url = "mdns://NAS._http._tcp", backup = true }]',
    )
    (app,) = parse_config(text, FILE).sites
    assert app.upstreams == (
        Upstream("http://10.0.0.1:80"),
        Upstream("http://10.0.0.2:80", weight=3, max_conns=20),
        Upstream("mdns://NAS._http._tcp", backup=True),
    )
    assert app.balance == "weighted"
    assert app.upstream_urls == ("http://10.0.0.1:80", "http://10.0.0.2:80", "mdns://NAS._http._tcp")


@pytest.mark.parametrize(
    ("upstreams", "message"),
    [
        ('[{ url = "http://a:1", wieght = 2 }]', 'has no key "wieght"'),
        ("[{ weight = 2 }]", "needs a url"),
        ('[{ url = "http://a:1", weight = 0 }]', "from 1 to 1000"),
        ('[{ url = "http://a:1", backup = "yes" }]', "expected true or false"),
        ('[{ url = "ftp://a:1" }]', "http(s) URL"),
        ('[{ url = "http://a:1", backup = true }]', "every upstream is a backup"),
        ('["http://a:1", "http://a:1"]', '"http://a:1" is listed twice'),
    ],
)
def test_a_bad_upstream_is_named_by_its_key(upstreams: str, message: str) -> None:
    (err,) = errors(site("", upstreams))
    assert err.key == "sites[0].upstreams"
    assert err.line == 4
    assert message in err.message


def test_health_true_takes_the_defaults_and_a_table_the_rest() -> None:
    (app,) = parse_config(site("health = true"), FILE).sites
    assert app.health == HealthCheck()
    text = site('health = { path = "/healthz?full=1", interval = "2s", status = "200-204", body = "ok", fails = 5 }')
    (app,) = parse_config(text, FILE).sites
    assert app.health == HealthCheck(path="/healthz?full=1", interval=2.0, status=(200, 204), body="ok", fails=5)
    (app,) = parse_config(site("health = { status = 204 }"), FILE).sites
    assert app.health is not None and app.health.status == (204, 204)
    (app,) = parse_config(site("health = false"), FILE).sites
    assert app.health is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{ path = "healthz" }', 'path: expected a path starting with "/"'),
        ('{ status = "399-200" }', "status: expected a status code or a range"),
        ("{ status = 700 }", "status: expected a status code or a range"),
        ('{ interval = "0s" }', "interval: expected a duration above zero"),
        ("{ passes = 0 }", "passes: expected a whole number from 1 to 100"),
        ('{ every = "1s" }', 'health has no key "every"'),
        ('"often"', "expected true, false or a table"),
    ],
)
def test_a_bad_health_check_says_which_part(value: str, message: str) -> None:
    (err,) = errors(site(f"health = {value}"))
    assert err.key == "sites[0].health"
    assert err.line == 5
    assert message in err.message


def test_passive_health_is_on_by_default_and_can_be_tuned_or_turned_off() -> None:
    (app,) = parse_config(site(""), FILE).sites
    assert app.passive_health == PassiveHealth()
    (app,) = parse_config(site("passive_health = false"), FILE).sites
    assert not app.passive_health.enabled
    (app,) = parse_config(site('passive_health = { fails = 1, window = "5s", status_5xx = true }'), FILE).sites
    assert app.passive_health == PassiveHealth(fails=1, window=5.0, status_5xx=True)


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("retries = 11", "sites[0].retries", "from 0 to 10"),
        ("retry_deadline = 0", "sites[0].retry_deadline", "above zero"),
        ('max_body = "lots"', "sites[0].max_body", "expected a size"),
        ('error_pages = { 200 = "/x.html" }', "sites[0].error_pages", "from 400 to 599"),
        ('upstream_sni = "not a name"', "sites[0].upstream_sni", "expected a host name"),
    ],
)
def test_other_upstream_keys_are_checked(line: str, key: str, message: str) -> None:
    (err,) = errors(site(line))
    assert (err.key, err.line) == (key, 5)
    assert message in err.message


def test_limits_and_retries_convert() -> None:
    text = site('max_body = "10MB"\nretries = 0\nretry_idempotent = true\nheader_timeout = "2m"')
    (app,) = parse_config(text, FILE).sites
    assert (app.max_body, app.retries, app.retry_idempotent, app.header_timeout) == (10_000_000, 0, True, 120.0)
    (app,) = parse_config(site('error_pages = { 503 = "/srv/503.html", 502 = "/srv/502.html" }'), FILE).sites
    assert app.error_pages == ((502, "/srv/502.html"), (503, "/srv/503.html"))


def test_a_route_cannot_both_strip_and_rewrite() -> None:
    route = '[[sites.routes]]\npath = "/v1/"\nupstreams = ["http://10.0.0.3:80"]\nstrip_prefix = true\nrewrite = "/"\n'
    (err,) = errors(site("") + route)
    assert err.key == "sites[0].routes[0].rewrite"
    assert "rewrite or strip_prefix, not both" in err.message


def test_the_default_site_must_exist() -> None:
    (err,) = errors('[server]\ndefault_site = "nope"\n' + site(""))
    assert err.key == "server.default_site"
    assert err.line == 2
    assert 'no site is named "nope"' in err.message
    config = parse_config('[server]\ndefault_site = "app"\n' + site(""), FILE)
    assert config.server.default_site == "app"


def test_every_upstream_key_survives_a_save_with_its_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "# my pi-holes\n"
        + site(
            'balance = "cookie"  # sticky\nhealth = { path = "/admin/", interval = "5s" }\n'
            'passive_health = { cooldown = "1m" }\nmax_body = "1MiB"\nretry_deadline = "500ms"',
            '["http://10.0.0.1:80", { url = "http://10.0.0.2:80", backup = true }]',
        )
    )
    store = ConfigStore(path)
    store.load()
    before = store.config.sites[0]
    store.set_site_option("app", "retries", 1)
    text = path.read_text()
    assert "# my pi-holes" in text and "# sticky" in text
    again = ConfigStore(path).load().sites[0]
    assert again.retries == 1
    assert again.upstreams == before.upstreams
    assert (again.health, again.passive_health, again.max_body) == (before.health, before.passive_health, 1024 * 1024)
    assert again.retry_deadline == 0.5
