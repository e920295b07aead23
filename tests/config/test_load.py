"""Tests for `homeproxy.config.load`: TOML text -> `Config`, and errors a person can act on.

Every error must name the file, the line, the key path and what was expected;
a file with several problems must report all of them at once.
"""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from homeproxy.config import Config, ConfigError, ConfigInvalid, LoggingSettings, Route, ServerSettings, Site
from homeproxy.config.load import build_config, format_key, parse_config
from homeproxy.config.model import Upstream
from homeproxy.config.store import default_config_text
from homeproxy.config.toml_scan import locate_keys, scan_toml

FILE = "/srv/homeproxy/config.toml"
ASSET = Path(__file__).resolve().parents[2] / "assets" / "default-config.toml"

SITE = """\
[[sites]]
name = "plex"
hosts = ["plex.home.arpa"]
upstreams = ["http://192.168.1.20:32400"]
"""


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def errors(text: str) -> tuple[ConfigError, ...]:
    """The errors `parse_config` reports for `text` (it must refuse it)."""
    with pytest.raises(ConfigInvalid) as info:
        parse_config(text, FILE)
    assert info.value.errors, "ConfigInvalid without errors"
    return info.value.errors


def only_error(text: str) -> ConfigError:
    errs = errors(text)
    assert len(errs) == 1, "\n".join(map(str, errs))
    return errs[0]


def where(errs: tuple[ConfigError, ...]) -> list[tuple[int | None, str]]:
    return [(e.line, e.key) for e in errs]


# --- the default template ------------------------------------------------------------


def test_default_template_parses_to_the_model_defaults() -> None:
    text = default_config_text()
    assert text == ASSET.read_text(encoding="utf-8")
    assert parse_config(text, FILE) == Config()


def test_default_template_examples_parse_once_uncommented() -> None:
    """The commented example sites are documentation; they must be valid config when uncommented."""
    lines = default_config_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "Uncomment and adapt" in line)
    body = [line.removeprefix("#").removeprefix(" ") for line in lines[start + 1 :]]
    config = parse_config("\n".join(lines[: start + 1] + body) + "\n", FILE)
    assert [s.name for s in config.sites] == ["homeassistant", "plex", "nextcloud", "pihole"]
    ha, plex, nc, pihole = config.sites
    assert plex.upstream_urls == ("mdns://Plex Media Server._plexmediasvr._tcp",)
    assert ha.hosts == ("ha.home.arpa", "ha.local")
    assert nc.read_timeout == 300.0
    assert nc.routes == (Route(path="/push/", upstreams=(Upstream("http://192.168.1.11:7867"),), strip_prefix=True),)
    assert [u.backup for u in pihole.upstreams] == [False, False, True]
    assert pihole.health is not None and pihole.health.path == "/admin/"


def test_a_full_config_builds_the_model() -> None:
    text = doc(
        """
        [server]
        listen = ["127.0.0.1", "::1"]
        http_port = 8081
        trusted_proxies = ["10.0.0.0/8", "fd00::1/8"]
        drain_timeout = "500ms"

        [logging]
        access_log = false
        max_bytes = "512KB"
        keep_files = 0
        level = "WARNING"

        [[sites]]
        name = "ha"
        hosts = ["HA.Home.Arpa.", "*.ha.lan"]
        upstreams = ["http://192.168.1.10:8123/", " https://[fd00::10]:8443 "]
        websockets = false
        connect_timeout = 2.5
        read_timeout = "2m"

          [[sites.routes]]
          path = "/api/"
          upstreams = ["http://192.168.1.10:8124"]
          strip_prefix = true
        """
    )
    assert parse_config(text, FILE) == Config(
        server=ServerSettings(
            listen=("127.0.0.1", "::1"),
            http_port=8081,
            https_port=8443,
            trusted_proxies=("10.0.0.0/8", "fd00::/8"),
            drain_timeout=0.5,
        ),
        logging=LoggingSettings(access_log=False, max_bytes=512_000, keep_files=0, level="warning"),
        sites=(
            Site(
                name="ha",
                hosts=("ha.home.arpa", "*.ha.lan"),
                upstreams=(
                    Upstream("http://192.168.1.10:8123"),
                    Upstream("https://[fd00::10]:8443"),
                ),
                routes=(Route("/api/", (Upstream("http://192.168.1.10:8124"),), strip_prefix=True),),
                websockets=False,
                connect_timeout=2.5,
                read_timeout=120.0,
            ),
        ),
    )


