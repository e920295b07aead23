"""`mdns://` upstreams resolved per request through the engine's resolver, and `verify_upstream`.

The directory here is filled by hand (the engine's side of the seam); the same
path fed by real zeroconf is tested in tests/discovery/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from homeproxy.config import Config
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.service import DiscoveredService
from homeproxy.engine import Engine, EventBus
from tests.engine.conftest import NamedEcho, Proxy, StartProxy, echo_handler, fetch, make_config, record, site
from tests.engine.test_errors import self_signed_context

PLEX = "Plex Media Server._plexmediasvr._tcp.local."


def plex_at(port: int, *, path: str = "") -> DiscoveredService:
    return DiscoveredService(
        PLEX, "Plex Media Server", "_plexmediasvr._tcp.local.", "plexbox.local.", ("127.0.0.1",), port, path=path
    )


@pytest.fixture
async def resolving_proxy() -> AsyncIterator[Callable[[Config, ServiceDirectory], Awaitable[Proxy]]]:
    """Like `proxy`, with the directory's resolver plugged into the engine (as `Runtime` does)."""
    engines: list[Engine] = []

    async def start(config: Config, directory: ServiceDirectory) -> Proxy:
        bus = EventBus()
        engine = Engine(config, bus, resolver=directory.resolve)
        engines.append(engine)
        await asyncio.to_thread(engine.start)
        return Proxy(engine, bus)

    yield start
    for engine in engines:
        await asyncio.to_thread(engine.stop)


async def test_mdns_upstream_follows_the_service_to_a_new_port(
    resolving_proxy: Callable[[Config, ServiceDirectory], Awaitable[Proxy]],
    named_echo: NamedEcho,
    session: aiohttp.ClientSession,
) -> None:
    old, new = await named_echo("old-lease"), await named_echo("new-lease")
    directory = ServiceDirectory()
    directory.upsert(plex_at(old.port))
    p = await resolving_proxy(
        make_config(site("plex", ["plex.local"], ["mdns://Plex Media Server._plexmediasvr._tcp/web"])), directory
    )
    events = record(p)

    first = await fetch(session, p, "/library?x=1", host="plex.local")
    directory.upsert(plex_at(new.port))  # the device moved (DHCP, restart): no config change, no apply
    second = await fetch(session, p, "/library", host="plex.local")

    assert (first.seen.name, first.seen.path) == ("old-lease", "/web/library?x=1")
    assert (second.seen.name, second.seen.path) == ("new-lease", "/web/library")
    a, b = await events.wait(2)
    assert (a.upstream, b.upstream) == (old.url + "/web", new.url + "/web")


async def test_mdns_upstream_not_on_the_network_is_a_502_that_says_so(
    resolving_proxy: Callable[[Config, ServiceDirectory], Awaitable[Proxy]], session: aiohttp.ClientSession
) -> None:
    directory = ServiceDirectory()
    p = await resolving_proxy(make_config(site("plex", ["plex.local"], ["mdns://Plex._plexmediasvr._tcp"])), directory)
    events = record(p)

    got = await fetch(session, p, "/", host="plex.local")

    assert got.status == 502
    (ev,) = await events.wait(1)
    assert ev.error == "upstream unreachable: mDNS service mdns://Plex._plexmediasvr._tcp is not on the network"
    assert ev.upstream == "mdns://Plex._plexmediasvr._tcp"


async def test_a_missing_mdns_service_fails_over_to_the_next_upstream(
    resolving_proxy: Callable[[Config, ServiceDirectory], Awaitable[Proxy]],
    named_echo: NamedEcho,
    session: aiohttp.ClientSession,
) -> None:
    plain = await named_echo("fallback")
    p = await resolving_proxy(
        make_config(site("plex", ["plex.local"], ["mdns://Plex._plexmediasvr._tcp", plain.url])), ServiceDirectory()
    )

    for i in range(3):  # whichever upstream's turn it is, the request lands on the one that is there
        assert (await fetch(session, p, f"/{i}", host="plex.local")).seen.name == "fallback"


async def test_without_a_resolver_an_mdns_upstream_is_a_502(proxy: StartProxy, session: aiohttp.ClientSession) -> None:
    p = await proxy(make_config(site("plex", ["plex.local"], ["mdns://Plex._plexmediasvr._tcp"])))
    assert (await fetch(session, p, "/", host="plex.local")).status == 502


@pytest.mark.parametrize(("verify", "status"), [(True, 502), (False, 200)])
async def test_verify_upstream_off_accepts_a_self_signed_device(
    proxy: StartProxy, session: aiohttp.ClientSession, tmp_path: Path, verify: bool, status: int
) -> None:
    runner = web.ServerRunner(web.Server(echo_handler("nas")), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed_context(tmp_path))
    await tls.start()
    try:
        p = await proxy(
            make_config(site("nas", ["nas.local"], [f"https://127.0.0.1:{tls.port}"], verify_upstream=verify))
        )
        got = await fetch(session, p, "/ui", host="nas.local")
        assert got.status == status
        if status == 200:
            assert (got.seen.name, got.seen.path) == ("nas", "/ui")
    finally:
        await runner.cleanup()
