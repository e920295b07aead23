"""`Browser` against real zeroconf peers on 127.0.0.1: found, resolved, updated, lost, and what
hostile or odd devices send (markup and escape characters in names, bare or oversized TXT, floods,
flapping, services without an address)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncZeroconf

from homeproxy.discovery.browse import Browser
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.events import ServiceFound, ServiceLost, ServiceUpdated
from homeproxy.discovery.service import (
    MAX_PROPERTIES,
    MAX_TEXT,
    SELF_KEY,
    DiscoveredService,
    MdnsRef,
    SelfIdentity,
    clean_text,
    new_instance_id,
)
from tests.discovery.conftest import LOOPBACK, Peer, unique_name, unique_type
from tests.waiting import wait_for


@dataclass
class Browsing:
    """A browsing side: its own zeroconf on loopback, a directory and the events published."""

    aiozc: AsyncZeroconf
    directory: ServiceDirectory
    events: list[object] = field(default_factory=list)
    browsers: list[Browser] = field(default_factory=list)

    def browser(self, **kwargs: Any) -> Browser:
        b = Browser(self.aiozc, self.directory, self.events.append, **kwargs)
        self.browsers.append(b)
        return b

    def of(self, kind: type, name: str) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, (ServiceFound, ServiceUpdated, ServiceLost))
            and isinstance(e, kind)
            and e.service.instance == name
        ]

    def get(self, instance: str, type_: str) -> DiscoveredService | None:
        return self.directory.get(f"{clean_text(instance)}.{type_}")


@pytest.fixture
async def browsing() -> AsyncIterator[Browsing]:
    b = Browsing(AsyncZeroconf(interfaces=LOOPBACK), ServiceDirectory())
    yield b
    for br in b.browsers:
        await br.close()
    await b.aiozc.async_close()


async def test_a_service_is_found_resolved_updated_and_lost(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    name = unique_name("Living Room ☃")
    browsing.browser(types=[type_])
    info = peer.info(name, type_, port=8123, properties={"path": "web/", "flag": None, "version": "1.2"})
    started = time.monotonic()
    await peer.register(info)
    await wait_for(lambda: browsing.get(name, type_), description="the service in the directory")
    print(f"\nregistration -> directory: {(time.monotonic() - started) * 1000:.0f} ms")
    s = browsing.get(name, type_)
    assert s is not None
    assert (s.instance, s.type, s.addresses, s.port, s.path) == (name, type_, ("127.0.0.1",), 8123, "/web")
    assert s.host == info.server
    assert dict(s.properties) == {"path": "web/", "flag": None, "version": "1.2"}
    assert s.url() == "http://127.0.0.1:8123/web"
    assert [e.service for e in browsing.of(ServiceFound, name)] == [s]

    info.port = 9000
    await peer.update(info)
    await wait_for(lambda: browsing.of(ServiceUpdated, name), description="ServiceUpdated")
    updated = browsing.of(ServiceUpdated, name)[-1]
    assert (updated.previous.port, updated.service.port) == (8123, 9000)
    assert browsing.directory.resolve(MdnsRef(name, type_)) == "http://127.0.0.1:9000"

    await peer.unregister(info)
    await wait_for(lambda: browsing.of(ServiceLost, name), description="ServiceLost")
    assert browsing.get(name, type_) is None


async def test_hostile_names_and_txt_arrive_as_plain_text(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    hostile = "[red]x[/] \x1b[2J ☃ \u202eevil"
    browsing.browser(types=[type_])
    info = peer.info(
        hostile,
        type_,
        properties={b"flag": None, b"bad": b"\xff\xfe ok", b"path": b"/x\x1b[2J", b"esc\x07": b"\x1b]0;t\x07"},
    )
    peer.announce_raw(info)  # zeroconf's own register refuses control characters; devices send them anyway
    shown = clean_text(hostile)
    await wait_for(lambda: browsing.get(hostile, type_), description="the hostile service")
    s = browsing.get(hostile, type_)
    assert s is not None
    assert s.instance == shown == "[red]x[/] \\x1b[2J ☃ evil"
    assert s.port == 8080 and s.addresses == ("127.0.0.1",)
    props = dict(s.properties)
    assert props["flag"] is None
    assert props["bad"] == "\ufffd\ufffd ok"
    assert props["esc\\x07"] == "\\x1b]0;t\\x07"
    assert s.path == ""  # a path with escape characters is no path
    for text in (s.name, s.instance, s.host, *(k for k, _ in s.properties), *(v or "" for _, v in s.properties)):
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text), repr(text)
    assert s.ref.key == s.key  # the directory and an mdns:// reference agree on its name

    peer.goodbye_raw(info)
    await wait_for(lambda: browsing.of(ServiceLost, shown), description="ServiceLost")
    assert browsing.get(hostile, type_) is None


async def test_bare_and_oversized_txt(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    browsing.browser(types=[type_])
    bare, big = unique_name("bare"), unique_name("big")
    await peer.register(peer.info(bare, type_, properties={}))  # sent as one empty string: {b'': None}
    many = {f"k{i:03}".encode(): b"v" * 40 for i in range(120)}
    many[b"long"] = b"L" * 250
    await peer.register(peer.info(big, type_, properties=many))
    await wait_for(lambda: browsing.get(bare, type_) and browsing.get(big, type_), description="both services")
    s_bare, s_big = browsing.get(bare, type_), browsing.get(big, type_)
    assert s_bare is not None and s_big is not None
    assert s_bare.properties == () and s_bare.path == "" and s_bare.resolved
    assert len(s_big.properties) == MAX_PROPERTIES
    assert all(len(k) <= 64 and len(v or "") <= MAX_TEXT for k, v in s_big.properties)


async def test_a_flood_stops_at_the_directory_bound(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    browsing.directory.max_services = 5
    browser = browsing.browser(types=[type_])
    for i in range(15):
        peer.announce_raw(peer.info(f"flood {i:02}", type_, port=1000 + i))
    await wait_for(lambda: browsing.directory.refused >= 10, description="ten services refused")
    assert len(browsing.directory) == 5
    assert len(browsing.events) == 5
    await wait_for(lambda: not browser._tasks, description="no resolution left running")


async def test_a_flapping_service_ends_in_its_last_state(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    name = unique_name("flap")
    browser = browsing.browser(types=[type_])
    for port in range(2000, 2006):
        info = peer.info(name, type_, port=port, server="flap.local.")
        peer.announce_raw(info)
        if port != 2005:
            peer.goodbye_raw(info)
    await wait_for(lambda: (s := browsing.get(name, type_)) and s.port == 2005, description="the last registration")
    await wait_for(lambda: not browser._tasks, description="no resolution left running")
    s = browsing.get(name, type_)
    assert s is not None and s.resolved
    assert len(browsing.directory) == 1


async def test_a_service_without_address_is_listed_then_resolved_on_retry(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    name = unique_name("late")
    host = f"late-{unique_name()}.local."
    browser = browsing.browser(types=[type_], resolve_timeout=0.3, retry_delay=0.05)
    await peer.register(peer.info(name, type_, port=7000, addresses=(), server=host))
    await wait_for(lambda: browsing.get(name, type_), description="the unresolved service")
    s = browsing.get(name, type_)
    assert s is not None and (s.port, s.addresses, s.resolved, s.base_url()) == (7000, (), False, None)
    await wait_for(lambda: browser._attempts.get(s.key, 0) >= 2, description="asked again, unresolved again")

    # The host's address shows up later (here: another registration on the same host name).
    await peer.register(peer.info(unique_name("other"), unique_type(), addresses=("127.0.0.1",), server=host))
    await wait_for(
        lambda: (s := browsing.get(name, type_)) and s.resolved, description="the service resolved on a later pass"
    )
    assert browsing.directory.resolve(MdnsRef(name, type_)) == "http://127.0.0.1:7000"


async def test_types_change_live(browsing: Browsing, peer: Peer) -> None:
    type_a, type_b = unique_type(), unique_type()
    a, b = unique_name("a"), unique_name("b")
    browser = browsing.browser(types=[type_a])
    await peer.register(peer.info(b, type_b))
    await peer.register(peer.info(a, type_a))
    await wait_for(lambda: browsing.get(a, type_a), description="the service of the browsed type")
    assert browsing.get(b, type_b) is None
    assert browser.browsed_types == {type_a}

    browser.set_types([type_b.removesuffix(".local.")], browse_all_types=False)
    await wait_for(lambda: browsing.get(b, type_b), description="the service of the newly browsed type")
    assert browsing.get(a, type_a) is None
    assert browsing.of(ServiceLost, a)
    assert browser.browsed_types == {type_b}


async def test_a_referenced_service_is_kept_even_when_its_type_is_not_browsed(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    wanted, other = unique_name("wanted"), unique_name("other")
    browser = browsing.browser(types=[], refs=[MdnsRef(wanted, type_)])
    await peer.register(peer.info(other, type_))
    await peer.register(peer.info(wanted, type_))
    await wait_for(lambda: browsing.get(wanted, type_), description="the referenced service")
    assert browsing.get(other, type_) is None

    browser.set_refs([])
    await wait_for(lambda: browsing.get(wanted, type_) is None, description="the service forgotten")
    browser.watch(MdnsRef(other, type_))
    await wait_for(lambda: browsing.get(other, type_), description="the newly referenced service")


async def test_every_listed_type_is_browsed_up_to_a_cap(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    name = unique_name("listed")
    browser = browsing.browser(types=[], browse_all_types=True)
    await peer.register(peer.info(name, type_))
    await wait_for(lambda: browsing.get(name, type_), description="a service of a type found by enumeration")
    assert type_ in browser.browsed_types

    capped = browsing.browser(types=[], browse_all_types=True, max_types=1)
    await peer.register(peer.info(unique_name("more"), unique_type()))
    await wait_for(
        lambda: capped.types_refused >= 1 and len(capped.browsed_types) == 1,
        description="one type browsed, one over the cap refused",
    )


async def test_closing_with_forget_empties_the_directory(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    name = unique_name("gone")
    browser = browsing.browser(types=[type_])
    await peer.register(peer.info(name, type_))
    await wait_for(lambda: browsing.get(name, type_), description="the service")
    await browser.close(forget=True)
    assert browsing.get(name, type_) is None
    assert browsing.of(ServiceLost, name)


async def test_a_burst_of_updates_is_resolved_once(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    name = unique_name("busy")
    browser = browsing.browser(types=[type_])
    info = await peer.register(peer.info(name, type_))
    await wait_for(lambda: browsing.get(name, type_), description="the service")
    for _ in range(100):  # as zeroconf would call the handler for a chatty device
        browser._on_change(browsing.aiozc.zeroconf, type_, info.name, ServiceStateChange.Updated)
    assert len(browser._tasks) == 1
    await wait_for(lambda: not browser._tasks, description="the coalesced resolution done")
    assert len(browsing.events) == 1  # nothing changed: no ServiceUpdated


async def test_homeproxys_own_adverts_are_marked(browsing: Browsing, peer: Peer) -> None:
    type_ = unique_type()
    me = SelfIdentity.of(new_instance_id(), ["192.0.2.5"], [8080])
    browsing.browser(types=[type_], identity=me)
    by_id, old, other_hp, device = (unique_name(n) for n in ("ById", "Old", "OtherHp", "Device"))
    # Our id in the TXT (wherever it points); an older homeproxy's advert (no id) on our address
    # and port; another homeproxy (its own id); a device on this machine (another port).
    await peer.register(peer.info(by_id, type_, port=9999, properties={SELF_KEY: me.instance_id, "path": "/"}))
    await peer.register(peer.info(old, type_, port=8080))
    await peer.register(peer.info(other_hp, type_, port=9998, properties={SELF_KEY: new_instance_id()}))
    await peer.register(peer.info(device, type_, port=5000))
    names = (by_id, old, other_hp, device)
    await wait_for(lambda: all(browsing.get(n, type_) for n in names), description="all four")

    def own() -> dict[str, bool]:
        return {n: s.own for n in names if (s := browsing.get(n, type_)) is not None}

    assert own() == {by_id: True, old: True, other_hp: False, device: False}
    assert [e.service.own for e in browsing.of(ServiceFound, by_id)] == [True]

    # homeproxy moved to port 5000 (a config change): the marks follow, each change an update.
    browser = browsing.browsers[0]
    browser.set_identity(SelfIdentity.of(me.instance_id, ["192.0.2.5"], [5000]))
    assert own() == {by_id: True, old: False, other_hp: False, device: True}
    assert [(e.previous.own, e.service.own) for e in browsing.of(ServiceUpdated, device)] == [(False, True)]
    assert [(e.previous.own, e.service.own) for e in browsing.of(ServiceUpdated, old)] == [(True, False)]
    assert browsing.of(ServiceUpdated, by_id) == []