@pytest.mark.parametrize(
    ("value", "enabled", "path"),
    [
        ("true", True, ""),
        ("false", False, ""),
        ('"off"', False, ""),
        ('"OFF"', False, ""),
        ('" /var/log/homeproxy/access.log "', True, "/var/log/homeproxy/access.log"),
    ],
)
def test_access_log_is_a_switch_or_a_file(value: str, enabled: bool, path: str) -> None:
    lg = parse_config(f"[logging]\naccess_log = {value}\n", FILE).logging
    assert (lg.access_log, lg.access_log_path) == (enabled, path)


def test_a_single_string_where_a_list_is_expected_is_forgiven() -> None:
    config = parse_config(SITE.replace('["plex.home.arpa"]', '"plex.home.arpa"'), FILE)
    assert config.sites[0].hosts == ("plex.home.arpa",)


# --- malformed TOML ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[server]\nhttp_port = 8080\n\nlisten = "a" "b"\n', 4),
        ('[server]\nlisten = ["127.0.0.1"\nhttp_port = 8080\n', 3),
        ('[logging]\nlevel = "info\n', 2),
        ("a = 1\n\n\n[sites\n", 4),
        ("# comment\nserver = \n", 2),
    ],
)
def test_malformed_toml_names_the_file_and_the_line(text: str, line: int) -> None:
    err = only_error(text)
    assert (err.file, err.line, err.key) == (FILE, line, "")
    assert err.message.startswith("malformed TOML: ")
    assert "(column " in err.message
    assert " at line " not in err.message  # tomlkit's own position suffix is replaced by ours
    assert str(err).startswith(f"{FILE}:{line}: malformed TOML: ")


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        pytest.param("[server]\nhttp_port = 1\nhttp_port = 2\n", 3, "server.http_port", 2, id="server"),
        pytest.param(SITE + 'name = "again"\n', 5, "sites[0].name", 2, id="site"),
        pytest.param(SITE + SITE + 'hosts = ["b"]\n', 9, "sites[1].hosts", 7, id="second-site"),
        pytest.param(
            SITE + 'headers = { request = { "X-A" = "1" }, request = { "X-B" = "2" } }\n',
            5,
            "sites[0].headers.request",
            5,
            id="inline-table",
        ),
        pytest.param('sites = [\n  { name = "a", name = "b" },\n]\n', 2, "sites[0].name", 2, id="inline-in-array"),
        pytest.param("server.http_port = 1\nserver.http_port = 2\n", 2, "server.http_port", 1, id="dotted"),
        pytest.param('[server]\n"http_port" = 1\nhttp_port = 2\n', 3, "server.http_port", 2, id="quoted"),
        pytest.param(
            '[server]\nlisten = """\nhttp_port = 9\n"""\nhttp_port = 1\nhttp_port = 2\n',
            6,
            "server.http_port",
            5,
            id="after-a-multiline-string",
        ),
    ],
)
def test_a_repeated_key_names_the_key_and_both_lines(text: str, line: int, key: str, first: int) -> None:
    err = only_error(text)
    assert (err.file, err.line, err.key) == (FILE, line, key)
    assert err.message == f"set twice (first on line {first}); keep one"
    assert str(err) == f"{FILE}:{line}: {key}: set twice (first on line {first}); keep one"


def test_a_table_defined_twice_names_the_table_and_both_lines() -> None:
    err = only_error("[server]\nhttp_port = 1\n\n[logging]\nlevel = 'info'\n\n[ server ]\nlisten = '::'\n")
    assert (err.line, err.key) == (7, "server")
    assert err.message == "table [ server ] defined twice (first on line 1); merge the two into one"


