"""`Discovery` (the runner) with real zeroconf on loopback, and an `mdns://` upstream end to end
through a real `Runtime`: the site follows its service to a new port without a config change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from zeroconf import AddressResolver  # type: ignore[attr-defined]  # exported, not in __all__

from homeproxy.config import Config
from homeproxy.config.load import parse_config
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.events import DISCOVERY_EVENTS, NameAnnounced, NameWithdrawn, ServiceFound, ServiceLost
from homeproxy.discovery.interfaces import Interface
from homeproxy.discovery.runner import Discovery, mdns_refs
from homeproxy.discovery.service import MdnsRef
from homeproxy.engine import EventBus, ProblemReported, Subscription
from homeproxy.runtime import Runtime
from tests.discovery.conftest import Peer, unique_name, unique_type
from tests.waiting import wait_for

LO = (Interface("lo", ("127.0.0.1",)),)


def config(discovery: str = "", sites: str = "") -> Config:
    return parse_config(
        f'[server]\nlisten = ["127.0.0.1"]\nhttp_port = 0\n\n[discovery]\n{discovery}\n\n{sites}', "test.toml"
    )


def browse_only(type_: str, extra: str = "") -> Config:
    return config(
        f'service_types = ["{type_.removesuffix(".local.")}"]\nbrowse_all_types = false\n'
        f"publish_hostnames = false\n{extra}"
    )


def site(name: str, host: str, upstream: str) -> str:
    return f'[[sites]]\nname = "{name}"\nhosts = ["{host}"]\nupstreams = ["{upstream}"]\n'


class Running:
    def __init__(self) -> None:
        self.bus = EventBus()
        self.sub = self.bus.subscribe("test", kinds=DISCOVERY_EVENTS)
        self.directory = ServiceDirectory()
        self.discovery = Discovery(self.bus, self.directory)
        self.events: list[object] = []

    def drain(self) -> list[object]:
        self.events.extend(self.sub.drain())
        return self.events

    async def start(self, cfg: Config, port: int = 8080) -> None:
        await asyncio.to_thread(self.discovery.start, cfg, port=port)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    r = Running()
    yield r
    await asyncio.to_thread(r.discovery.stop)


async def test_it_browses_and_follows_config_changes(running: Running, peer: Peer) -> None:
    type_ = unique_type()
    name = unique_name("NAS")
    d = running.discovery
    await running.start(browse_only(type_, "max_services = 50"))
    assert (d.running, d.error, d.interfaces) == (True, "", LO)
    assert running.directory.max_services == 50
    started = time.monotonic()
    await peer.register(peer.info(name, type_, port=5000))
    key = f"{name}.{type_}"
    await wait_for(lambda: running.directory.get(key), description="the service in the directory")
    print(f"\nregistration -> directory (runner): {(time.monotonic() - started) * 1000:.0f} ms")
    await wait_for(lambda: any(isinstance(e, ServiceFound) for e in running.drain()), description="ServiceFound")

    d.apply(config("browse = false\npublish_hostnames = false"), port=8080)
    await wait_for(lambda: not d.running, description="zeroconf stopped: nothing needs it")
    assert running.directory.get(key) is None
    assert any(isinstance(e, ServiceLost) for e in running.drain())
    assert d.interfaces == () and d.error == ""

    d.apply(browse_only(type_), port=8080)
    await wait_for(lambda: running.directory.get(key), description="the service found again")
    assert d.running

    stopping = time.monotonic()
    await asyncio.to_thread(d.stop)
    assert time.monotonic() - stopping < 3.0
    assert not d.running
    d.apply(browse_only(type_), port=8080)  # after stop: ignored, no error


async def test_an_unknown_interface_is_an_error_not_a_crash(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEPROXY_MDNS_INTERFACES", "no-such-if0")
    await running.start(config())
    d = running.discovery
    assert not d.running
    assert 'no interface "no-such-if0"' in d.error


async def test_nothing_to_do_starts_no_zeroconf(running: Running) -> None:
    await running.start(config("browse = false"))
    d = running.discovery
    assert (d.running, d.error, d.interfaces, dict(d.names)) == (False, "", (), {})


async def test_an_mdns_upstream_is_resolved_with_browsing_off(running: Running, peer: Peer) -> None:
    type_ = unique_type()
    wanted, other = unique_name("Plex"), unique_name("Other")
    ref = f"mdns://{wanted}.{type_.removesuffix('.local.')}/web"
    cfg = config("browse = false\npublish_hostnames = false", site("plex", "plex.test", ref))
    assert mdns_refs(cfg) == (MdnsRef(wanted, type_, "/web"),)
    await running.start(cfg)
    assert running.discovery.running
    await peer.register(peer.info(other, type_))
    await peer.register(peer.info(wanted, type_, port=32400))
    await wait_for(lambda: running.directory.resolve(ref), description="the referenced service resolved")
    assert running.directory.resolve(ref) == "http://127.0.0.1:32400"
    assert running.directory.get(f"{other}.{type_}") is None


async def test_site_names_are_announced_and_withdrawn(running: Running, peer: Peer) -> None:
    host = f"hpt-{unique_name()}.local"
    await running.start(config("browse = false", site("nas", host, "http://127.0.0.1:9")))
    d = running.discovery
    await wait_for(
        lambda: (s := d.names.get(host)) is not None and s.status == "announced", description="the name announced"
    )
    assert d.names[host].addresses == ("127.0.0.1",)
    assert any(isinstance(e, NameAnnounced) and e.host == host for e in running.drain())

    resolver = AddressResolver(host + ".")
    assert await resolver.async_request(peer.aiozc.zeroconf, 3000)
    assert resolver.parsed_addresses() == ["127.0.0.1"]

    await asyncio.to_thread(d.stop)
    assert any(isinstance(e, NameWithdrawn) and e.host == host for e in running.drain())


async def test_changed_interfaces_move_zeroconf(running: Running, peer: Peer, monkeypatch: pytest.MonkeyPatch) -> None:
    type_ = unique_type()
    d = running.discovery
    await running.start(browse_only(type_))
    assert d.interfaces == LO
    monkeypatch.setenv("HOMEPROXY_MDNS_INTERFACES", "127.0.0.2")  # still loopback, another address
    d.apply(browse_only(type_), port=8080)
    await wait_for(lambda: d.interfaces == (Interface("127.0.0.2", ("127.0.0.2",)),), description="the new interface")
    assert d.running and d.error == ""
    name = unique_name("after")
    await peer.register(peer.info(name, type_))
    await wait_for(lambda: running.directory.get(f"{name}.{type_}"), description="a service found after the move")


# --- end to end: an mdns:// upstream through a real Runtime -------------------------------------


async def fetch(session: aiohttp.ClientSession, port: int, host: str) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}/", headers={"Host": host}) as r:
        return r.status, await r.text()


async def test_an_mdns_upstream_follows_its_service_to_a_new_port(
    tmp_path: Path, peer: Peer, http_backend: Callable[[str], Awaitable[int]]
) -> None:
    name = unique_name("Media Server")
    one, two = await http_backend("one"), await http_backend("two")
    path = tmp_path / "config.toml"
    path.write_text(
        '[server]\nlisten = ["127.0.0.1"]\nhttp_port = 0\n\n[logging]\naccess_log = false\n\n'
        '[discovery]\ninterfaces = ["127.0.0.1"]\nservice_types = ["_http._tcp"]\nbrowse_all_types = false\n'
        "publish_hostnames = false\n\n" + site("media", "media.test", f"mdns://{name}._http._tcp"),
        encoding="utf-8",
    )
    runtime = Runtime(path, log_dir=tmp_path / "log", data_dir=tmp_path / "data", discovery=True)
    await asyncio.to_thread(runtime.start, watch=False)
    try:
        assert runtime.engine is not None and runtime.discovery is not None
        assert runtime.discovery.running, runtime.discovery.error
        port = runtime.engine.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            status, _ = await fetch(session, port, "media.test")
            assert status == 502  # not on the network yet

            info = peer.info(name, "_http._tcp.local.", port=one)
            started = time.monotonic()
            await peer.register(info)
            await wait_for(
                lambda: runtime.directory.resolve(f"mdns://{name}._http._tcp"), description="the service resolved"
            )
            in_directory = time.monotonic() - started
            assert await fetch(session, port, "media.test") == (200, "one")
            print(
                f"\nregistration -> directory: {in_directory * 1000:.0f} ms; -> first proxied response: "
                f"{(time.monotonic() - started) * 1000:.0f} ms"
            )

            # The service moves: goodbye, then the same name on a new port.
            await peer.unregister(info)
            moved = peer.info(name, "_http._tcp.local.", port=two)
            started = time.monotonic()
            await peer.register(moved)
            ref = f"mdns://{name}._http._tcp"
            await wait_for(
                lambda: runtime.directory.resolve(ref) == f"http://127.0.0.1:{two}", description="the new port"
            )
            assert await fetch(session, port, "media.test") == (200, "two")
            print(f"re-registration on a new port -> proxied there: {(time.monotonic() - started) * 1000:.0f} ms")
            assert runtime.store.config.sites[0].upstream_urls == (f"mdns://{name}._http._tcp",)
    finally:
        await asyncio.to_thread(runtime.stop)


# --- homeproxy itself: its own adverts, and upstreams that loop back -----------------------------


def gathered(sub: Subscription, into: list[ProblemReported], count: int) -> Callable[[], bool]:
    """A `wait_for` predicate: drain `sub` into `into` until it holds `count` events."""

    def check() -> bool:
        into.extend(cast("list[ProblemReported]", sub.drain()))
        return len(into) >= count

    return check


async def test_its_own_advert_is_marked_and_an_upstream_to_itself_is_reported(running: Running, peer: Peer) -> None:
    problems = running.bus.subscribe("problems", kinds=(ProblemReported,))
    port = 18093
    name, host = unique_name("hpt-own"), f"hpt-{unique_name()}.local"
    discovery = 'service_types = ["_http._tcp"]\nbrowse_all_types = false\nadvertise = true'
    cfg = config(discovery, site(name, host, "http://127.0.0.1:9"))
    d = running.discovery
    started = time.monotonic()
    await running.start(cfg, port=port)
    assert (d.identity.instance_id, d.identity.ports) == (d.instance_id, frozenset({port}))
    assert "127.0.0.1" in d.identity.addresses
    device = unique_name("Device")
    await peer.register(peer.info(device, "_http._tcp.local.", port=5000))

    # Its own advert (the site's, with this run's id in the TXT) comes back through its own browser.
    key = f"{name}._http._tcp.local."
    await wait_for(lambda: running.directory.get(key), timeout=6, description="its own advert, browsed")
    print(f"\nstart -> own advert in the directory: {time.monotonic() - started:.3f} s")
    mine = running.directory.get(key)
    assert mine is not None and mine.own and dict(mine.properties)["homeproxy"] == d.instance_id
    assert mine.port == port
    await wait_for(lambda: running.directory.get(f"{device}._http._tcp.local."), description="the device")
    theirs = running.directory.get(f"{device}._http._tcp.local.")
    assert theirs is not None and not theirs.own
    assert problems.drain() == []

    # Sites forwarding to homeproxy itself: said once each, when the config is applied.
    own_ref = f"mdns://{name}._http._tcp"
    loops = (
        site("by-name", "a.test", own_ref)
        + site("by-url", "b.test", f"http://localhost:{port}/x")
        + site("fine", "c.test", f"mdns://{device}._http._tcp")
    )
    d.apply(config(discovery, site(name, host, "http://127.0.0.1:9") + loops), port=port)
    said: list[ProblemReported] = []
    await wait_for(gathered(problems, said, 2), description="two problems")
    assert sorted((p.source, p.solved) for p in said) == [("site by-name", False), ("site by-url", False)]
    by_name = next(p.message for p in said if p.source == "site by-name")
    assert f"forwards to {own_ref}, which is homeproxy's own advert" in by_name
    by_url = next(p.message for p in said if p.source == "site by-url")
    assert f"forwards to http://localhost:{port}/x, which is homeproxy itself" in by_url
    # The engine's resolver never hands out homeproxy's own advert; the device's it does.
    assert running.directory.resolve(own_ref) is None
    assert running.directory.resolve(f"mdns://{device}._http._tcp") == "http://127.0.0.1:5000"

    # Applying the same again says nothing more; fixing them says so once.
    d.apply(config(discovery, site(name, host, "http://127.0.0.1:9") + loops), port=port)
    d.apply(cfg, port=port)
    solved: list[ProblemReported] = []
    await wait_for(gathered(problems, solved, 2), description="both solved")
    assert sorted((p.source, p.solved) for p in solved) == [("site by-name", True), ("site by-url", True)]
