"""The `[discovery]` table, `mdns://` upstreams and the per-site `publish` / `verify_upstream` keys."""

from __future__ import annotations

import textwrap

import pytest

from homeproxy.config import ConfigInvalid, parse_config
from homeproxy.config.model import DiscoverySettings
from homeproxy.config.store import site_table
from homeproxy.discovery.service import DEFAULT_SERVICE_TYPES

FILE = "/srv/homeproxy/config.toml"


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def only_error(text: str) -> str:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(doc(text), FILE)
    assert len(info.value.errors) == 1, info.value.errors
    return str(info.value.errors[0])


def test_discovery_defaults_browse_the_curated_types_and_publish() -> None:
    d = parse_config("", FILE).discovery
    assert d == DiscoverySettings()
    assert (d.browse, d.publish_hostnames, d.advertise, d.interfaces, d.domain) == (True, True, False, (), "home.arpa")
    assert d.service_types == DEFAULT_SERVICE_TYPES


def test_discovery_table_is_read_and_types_are_normalised() -> None:
    config = parse_config(
        doc("""
        [discovery]
        browse = false
        publish_hostnames = false
        advertise = true
        interfaces = ["eth0", "192.168.1.5"]
        service_types = ["_http._tcp", "_Home-Assistant._tcp.local."]
        domain = "Lan."
        max_services = 50
        """),
        FILE,
    )
    d = config.discovery
    assert (d.browse, d.publish_hostnames, d.advertise) == (False, False, True)
    assert d.interfaces == ("eth0", "192.168.1.5")
    assert d.service_types == ("_http._tcp.local.", "_home-assistant._tcp.local.")
    assert (d.domain, d.max_services) == ("lan", 50)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            'service_types = ["http"]',
            ':4: discovery.service_types: item 1: expected a service type such as "_http._tcp", got "http"',
        ),
        (
            'domain = "bad domain"',
            ':4: discovery.domain: expected a domain such as "home.arpa" or "lan", got "bad domain"',
        ),
        ("max_services = 0", ":4: discovery.max_services: expected at least 1"),
        ("brows = true", ':4: discovery.brows: unknown key "brows"; did you mean "browse"?'),
    ],
)
def test_bad_discovery_values_name_their_line_and_key(table: str, expected: str) -> None:
    assert expected in only_error(f"[server]\nhttp_port = 8080\n[discovery]\n{table}\n")


@pytest.mark.parametrize(
    ("upstream", "stored"),
    [
        ("mdns://Plex._plexmediasvr._tcp", "mdns://Plex._plexmediasvr._tcp"),
        ("mdns://Living Room TV (2)._http._tcp.local/ui/", "mdns://Living Room TV (2)._http._tcp/ui"),
        ("mdns://NAS.box._HTTPS._tcp", "mdns://NAS.box._https._tcp"),
    ],
)
def test_mdns_upstreams_are_accepted_and_normalised(upstream: str, stored: str) -> None:
    text = f'[[sites]]\nname = "s"\nhosts = ["s.local"]\nupstreams = ["{upstream}"]\n'
    assert parse_config(text, FILE).sites[0].upstream_urls == (stored,)


@pytest.mark.parametrize(
    "upstream", ["mdns://Plex", "mdns://Plex._tcp", "mdns://._http._tcp", "mdns://X._http._tcp/a?b"]
)
def test_malformed_mdns_upstreams_are_refused_with_an_example(upstream: str) -> None:
    err = only_error(f'[[sites]]\nname = "s"\nhosts = ["s.local"]\nupstreams = ["{upstream}"]\n')
    assert err.startswith(f"{FILE}:4: sites[0].upstreams: item 1: ")
    assert "mdns" in err.lower()


def test_site_publish_and_verify_upstream_round_trip_through_the_file() -> None:
    config = parse_config(
        doc("""
        [discovery]
        publish_hostnames = false

        [[sites]]
        name = "nas"
        hosts = ["nas.local"]
        upstreams = ["https://192.168.1.30:5001"]
        verify_upstream = false
        publish = true

        [[sites]]
        name = "plex"
        hosts = ["plex.local"]
        upstreams = ["http://192.168.1.20:32400"]
        """),
        FILE,
    )
    nas, plex = config.sites
    assert (nas.verify_upstream, nas.publish, config.publishes(nas)) == (False, True, True)
    assert (plex.verify_upstream, plex.publish, config.publishes(plex)) == (True, None, False)
    table = site_table(nas).as_string()
    assert "verify_upstream = false" in table and "publish = true" in table
    assert "publish" not in site_table(plex).as_string()