def test_every_repeat_is_reported_at_once() -> None:
    errs = errors("[server]\nhttp_port = 1\nhttp_port = 2\n[logging]\nlevel = 'info'\nlevel = 'debug'\n")
    assert [(e.line, e.key) for e in errs] == [(3, "server.http_port"), (6, "logging.level")]


@pytest.mark.parametrize(
    "text",
    [
        # Valid TOML that looks repetitive: the scanner must not call any of it a repeat.
        SITE + SITE.replace("plex", "plex2"),
        "[a.b]\nx = 1\n[a]\ny = 1\n",
        "[a]\nb.c = 1\nb.d = 2\n",
        'x = [{ k = 1 }, { k = 2 }]\ny = { "k.j" = 1, k = { j = 2 } }\n',
        SITE + "  [[sites.routes]]\n  path = '/a'\n  [[sites.routes]]\n  path = '/b'\n" + SITE,
        "s = '''\n[server]\n[server]\n'''\nt = \"\"\"a = 1\na = 2\\\"\"\"\"\"\n# [server]\nu = 'x' # a = 1\n",
    ],
)
def test_valid_toml_has_no_repeats(text: str) -> None:
    tomllib.loads(text)  # the premise: the text is valid
    assert scan_toml(text).repeats == []


def test_the_default_config_has_no_repeats() -> None:
    text = ASSET.read_text(encoding="utf-8")
    scan = scan_toml(text)
    assert scan.repeats == []
    assert ("server", "http_port") in scan.lines


# --- unknown keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "hint"),
    [
        ("srever = 1\n", 1, "srever", 'did you mean "server"?'),
        (
            "[server]\nhttp_port = 1\n\n[colour]\nx = 1\n",
            4,
            "colour",
            "valid keys: server, logging, cache, defaults, discovery, tls, sites",
        ),
        ('[server]\nlisten = ["::"]\nhttp_prot = 80\n', 3, "server.http_prot", 'did you mean "http_port"?'),
        ("[logging]\nlevle = 'info'\n", 2, "logging.levle", 'did you mean "level"?'),
        (SITE + "websocket = false\n", 5, "sites[0].websocket", 'did you mean "websockets"?'),
        (SITE + "colour = 'red'\n", 5, "sites[0].colour", "valid keys: name, hosts, upstreams, routes, enabled"),
        (
            SITE + '[[sites.routes]]\npath = "/api/"\nupstreams = ["http://x"]\nstrip_prefx = true\n',
            8,
            "sites[0].routes[0].strip_prefx",
            'did you mean "strip_prefix"?',
        ),
    ],
)
def test_unknown_key_names_line_key_and_suggestion(text: str, line: int, key: str, hint: str) -> None:
    err = only_error(text)
    assert (err.file, err.line, err.key) == (FILE, line, key)
    unknown = key.rsplit(".", 1)[-1]
    assert err.message.startswith(f'unknown key "{unknown}"; ')
    assert hint in err.message
    assert str(err) == f"{FILE}:{line}: {key}: {err.message}"


