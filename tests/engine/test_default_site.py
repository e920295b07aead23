"""`[server] default_site`: the site that answers host names no site claims, through a real engine."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp

from homeproxy import paths
from tests.engine.conftest import NamedEcho, Proxy, Seen, StartProxy, fetch, make_config, raw_request, site


async def test_unknown_hosts_go_to_the_default_site(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    home, nas, wild = await named_echo("home"), await named_echo("nas"), await named_echo("wild")
    p = await proxy(
        make_config(
            site("home", ["home.lan"], [home.url]),
            site("nas", ["nas.lan"], [nas.url]),
            site("wild", ["*.lab.lan"], [wild.url]),
            default_site="home",
        )
    )

    assert (await fetch(session, p, "/x?y=1", host="unknown.lan")).seen.path == "/x?y=1"
    assert (await fetch(session, p, host="unknown.lan")).seen.name == "home"
    assert (await fetch(session, p, host="192.168.1.20:8080")).seen.name == "home"
    assert (await fetch(session, p, host="lab.lan")).seen.name == "home"  # a wildcard's bare domain
    # Named hosts still go to their own sites, the default site's own included.
    assert (await fetch(session, p, host="nas.lan")).seen.name == "nas"
    assert (await fetch(session, p, host="x.lab.lan")).seen.name == "wild"
    assert (await fetch(session, p, host="home.lan")).seen.name == "home"


async def test_requests_without_a_host_go_to_the_default_site(proxy: StartProxy, named_echo: NamedEcho) -> None:
    home = await named_echo("home")
    p = await proxy(make_config(site("home", ["home.lan"], [home.url]), default_site="home"))

    got = await raw_request(p.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert (got.status, Seen.of(got.body).name) == (200, "home")


async def test_the_default_site_has_its_routes(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    home, api = await named_echo("home"), await named_echo("api")
    routes = [{"path": "/api/", "upstreams": [api.url], "strip_prefix": True}]
    p = await proxy(make_config(site("home", ["home.lan"], [home.url], routes=routes), default_site="home"))

    seen = (await fetch(session, p, "/api/v", host="elsewhere.lan")).seen
    assert (seen.name, seen.path) == ("api", "/v")


async def test_a_disabled_default_site_answers_nothing(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    home, nas = await named_echo("home"), await named_echo("nas")
    p = await proxy(
        make_config(
            site("home", ["home.lan"], [home.url], enabled=False),
            site("nas", ["nas.lan"], [nas.url]),
            default_site="home",
        )
    )

    assert (await fetch(session, p, host="unknown.lan")).status == 404
    assert (await fetch(session, p, host="home.lan")).status == 404
    assert (await fetch(session, p, host="nas.lan")).seen.name == "nas"


async def test_default_site_follows_apply(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    home, nas = await named_echo("home"), await named_echo("nas")
    sites = (site("home", ["home.lan"], [home.url]), site("nas", ["nas.lan"], [nas.url]))
    p = await proxy(make_config(*sites))
    assert (await fetch(session, p, host="unknown.lan")).status == 404

    await asyncio.to_thread(p.engine.apply, make_config(*sites, default_site="nas"))
    assert (await fetch(session, p, host="unknown.lan")).seen.name == "nas"
    await asyncio.to_thread(p.engine.apply, make_config(*sites, default_site=""))
    assert (await fetch(session, p, host="unknown.lan")).status == 404


# --- a default site with TLS --------------------------------------------------------------


async def start_tls(proxy: StartProxy, *sites: dict[str, object]) -> Proxy:
    p = await proxy(make_config(*sites, https_port=0, default_site="home"))
    assert p.engine.tls_errors == ()
    return p


async def get_plain(p: Proxy, target: str, host: str) -> tuple[int, str | None, bytes]:
    got = await raw_request(p.port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    return got.status, got.get("Location"), got.body


async def test_plain_http_for_an_unknown_name_redirects_to_the_tls_default_sites_own_name(
    proxy: StartProxy, named_echo: NamedEcho
) -> None:
    home = await named_echo("home")
    p = await start_tls(proxy, site("home", ["*.home.arpa", "home.home.arpa", "dash.lan"], [home.url], tls=True))
    https = p.engine.https_addresses[0][1]

    # An unknown name has no certificate: the redirect names one the site's certificate covers.
    status, location, _ = await get_plain(p, "/x?y=1", "unknown.lan")
    assert (status, location) == (308, f"https://home.home.arpa:{https}/x?y=1")
    # The site's own names, wildcards included, keep theirs.
    assert (await get_plain(p, "/x", "dash.lan"))[:2] == (308, f"https://dash.lan:{https}/x")
    assert (await get_plain(p, "/x", "a.home.arpa"))[:2] == (308, f"https://a.home.arpa:{https}/x")
    # An address cannot be served over HTTPS (no SNI): it is served on plain HTTP, as for any TLS site.
    status, _, body = await get_plain(p, "/x", "127.0.0.1")
    assert (status, Seen.of(body).name) == (200, "home")


async def test_a_tls_default_site_with_only_wildcards_serves_unknown_names_on_plain_http(
    proxy: StartProxy, named_echo: NamedEcho
) -> None:
    home = await named_echo("home")
    p = await start_tls(proxy, site("home", ["*.home.arpa"], [home.url], tls=True))

    status, _, body = await get_plain(p, "/x", "unknown.lan")
    assert (status, Seen.of(body).path) == (200, "/x")
    assert (await get_plain(p, "/x", "a.home.arpa"))[0] == 308


async def test_a_tls_default_site_without_redirect_serves_plain_http(proxy: StartProxy, named_echo: NamedEcho) -> None:
    home = await named_echo("home")
    p = await start_tls(proxy, site("home", ["home.home.arpa"], [home.url], tls=True, redirect_to_https=False))

    status, _, body = await get_plain(p, "/x", "unknown.lan")
    assert (status, Seen.of(body).name) == (200, "home")


async def test_over_https_an_unknown_host_gets_the_tls_default_site(proxy: StartProxy, named_echo: NamedEcho) -> None:
    home, plain = await named_echo("home"), await named_echo("plain")
    p = await start_tls(
        proxy,
        site("home", ["home.home.arpa"], [home.url], tls=True),
        site("plain", ["plain.lan"], [plain.url]),
    )
    root = (paths.data_dir() / "ca" / "root.crt").read_text()
    ctx = ssl.create_default_context(cadata=root)
    url = f"https://127.0.0.1:{p.engine.https_addresses[0][1]}/x"

    async with aiohttp.ClientSession() as s:
        # SNI names the TLS site (nothing else gets a handshake); Host names no site.
        kw = {"ssl": ctx, "server_hostname": "home.home.arpa"}
        async with s.get(url, headers={"Host": "unknown.lan"}, **kw) as r:  # type: ignore[arg-type]
            assert (r.status, Seen.of(await r.read()).name) == (200, "home")
        async with s.get(url, headers={"Host": "plain.lan"}, **kw) as r:  # type: ignore[arg-type]
            assert r.status == 421  # a named site that is not served over TLS, as before
