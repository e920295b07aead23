"""Routing: Host -> site -> path route, through a real engine to real backends (and `normalize_host` alone)."""

from __future__ import annotations

import aiohttp
import pytest

from homeproxy.engine.routing import normalize_host
from tests.engine.conftest import Backend, NamedEcho, StartProxy, fetch, make_config, raw_request, site


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plex.home.arpa", "plex.home.arpa"),
        ("PLEX.Home.Arpa:8080", "plex.home.arpa"),
        ("  Plex.Home.Arpa  ", "plex.home.arpa"),
        ("plex.home.arpa.", "plex.home.arpa"),
        ("plex.home.arpa.:80", "plex.home.arpa"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("[FE80::1]", "[fe80::1]"),
        ("192.168.1.20:8123", "192.168.1.20"),
        ("", ""),
        ("name:notaport", "name:notaport"),
    ],
)
def test_normalize_host(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


def test_normalize_host_drops_an_empty_port() -> None:
    assert normalize_host("plex.home.arpa:") == "plex.home.arpa"


async def test_exact_hosts_go_to_their_own_sites(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    a, b = await named_echo("a"), await named_echo("b")
    p = await proxy(make_config(site("a", ["a.lan"], [a.url]), site("b", ["b.lan", "bee.lan"], [b.url])))

    assert (await fetch(session, p, host="a.lan")).seen.name == "a"
    assert (await fetch(session, p, host="b.lan")).seen.name == "b"
    assert (await fetch(session, p, host="bee.lan")).seen.name == "b"


async def test_host_matching_ignores_case_and_port(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    plex = await named_echo("plex")
    p = await proxy(make_config(site("plex", ["plex.home.arpa"], [plex.url])))

    for host in ("PLEX.Home.Arpa:8080", "plex.home.arpa:80", "Plex.Home.Arpa", "plex.home.arpa."):
        got = await fetch(session, p, host=host)
        assert got.seen.name == "plex", host
        assert got.seen.one("Host") == host  # the client's Host goes upstream untouched


async def test_wildcard_matches_one_or_more_labels_but_not_the_bare_domain(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    wild = await named_echo("wild")
    p = await proxy(make_config(site("wild", ["*.example.lan"], [wild.url])))

    assert (await fetch(session, p, host="a.example.lan")).seen.name == "wild"
    assert (await fetch(session, p, host="a.b.example.lan")).seen.name == "wild"
    assert (await fetch(session, p, host="A.Example.LAN:8080")).seen.name == "wild"
    assert (await fetch(session, p, host="example.lan")).status == 404
    assert (await fetch(session, p, host="badexample.lan")).status == 404


async def test_exact_beats_wildcard_and_longer_wildcard_beats_shorter(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    exact, wide, narrow = await named_echo("exact"), await named_echo("wide"), await named_echo("narrow")
    p = await proxy(
        make_config(
            site("wide", ["*.example.lan"], [wide.url]),
            site("exact", ["nas.example.lan"], [exact.url]),
            site("narrow", ["*.b.example.lan"], [narrow.url]),
        )
    )

    assert (await fetch(session, p, host="nas.example.lan")).seen.name == "exact"
    assert (await fetch(session, p, host="other.example.lan")).seen.name == "wide"
    assert (await fetch(session, p, host="x.b.example.lan")).seen.name == "narrow"
    assert (await fetch(session, p, host="b.example.lan")).seen.name == "wide"


async def test_longest_path_prefix_wins(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    default, api, v2 = await named_echo("default"), await named_echo("api"), await named_echo("v2")
    routes = [{"path": "/api/", "upstreams": [api.url]}, {"path": "/api/v2/", "upstreams": [v2.url]}]
    p = await proxy(make_config(site("app", ["app.lan"], [default.url], routes=routes)))

    expectations = {
        "/api/v2/items?x=1": ("v2", "/api/v2/items?x=1"),
        "/api/v2": ("v2", "/api/v2"),
        "/api/items": ("api", "/api/items"),
        "/api/": ("api", "/api/"),
        "/api": ("api", "/api"),  # "/api/" also matches "/api"
        "/apix": ("default", "/apix"),
        "/": ("default", "/"),
        "/other/api/": ("default", "/other/api/"),
    }
    for path, (name, forwarded) in expectations.items():
        seen = (await fetch(session, p, path, host="app.lan")).seen
        assert (seen.name, seen.path) == (name, forwarded), path


async def test_strip_prefix_removes_the_route_path(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    default, api = await named_echo("default"), await named_echo("api")
    routes = [{"path": "/api/", "upstreams": [api.url], "strip_prefix": True}]
    p = await proxy(make_config(site("app", ["app.lan"], [default.url], routes=routes)))

    expectations = {
        "/api/users?id=7": "/users?id=7",
        "/api/users/7/": "/users/7/",
        "/api/": "/",
        "/api": "/",
        "/api?x=1": "/?x=1",
    }
    for path, forwarded in expectations.items():
        seen = (await fetch(session, p, path, host="app.lan")).seen
        assert (seen.name, seen.path) == ("api", forwarded), path
    assert (await fetch(session, p, "/apiary", host="app.lan")).seen.path == "/apiary"


async def test_routes_match_the_normalised_path(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    """Prefixes are compared with the normalised path (engine/paths.py; more in test_route_rewrite.py);
    strip_prefix cuts the path as sent when the prefix is spelled plainly, keeping `%2F`."""
    default, api = await named_echo("default"), await named_echo("api")
    routes = [{"path": "/api/", "upstreams": [api.url], "strip_prefix": True}]
    p = await proxy(make_config(site("app", ["app.lan"], [default.url], routes=routes)))

    seen = (await fetch(session, p, "/%61pi/users", host="app.lan")).seen
    assert (seen.name, seen.path) == ("api", "/users")
    seen = (await fetch(session, p, "/api/a%2Fb", host="app.lan")).seen
    assert (seen.name, seen.path) == ("api", "/a%2Fb")


async def test_upstream_with_a_base_path(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    default, svc = await named_echo("default"), await named_echo("svc")
    routes = [{"path": "/svc/", "upstreams": [f"{svc.url}/inner/"], "strip_prefix": True}]
    p = await proxy(make_config(site("app", ["app.lan"], [f"{default.url}/base"], routes=routes)))

    assert (await fetch(session, p, "/x/y?z=1", host="app.lan")).seen.path == "/base/x/y?z=1"
    assert (await fetch(session, p, "/", host="app.lan")).seen.path == "/base/"
    seen = (await fetch(session, p, "/svc/a?b=c", host="app.lan")).seen
    assert (seen.name, seen.path) == ("svc", "/inner/a?b=c")


async def test_disabled_site_gets_404_and_others_still_answer(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    on, off = await named_echo("on"), await named_echo("off")
    p = await proxy(
        make_config(site("on", ["on.lan"], [on.url]), site("off", ["off.lan", "*.off.lan"], [off.url], enabled=False))
    )

    assert (await fetch(session, p, host="off.lan")).status == 404
    assert (await fetch(session, p, host="x.off.lan")).status == 404
    assert (await fetch(session, p, host="on.lan")).seen.name == "on"


@pytest.mark.parametrize("accept", ["*/*", "text/html,application/xhtml+xml"])
async def test_unknown_host_404_reveals_nothing_configured(
    proxy: StartProxy, named_echo: NamedEcho, accept: str
) -> None:
    secret = await named_echo("secret")
    p = await proxy(make_config(site("plex", ["plex.home.arpa", "*.media.lan"], [f"{secret.url}/hidden"])))

    resp = await raw_request(
        p.port,
        f"GET / HTTP/1.1\r\nHost: unknown.lan\r\nAccept: {accept}\r\nConnection: close\r\n\r\n".encode(),
    )

    assert resp.status == 404
    whole = (repr(resp.headers) + resp.body.decode()).lower()
    for leak in ("plex", "home.arpa", "media.lan", "hidden", str(secret.port)):
        assert leak not in whole
    assert "no site" in whole
    if "html" in accept:
        assert (resp.get("Content-Type") or "").startswith("text/html")


async def test_missing_host_header_gets_an_answer_not_a_hang(proxy: StartProxy, echo: Backend) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))

    # HTTP/1.0 may omit Host: no site matches "".
    assert (await raw_request(p.port, b"GET / HTTP/1.0\r\n\r\n")).status == 404
    # An empty Host is valid and matches nothing.
    assert (await raw_request(p.port, b"GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")).status == 404
    # HTTP/1.1 without Host is malformed (RFC 9112 section 3.2): 400.
    assert (await raw_request(p.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")).status == 400


async def test_absolute_form_target_decides_the_site(proxy: StartProxy, named_echo: NamedEcho) -> None:
    a, b = await named_echo("a"), await named_echo("b")
    p = await proxy(make_config(site("a", ["a.lan"], [a.url]), site("b", ["b.lan"], [b.url])))

    resp = await raw_request(p.port, b"GET http://b.lan/x HTTP/1.1\r\nHost: a.lan\r\nConnection: close\r\n\r\n")

    assert resp.status == 200
    assert b'"name": "b"' in resp.body