# --- bad types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (SITE + 'websockets = "yes"\n', 5, "sites[0].websockets", 'expected true or false, got "yes"'),
        ("[logging]\naccess_log = 1\n", 2, "logging.access_log", 'expected true, false, "off" or a file path, got 1'),
        ('[logging]\naccess_log = " "\n', 2, "logging.access_log", 'expected true, false, "off" or a file path'),
        (
            '[server]\nhttp_port = "8080"\n',
            2,
            "server.http_port",
            'expected a port number (1-65535, or 0 for any free port), got "8080"',
        ),
        (
            "[server]\nhttp_port = true\n",
            2,
            "server.http_port",
            "expected a port number (1-65535, or 0 for any free port), got true",
        ),
        ('[logging]\nkeep_files = "3"\n', 2, "logging.keep_files", 'expected a whole number >= 0, got "3"'),
        ("[logging]\nlevel = 3\n", 2, "logging.level", "expected a string, got 3"),
        ('[logging]\nlevel = "loud"\n', 2, "logging.level", 'expected one of "debug", "info", "warning", "error"'),
        (
            SITE.replace('hosts = ["plex.home.arpa"]', "hosts = { main = 'plex.home.arpa' }"),
            3,
            "sites[0].hosts",
            "expected a list of host names, got a table",
        ),
        ('[server]\nlisten = { v4 = "0.0.0.0" }\n', 2, "server.listen", "expected a list of addresses, got a table"),
        ("[server]\ntrusted_proxies = 10\n", 2, "server.trusted_proxies", "expected a list of networks, got 10"),
        (
            '[server]\ntrusted_proxies = ["10.0.0.0/8", "lan"]\n',
            2,
            "server.trusted_proxies",
            'item 2: expected an IP network such as "192.168.0.0/16"',
        ),
        ("server = [1, 2]\n", 1, "server", "expected a table, got a list"),
        ('sites = "plex"\n', 1, "sites", 'expected an array of tables ([[sites]]), got "plex"'),
        ("sites = [1]\n", 1, "sites[0]", "expected a table, got 1"),
        (SITE.replace('name = "plex"', "name = 7"), 2, "sites[0].name", "expected a string, got 7"),
        (SITE.replace('name = "plex"', 'name = "  "'), 2, "sites[0].name", "a site name cannot be empty"),
        (
            SITE.replace('hosts = ["plex.home.arpa"]', 'hosts = ["plex home"]'),
            3,
            "sites[0].hosts",
            'item 1: expected a host name such as "plex.home.arpa" or "*.home.arpa", got "plex home"',
        ),
    ],
)
def test_bad_type_names_line_key_and_expectation(text: str, line: int, key: str, message: str) -> None:
    err = only_error(text)
    assert (err.file, err.line, err.key) == (FILE, line, key)
    assert message in err.message


@pytest.mark.parametrize("value", ["5", "true", "2.5"])
def test_routes_that_is_a_number_is_a_config_error(value: str) -> None:
    err = only_error(SITE + f"routes = {value}\n")
    assert (err.line, err.key) == (5, "sites[0].routes")
    assert "expected an array of tables" in err.message


@pytest.mark.parametrize("value", ['{ path = "/api/", upstreams = ["http://x"] }', '"/api/"'])
def test_routes_that_is_a_table_or_string_gives_one_error(value: str) -> None:
    err = only_error(SITE + f"routes = {value}\n")
    assert (err.line, err.key) == (5, "sites[0].routes")
    assert "expected an array of tables" in err.message


# --- upstreams -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        (
            "ftp://nas.home.arpa/",
            'expected an http(s) URL such as "http://192.168.1.20:8123", got "ftp://nas.home.arpa/"',
        ),
        ("http://", 'expected an http(s) URL such as "http://192.168.1.20:8123", got "http://"'),
        ("http:///plex", 'expected an http(s) URL such as "http://192.168.1.20:8123", got "http:///plex"'),
        ("garbage", 'expected an http(s) URL such as "http://192.168.1.20:8123", got "garbage"'),
        ("nas.home.arpa:8080", "expected an http(s) URL"),
        ("http://nas.home.arpa:99999", "expected an http(s) URL"),
        ("http://nas.home.arpa:port", "expected an http(s) URL"),
        (
            "http://nas.home.arpa/?token=1",
            'an upstream URL takes no query or fragment, got "http://nas.home.arpa/?token=1"',
        ),
        ("http://nas.home.arpa/#top", "an upstream URL takes no query or fragment"),
    ],
)
def test_upstream_must_be_an_http_url(upstream: str, message: str) -> None:
    text = SITE.replace('upstreams = ["http://192.168.1.20:32400"]', f'upstreams = ["http://ok:1", "{upstream}"]')
    err = only_error(text)
    assert (err.file, err.line, err.key) == (FILE, 4, "sites[0].upstreams")
    assert err.message.startswith("item 2: ")
    assert message in err.message


def test_route_upstream_is_checked_too() -> None:
    text = SITE + '\n[[sites.routes]]\npath = "/api/"\nupstreams = ["ftp://x"]\n'
    err = only_error(text)
    assert (err.line, err.key) == (8, "sites[0].routes[0].upstreams")
    assert 'got "ftp://x"' in err.message


def test_upstream_trailing_slash_and_space_are_trimmed() -> None:
    text = SITE.replace("http://192.168.1.20:32400", " https://nas.lan:8443/ ")
    assert parse_config(text, FILE).sites[0].upstream_urls == ("https://nas.lan:8443",)


# --- hosts and names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "claimed"),
    [
        ("plex.home.arpa", "PLEX.Home.Arpa", "plex.home.arpa"),
        ("Plex.Home.Arpa.", "plex.home.arpa", "plex.home.arpa"),
        ("*.Home.Arpa", "*.home.ARPA", "*.home.arpa"),
    ],
)
def test_a_host_claimed_by_two_sites_is_an_error(first: str, second: str, claimed: str) -> None:
    text = doc(
        f"""
        [[sites]]
        name = "plex"
        hosts = ["{first}"]
        upstreams = ["http://a"]

        [[sites]]
        name = "jellyfin"
        hosts = ["tv.home.arpa", "{second}"]
        upstreams = ["http://b"]
        """
    )
    err = only_error(text)
    assert (err.file, err.line, err.key) == (FILE, 8, "sites[1].hosts")
    assert err.message == f'host "{claimed}" is already claimed by site "plex" (sites[0])'


def test_a_host_repeated_inside_one_site_is_an_error() -> None:
    err = only_error(SITE.replace('["plex.home.arpa"]', '["plex.home.arpa", "PLEX.home.arpa."]'))
    assert (err.file, err.line, err.key, err.message) == (FILE, 3, "sites[0].hosts", "a host name is listed twice")


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("[]", 'expected at least one address, such as "0.0.0.0"'),
        ('["127.0.0.1", " 127.0.0.1 "]', "an address is listed twice"),
        ('[""]', 'item 1: expected an address such as "0.0.0.0", "::" or "127.0.0.1"'),
    ],
)
def test_listen_addresses(listen: str, message: str) -> None:
    err = only_error(f"[server]\nhttp_port = 1\nlisten = {listen}\n")
    assert (err.file, err.line, err.key, err.message) == (FILE, 3, "server.listen", message)


def test_two_routes_with_one_path_is_an_error() -> None:
    text = SITE + '[[sites.routes]]\npath = "/api/"\nupstreams = ["http://a"]\n'
    text += '[[sites.routes]]\npath = "/api/"\nupstreams = ["http://b"]\n'
    err = only_error(text)
    assert (err.line, err.key, err.message) == (
        9,
        "sites[0].routes[1].path",
        'path "/api/" already has a route in this site',
    )


def test_a_route_without_upstreams_is_an_error() -> None:
    err = only_error(SITE + '[[sites.routes]]\npath = "/api/"\nupstreams = []\n')
    assert (err.line, err.key, err.message) == (
        7,
        "sites[0].routes[0].upstreams",
        "a route needs at least one upstream URL",
    )


def test_duplicate_site_names_are_an_error() -> None:
    text = SITE + "\n" + SITE.replace("plex.home.arpa", "tv.home.arpa")
    err = only_error(text)
    assert (err.file, err.line, err.key) == (FILE, 7, "sites[1].name")
    assert err.message == 'site name "plex" is already used by sites[0]'


# --- ports -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["http_port", "https_port"])
@pytest.mark.parametrize("port", [70000, 65536, -1])
def test_port_out_of_range(key: str, port: int) -> None:
    err = only_error(f"[server]\nlisten = ['127.0.0.1']\n{key} = {port}\n")
    assert (err.file, err.line, err.key) == (FILE, 3, f"server.{key}")
    assert err.message == f"port {port} is out of range: expected 1-65535 (or 0 for any free port)"


@pytest.mark.parametrize("port", [0, 1, 80, 65535])
def test_port_in_range(port: int) -> None:
    assert parse_config(f"[server]\nhttp_port = {port}\n", FILE).server.http_port == port


# --- durations and sizes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ('"500ms"', 0.5),
        ('"10s"', 10.0),
        ('"2m"', 120.0),
        ('"1h"', 3600.0),
        ('"1.5s"', 1.5),
        ('" 30 s "', 30.0),
        ('"45"', 45.0),
        ("3", 3.0),
        ("2.5", 2.5),
    ],
)
def test_durations(value: str, seconds: float) -> None:
    config = parse_config(f"[server]\ndrain_timeout = {value}\n\n" + SITE + f"connect_timeout = {value}\n", FILE)
    assert config.server.drain_timeout == seconds
    assert config.sites[0].connect_timeout == seconds
    assert isinstance(config.server.drain_timeout, float)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('"fast"', '"fast"'),
        ('"10 minutes"', '"10 minutes"'),
        ('"5w"', '"5w"'),
        ('"-1s"', '"-1s"'),
        ("true", "true"),
        ("[10]", "a list"),
    ],
)
def test_bad_durations(value: str, shown: str) -> None:
    err = only_error(SITE + f"read_timeout = {value}\n")
    assert (err.file, err.line, err.key) == (FILE, 5, "sites[0].read_timeout")
    assert err.message == f'expected a duration such as 10, "500ms", "30s", "2m" or "7d", got {shown}'


@pytest.mark.parametrize("value", ["0", "-3", '"0s"', '"0ms"', "0.0"])
def test_durations_must_be_above_zero(value: str) -> None:
    err = only_error(f"[server]\ndrain_timeout = {value}\n")
    assert (err.line, err.key) == (2, "server.drain_timeout")
    assert err.message.startswith("expected a duration above zero, got ")


def test_nan_is_not_a_duration() -> None:
    err = only_error("[server]\ndrain_timeout = nan\n")
    assert (err.line, err.key) == (2, "server.drain_timeout")


def test_inf_is_not_a_duration() -> None:
    """A shutdown that never ends is not a drain timeout."""
    err = only_error("[server]\ndrain_timeout = inf\n")
    assert (err.line, err.key) == (2, "server.drain_timeout")
    assert err.message == "expected a finite duration, got inf"


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ('"10MiB"', 10 * 1024 * 1024),
        ('"512KB"', 512_000),
        ('"512KiB"', 524_288),
        ('"1GB"', 1_000_000_000),
        ('"2gib"', 2 * 1024**3),
        ('"10 MB"', 10_000_000),
        ('"100B"', 100),
        ('"4096"', 4096),
        ("1024", 1024),
    ],
)
def test_sizes(value: str, size: int) -> None:
    assert parse_config(f"[logging]\nmax_bytes = {value}\n", FILE).logging.max_bytes == size


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('"10 parsecs"', '"10 parsecs"'),
        ('"1.5MiB"', '"1.5MiB"'),
        ("0", "0"),
        ("-1", "-1"),
        ("true", "true"),
        ("2.5", "2.5"),
    ],
)
def test_bad_sizes(value: str, shown: str) -> None:
    err = only_error(f"[logging]\n\nmax_bytes = {value}\n")
    assert (err.file, err.line, err.key) == (FILE, 3, "logging.max_bytes")
    assert err.message == f'expected a size such as 1048576, "512KiB" or "10MiB", got {shown}'


@pytest.mark.parametrize("value", ['"0KiB"', '"0"', '"0 MB"'])
def test_a_zero_size_string_is_refused_like_zero(value: str) -> None:
    err = only_error(f"[logging]\nmax_bytes = {value}\n")
    assert (err.line, err.key) == (2, "logging.max_bytes")


# --- required keys, empty lists, route paths -------------------------------------------


def test_missing_required_site_keys() -> None:
    text = "[server]\nhttp_port = 1\n\n[[sites]]\nhosts = ['a.lan']\n\n[[sites]]\nname = 'b'\n"
    errs = errors(text)
    assert [(e.line, e.key, e.message) for e in errs] == [
        (4, "sites[0]", 'missing required key "name"'),
        (4, "sites[0]", 'missing required key "upstreams"'),
        (7, "sites[1]", 'missing required key "hosts"'),
        (7, "sites[1]", 'missing required key "upstreams"'),
    ]
    assert all(e.file == FILE for e in errs)


def test_missing_required_route_keys() -> None:
    text = SITE + "\n[[sites.routes]]\nstrip_prefix = true\n"
    errs = errors(text)
    assert [(e.line, e.key, e.message) for e in errs] == [
        (6, "sites[0].routes[0]", 'missing required key "path"'),
        (6, "sites[0].routes[0]", 'missing required key "upstreams"'),
    ]


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "message"),
    [
        ('hosts = ["plex.home.arpa"]', "hosts = []", 3, "sites[0].hosts", "a site needs at least one host name"),
        (
            'upstreams = ["http://192.168.1.20:32400"]',
            "upstreams = []",
            4,
            "sites[0].upstreams",
            "a site needs at least one upstream URL (or a redirect)",
        ),
    ],
)
def test_empty_lists(old: str, new: str, line: int, key: str, message: str) -> None:
    err = only_error(SITE.replace(old, new))
    assert (err.file, err.line, err.key, err.message) == (FILE, line, key, message)


@pytest.mark.parametrize("path", ["api/", "", "*/api"])
def test_route_path_must_start_with_a_slash(path: str) -> None:
    text = SITE + f'\n[[sites.routes]]\npath = "{path}"\nupstreams = ["http://x"]\n'
    err = only_error(text)
    assert (err.file, err.line, err.key) == (FILE, 7, "sites[0].routes[0].path")
    assert err.message == f'expected a path starting with "/", such as "/api/", got "{path}"'


# --- many problems at once -------------------------------------------------------------


def test_every_problem_is_reported_in_line_order() -> None:
    text = doc(
        """
        # a config with six problems
        [server]
        http_port = 70000
        drain_timeout = "soon"

        [[sites]]
        name = "plex"
        hosts = ["plex.home.arpa"]
        upstreams = ["ftp://nas"]

        [[sites]]
        name = "plex"
        hosts = ["PLEX.home.arpa"]
        upstreams = ["http://nas:8096"]
        websocket = true

          [[sites.routes]]
          path = "api"
          upstreams = ["http://nas:1"]
        """
    )
    errs = errors(text)
    assert len(errs) == 7
    assert where(errs) == [
        (3, "server.http_port"),
        (4, "server.drain_timeout"),
        (9, "sites[0].upstreams"),
        (12, "sites[1].name"),
        (13, "sites[1].hosts"),
        (15, "sites[1].websocket"),
        (18, "sites[1].routes[0].path"),
    ]
    message = str(ConfigInvalid(list(errs)))
    assert message.splitlines() == [str(e) for e in errs]
    assert all(line.startswith(f"{FILE}:") for line in message.splitlines())


# --- line numbers for nested, dotted and multi-line keys -------------------------------


def test_line_of_a_route_in_the_second_site() -> None:
    text = doc(
        """
        [[sites]]
        name = "a"
        hosts = ["a.lan"]
        upstreams = ["http://a"]
          [[sites.routes]]
          path = "/x/"
          upstreams = ["http://x"]

        [[sites]]
        name = "b"
        hosts = ["b.lan"]
        upstreams = ["http://b"]
          [[sites.routes]]
          path = "/ok/"
          upstreams = ["http://ok"]
          [[sites.routes]]
          path = "/y/"
          upstreams = ["http://y"]
          strip_prefix = "yes"
        """
    )
    err = only_error(text)
    assert (err.line, err.key) == (19, "sites[1].routes[1].strip_prefix")


def test_line_of_dotted_keys() -> None:
    text = doc(
        """
        # dotted keys at the top level
        server.http_port = 8080
        server.https_port = 70000
        "logging" . 'level' = "loud"
        """
    )
    assert where(errors(text)) == [(3, "server.https_port"), (4, "logging.level")]


def test_line_of_keys_after_multi_line_arrays() -> None:
    text = doc(
        """
        [server]
        listen = [
          "127.0.0.1",  # a comment with [brackets] and x = 1
          "::1",
          "]#[",
        ]
        trusted_proxies = [
          "10.0.0.0/8",
          '''192.168.0.0/16''',
        ]
        http_port = 70000

        [logging]
        level = "loud"
        """
    )
    assert where(errors(text)) == [(11, "server.http_port"), (14, "logging.level")]


def test_a_key_inside_an_inline_table_is_reported_at_its_own_line() -> None:
    text = 'sites = [\n  { name = "a", hosts = ["a.lan"], upstreams = ["http://a"], colour = 1 },\n]\n'
    err = only_error(text)
    assert (err.line, err.key) == (2, "sites[0].colour")


def test_locate_keys_maps_paths_to_lines() -> None:
    text = doc(
        """
        # header comment
        title.sub = 1
        [server]
        listen = [
          "a",
        ]
        http_port = 1  # [not a header]

        [[sites]]
        name = "a"
          [[sites.routes]]
          path = "/a"
        [[sites]]
        name = "b"
          [[sites.routes]]
          path = "/b"
          [[ sites.routes ]]
          path = "/c"
          [sites.routes.extra]
          x = 1
        [logging]
        'level' = "info"
        """
    )
    assert locate_keys(text) == {
        ("title", "sub"): 2,
        ("server",): 3,
        ("server", "listen"): 4,
        ("server", "http_port"): 7,
        ("sites",): 9,
        ("sites", 0): 9,
        ("sites", 0, "name"): 10,
        ("sites", 0, "routes"): 11,
        ("sites", 0, "routes", 0): 11,
        ("sites", 0, "routes", 0, "path"): 12,
        ("sites", 1): 13,
        ("sites", 1, "name"): 14,
        ("sites", 1, "routes"): 15,
        ("sites", 1, "routes", 0): 15,
        ("sites", 1, "routes", 0, "path"): 16,
        ("sites", 1, "routes", 1): 17,
        ("sites", 1, "routes", 1, "path"): 18,
        ("sites", 1, "routes", 1, "extra"): 19,
        ("sites", 1, "routes", 1, "extra", "x"): 20,
        ("logging",): 21,
        ("logging", "level"): 22,
    }


def test_locate_keys_skips_multi_line_strings() -> None:
    text = "a = \"\"\"\nb = 1\n[server]\n\"\"\"\nc = 2\nd = '''x\ny = ['''\ne = 3\n"
    assert locate_keys(text) == {("a",): 1, ("c",): 5, ("d",): 6, ("e",): 8}


def test_locate_keys_after_a_multi_line_string_inside_an_array() -> None:
    text = 'a = ["""\nx\n""", "y"]\nb = 2\n'
    assert locate_keys(text) == {("a",): 1, ("b",): 4}


# --- the pieces ------------------------------------------------------------------------


def test_format_key() -> None:
    assert format_key(("sites", 0, "routes", 2, "path")) == "sites[0].routes[2].path"
    assert format_key(("server",)) == "server"
    assert format_key(()) == ""


def test_build_config_without_line_information() -> None:
    data: dict[str, Any] = {"server": {"http_port": 70000}, "sites": [{"name": "a"}]}
    with pytest.raises(ConfigInvalid) as info:
        build_config(data, "mem")
    errs = info.value.errors
    assert [(e.line, e.key) for e in errs] == [(None, "server.http_port"), (None, "sites[0]"), (None, "sites[0]")]
    assert str(errs[0]).startswith("mem: server.http_port: port 70000")


def test_config_error_str() -> None:
    assert str(ConfigError("f.toml", 3, "server.http_port", "bad")) == "f.toml:3: server.http_port: bad"
    assert str(ConfigError("f.toml", None, "", "unreadable")) == "f.toml: unreadable"
    assert str(ConfigError("f.toml", 1, "", "malformed")) == "f.toml:1: malformed"
