"""`wanted_names` and `Publisher`: real zeroconf on loopback (`interfaces=["127.0.0.1"]`), no mocks.

A second `AsyncZeroconf` in the same process plays the LAN: it resolves what the
publisher announces, browses its adverts, and holds names the publisher must not take.
Other test processes on this machine share loopback multicast, so every test
announces names of its own (`plex-1a2b3c.local`).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from zeroconf import (
    DNSQuestionType,
    IPVersion,
    NonUniqueNameException,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf._dns import DNSAddress, DNSQuestion
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf._services.info import AddressResolver
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
from zeroconf.const import _CLASS_IN, _CLASS_UNIQUE, _FLAGS_AA, _FLAGS_QR_QUERY, _FLAGS_QR_RESPONSE, _TYPE_A

from homeproxy.config.model import Config, DiscoverySettings, Site, Upstream
from homeproxy.discovery.events import NameAnnounced, NameConflict, NameWithdrawn
from homeproxy.discovery.publish import NAME_TYPE, NameState, Publisher, PublishSpec, wanted_names
from tests.waiting import wait_for

LOOPBACK = ["127.0.0.1"]
HTTP = "_http._tcp.local."


def site(name: str, *hosts: str, **changes: object) -> Site:
    return replace(Site(name=name, hosts=hosts, upstreams=(Upstream("http://127.0.0.1:9"),)), **changes)  # type: ignore[arg-type]


def spec(host: str, site: str = "plex", port: int = 8080, advertise: bool = False) -> PublishSpec:
    return PublishSpec(host=host, site=site, port=port, advertise=advertise)


# -- wanted_names ----------------------------------------------------------------------------------


def test_wanted_names_takes_flat_local_names_only() -> None:
    config = Config(sites=(site("plex", "plex.local", "Media.LOCAL", "a.b.local", "*.local", "plex.home.arpa", "x"),))
    assert wanted_names(config, 8080) == {
        "plex.local": PublishSpec("plex.local", "plex", 8080, advertise=False),
        "media.local": PublishSpec("media.local", "plex", 8080, advertise=False),
    }


def test_wanted_names_skips_disabled_sites_and_follows_publish_overrides() -> None:
    sites = (
        site("on", "on.local"),
        site("off", "off.local", enabled=False),
        site("private", "private.local", publish=False),
        site("forced", "forced.local", publish=True),
    )
    assert set(wanted_names(Config(sites=sites), 80)) == {"on.local", "forced.local"}
    quiet = Config(sites=sites, discovery=DiscoverySettings(publish_hostnames=False))
    assert set(wanted_names(quiet, 80)) == {"forced.local"}


def test_wanted_names_carries_port_and_advertise_and_first_site_wins() -> None:
    config = Config(
        sites=(site("a", "same.local", "trailing.local."), site("b", "SAME.local")),
        discovery=DiscoverySettings(advertise=True),
    )
    wanted = wanted_names(config, 8443)
    assert wanted["same.local"] == PublishSpec("same.local", "a", 8443, advertise=True)
    assert wanted["trailing.local"].site == "a"


# -- Publisher on loopback -------------------------------------------------------------------------


@pytest.fixture
async def make_zc() -> AsyncIterator[Callable[[], AsyncZeroconf]]:
    """Loopback-only AsyncZeroconf instances, closed after the test (the network rule)."""
    made: list[AsyncZeroconf] = []

    def make() -> AsyncZeroconf:
        azc = AsyncZeroconf(interfaces=LOOPBACK)
        made.append(azc)
        return azc

    yield make
    for azc in made:
        await azc.async_close()


def unique(label: str) -> str:
    """`label-1a2b3c`: a name no other test process announces."""
    return f"{label}-{secrets.token_hex(3)}"


class Recorder:
    """Stands in for `EventBus.publish`."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def __call__(self, event: object) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[object]:
        return [e for e in self.events if isinstance(e, kind)]

    def last(self) -> object:
        return self.events[-1]


def status(publisher: Publisher, host: str) -> str:
    return publisher.states[host].status


async def resolve(zc: Zeroconf, host: str, timeout_ms: float = 3000) -> list[str]:
    """What the LAN (here: `zc`) gets for `host`; QM so the answer reaches this socket (TESTING.md)."""
    resolver = AddressResolver(host + ".")
    await resolver.async_request(zc, timeout_ms, question_type=DNSQuestionType.QM)
    return sorted(resolver.parsed_addresses())


def cached_a(zc: Zeroconf, host: str) -> list[str]:
    """The live A records for `host` in `zc`'s cache (what a peer would answer from; a flushed
    record stays in the cache, expired, until zeroconf's next clean-up)."""
    now = current_time_millis()
    records = zc.cache.async_all_by_details(host + ".", _TYPE_A, _CLASS_IN)
    return sorted(socket.inet_ntoa(r.address) for r in records if not r.is_expired(now))  # type: ignore[attr-defined]


def holder(server: str, instance: str, address: str = "127.0.0.2") -> ServiceInfo:
    """A service of another machine (its own address, so its answers are not mistaken for ours)."""
    return ServiceInfo(
        HTTP, f"{instance}.{HTTP}", addresses=[socket.inet_aton(address)], port=5000, server=server + "."
    )


async def test_announces_a_name_that_a_peer_resolves(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, peer = make_zc(), make_zc()
    plex = unique("plex") + ".local"
    events = Recorder()
    publisher = Publisher(ours, events, LOOPBACK, clock=lambda: 1000.0)
    start = time.monotonic()
    await publisher.apply({plex: spec(plex)})
    applied = time.monotonic() - start
    assert await resolve(peer.zeroconf, plex) == ["127.0.0.1"]
    resolved = time.monotonic() - start
    print(f"\napply -> returned {applied:.3f} s, name resolvable at the peer {resolved:.3f} s")
    assert resolved < 3.0
    assert publisher.states[plex] == NameState(
        plex, "announced", ("127.0.0.1",), (), f"Answering for {plex} with 127.0.0.1.", 1000.0
    )
    assert events.events == [NameAnnounced(plex, ("127.0.0.1",))]
    # The name is held by a private service type, not advertised as a web site.
    held = ours.zeroconf.registry.async_get_infos_server(plex + ".")
    assert [info.type for info in held] == [NAME_TYPE]
    await publisher.close()
    assert status(publisher, plex) == "withdrawn"
    assert events.last() == NameWithdrawn(plex)


async def test_advertise_registers_an_http_service_and_goodbye_removes_it(
    make_zc: Callable[[], AsyncZeroconf],
) -> None:
    ours, peer = make_zc(), make_zc()
    plex, site = unique("plex") + ".local", unique("Plex")
    seen: list[tuple[ServiceStateChange, str]] = []

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        seen.append((state_change, name))

    browser = AsyncServiceBrowser(peer.zeroconf, [HTTP], handlers=[on_change], question_type=DNSQuestionType.QM)
    events = Recorder()
    publisher = Publisher(ours, events, LOOPBACK)
    try:
        start = time.monotonic()
        await publisher.apply({plex: spec(plex, site=site, port=8081, advertise=True)})
        added = (ServiceStateChange.Added, f"{site}.{HTTP}")
        await wait_for(lambda: added in seen, timeout=5, description="the advert at the peer's browser")
        print(f"\napply -> advert seen by the peer's browser {time.monotonic() - start:.3f} s")
        info = AsyncServiceInfo(HTTP, f"{site}.{HTTP}")
        assert await info.async_request(peer.zeroconf, 3000)
        # The TXT carries the publisher's instance id: how homeproxy's browser knows its own adverts.
        props = {"path": "/", "homeproxy": publisher.instance_id}
        assert (info.port, info.server, info.decoded_properties) == (8081, plex + ".", props)
        assert info.parsed_addresses(IPVersion.V4Only) == ["127.0.0.1"]
        assert f"advertised as the HTTP service “{site}”" in publisher.states[plex].detail

        # Advertising off: the advert says goodbye, the name stays.
        await publisher.apply({plex: spec(plex, site=site, port=8081)})
        removed = (ServiceStateChange.Removed, f"{site}.{HTTP}")
        await wait_for(lambda: removed in seen, timeout=3, description="the advert's goodbye")
        assert await resolve(peer.zeroconf, plex) == ["127.0.0.1"]
        assert events.of(NameWithdrawn) == []

        # And the name goes too when the site stops publishing it.
        await publisher.apply({})
        await wait_for(lambda: not cached_a(peer.zeroconf, plex), timeout=3, description="the A record's goodbye")
        assert publisher.states == {}
        assert events.of(NameWithdrawn) == [NameWithdrawn(plex)]
    finally:
        await browser.async_cancel()
        await publisher.close()


async def test_renaming_withdraws_the_old_name(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, peer = make_zc(), make_zc()
    plex, media = unique("plex") + ".local", unique("media") + ".local"
    events = Recorder()
    publisher = Publisher(ours, events, LOOPBACK)
    await publisher.apply({plex: spec(plex)})
    assert await resolve(peer.zeroconf, plex) == ["127.0.0.1"]
    assert cached_a(peer.zeroconf, plex) == ["127.0.0.1"]

    await publisher.apply({media: spec(media)})
    # The goodbye (TTL 0, RFC 6762 §10.1) empties the peer's cache at once, not after 120 s.
    await wait_for(lambda: not cached_a(peer.zeroconf, plex), timeout=2, description="the old name's goodbye")
    assert await resolve(peer.zeroconf, media) == ["127.0.0.1"]
    assert await resolve(peer.zeroconf, plex, timeout_ms=600) == []
    assert set(publisher.states) == {media}
    assert NameWithdrawn(plex) in events.events
    await publisher.close()


async def test_a_name_another_machine_answers_is_left_alone(make_zc: Callable[[], AsyncZeroconf]) -> None:
    peer = make_zc()
    taken, free = unique("taken") + ".local", unique("free") + ".local"
    nas = holder(taken, unique("NAS"))
    await (await peer.async_register_service(nas))
    # Started after the peer announced, so the publisher's cache is empty: its own probe finds the holder.
    ours = make_zc()
    events = Recorder()
    publisher = Publisher(ours, events, LOOPBACK, retry_interval=0.5)
    start = time.monotonic()
    await publisher.apply({taken: spec(taken)})
    print(f"\napply -> conflict found {time.monotonic() - start:.3f} s")
    state = publisher.states[taken]
    assert (state.status, state.holders) == ("conflict", ("127.0.0.2",))
    assert f"Another device (127.0.0.2) already answers for {taken}" in state.detail
    assert events.of(NameConflict) == [NameConflict(taken, ("127.0.0.2",))]
    assert ours.zeroconf.registry.async_get_infos_server(taken + ".") == []
    # A third machine hears only the holder.
    other = make_zc()
    assert await resolve(other.zeroconf, taken) == ["127.0.0.2"]

    # The next apply (and the retries) keep the conflict without repeating the event, while
    # the other names are announced ...
    await publisher.apply({taken: spec(taken), free: spec(free)})
    assert (status(publisher, taken), status(publisher, free)) == ("conflict", "announced")
    assert len(events.of(NameConflict)) == 1
    # ... and a retry takes the name once its holder said goodbye.
    await (await peer.async_unregister_service(nas))
    await wait_for(lambda: status(publisher, taken) == "announced", timeout=4, description="the retry")
    assert await resolve(other.zeroconf, taken) == ["127.0.0.1"]
    assert NameAnnounced(taken, ("127.0.0.1",)) in events.events
    await publisher.close()


async def test_a_holder_already_in_the_cache_is_a_conflict_at_once(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, peer = make_zc(), make_zc()
    nas = unique("nas") + ".local"
    publisher = Publisher(ours, Recorder(), LOOPBACK)
    await (await peer.async_register_service(holder(nas, unique("NAS"))))
    await wait_for(lambda: cached_a(ours.zeroconf, nas), timeout=2, description="the peer's announcement")
    start = time.monotonic()
    await publisher.apply({nas: spec(nas)})
    assert time.monotonic() - start < 0.2
    assert publisher.states[nas].holders == ("127.0.0.2",)
    await publisher.close()


async def test_a_taken_service_instance_name_is_renamed(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, peer = make_zc(), make_zc()
    nas, files = unique("NAS"), unique("Files")
    await (await peer.async_register_service(holder(unique("nas") + ".local", nas)))
    publisher = Publisher(ours, Recorder(), LOOPBACK)
    storage, docs, pics = (unique(label) for label in ("storage", "docs", "pics"))
    wanted = {
        f"{storage}.local": spec(f"{storage}.local", site=nas, advertise=True),
        f"{docs}.local": spec(f"{docs}.local", site=files, advertise=True),
        f"{pics}.local": spec(f"{pics}.local", site=files, advertise=True),
    }
    await publisher.apply(wanted)
    names = sorted(info.name for info in ours.zeroconf.registry.async_get_infos_type(HTTP))
    # zeroconf's own probe renames a taken instance; two names of one site are told apart by host.
    assert names == sorted([f"{files} ({docs}).{HTTP}", f"{files} ({pics}).{HTTP}", f"{nas}-2.{HTTP}"])
    assert {s.status for s in publisher.states.values()} == {"announced"}
    await publisher.close()


async def test_new_addresses_are_announced_and_replace_the_old(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, peer = make_zc(), make_zc()
    plex = unique("plex") + ".local"
    events = Recorder()
    publisher = Publisher(ours, events, LOOPBACK)
    await publisher.apply({plex: spec(plex)})
    assert await resolve(peer.zeroconf, plex) == ["127.0.0.1"]

    await publisher.set_addresses(["127.0.0.3", "fe80::1%lo"])
    assert publisher.addresses == ("127.0.0.3", "fe80::1")
    # New records (cache-flush bit) and goodbyes for the old address: the peer has only the new one.
    await wait_for(lambda: cached_a(peer.zeroconf, plex) == ["127.0.0.3"], timeout=3, description="the new address")
    assert events.last() == NameAnnounced(plex, ("127.0.0.3", "fe80::1"))
    assert publisher.states[plex].addresses == ("127.0.0.3", "fe80::1")

    # No address at all: nothing to answer with, so the name is withdrawn until one comes back.
    await publisher.set_addresses([])
    assert status(publisher, plex) == "error"
    assert events.last() == NameWithdrawn(plex)
    await publisher.set_addresses(LOOPBACK)
    assert status(publisher, plex) == "announced"
    await publisher.close()


async def test_no_addresses_is_an_error_state_not_a_crash(make_zc: Callable[[], AsyncZeroconf]) -> None:
    publisher = Publisher(make_zc(), Recorder(), [])
    plex = unique("plex") + ".local"
    await publisher.apply({plex: spec(plex)})
    state = publisher.states[plex]
    assert state.status == "error"
    assert "No network address" in state.detail
    await publisher.close()


async def test_close_withdraws_everything_quickly(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, peer = make_zc(), make_zc()
    hosts = [unique(f"n{i}") + ".local" for i in range(3)]
    events = Recorder()
    publisher = Publisher(ours, events, LOOPBACK)
    await publisher.apply({host: spec(host, site=unique("site"), advertise=i == 0) for i, host in enumerate(hosts)})
    assert await resolve(peer.zeroconf, hosts[2]) == ["127.0.0.1"]
    start = time.monotonic()
    await publisher.close()
    took = time.monotonic() - start
    print(f"\nclose (3 names) took {took:.3f} s")
    assert took < 0.6
    assert ours.zeroconf.registry.async_get_service_infos() == []
    await wait_for(lambda: not cached_a(peer.zeroconf, hosts[2]), timeout=2, description="the goodbyes")
    assert sorted(events.of(NameWithdrawn), key=repr) == sorted((NameWithdrawn(h) for h in hosts), key=repr)
    late = unique("late") + ".local"
    await publisher.apply({late: spec(late)})  # after close: nothing happens
    assert late not in publisher.states


async def test_close_during_probing_cancels_it(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours = make_zc()
    plex = unique("plex") + ".local"
    publisher = Publisher(ours, Recorder(), LOOPBACK)
    applying = asyncio.create_task(publisher.apply({plex: spec(plex)}))
    await wait_for(lambda: plex in publisher.states, timeout=2)
    assert status(publisher, plex) == "probing"
    await publisher.close()
    await asyncio.wait_for(applying, 1)
    assert ours.zeroconf.registry.async_get_service_infos() == []
    assert status(publisher, plex) == "withdrawn"


async def test_a_new_port_updates_the_name_and_re_registers_the_advert(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, peer = make_zc(), make_zc()
    plex, site = unique("plex") + ".local", unique("Plex")
    events = Recorder()
    publisher = Publisher(ours, events, LOOPBACK)
    await publisher.apply({plex: spec(plex, site=site, port=8081, advertise=True)})
    await publisher.apply({plex: spec(plex, site=site, port=8082, advertise=True)})
    info = AsyncServiceInfo(HTTP, f"{site}.{HTTP}")
    assert await info.async_request(peer.zeroconf, 3000, question_type=DNSQuestionType.QM)
    assert info.port == 8082
    assert [i.port for i in ours.zeroconf.registry.async_get_infos_server(plex + ".")] == [8082, 8082]
    # The name itself never left: one announcement, no withdrawal.
    assert events.events == [NameAnnounced(plex, ("127.0.0.1",))]
    await publisher.close()


# -- defending a held name (RFC 6762 §8.1 and §9) ------------------------------------------------


def send_a(zc: Zeroconf, host: str, address: str, *, probe: bool = False) -> None:
    """What another machine sends for `host`: a probe (A question, the proposed record in the
    Authority section) or an unsolicited announcement (a response with the record, cache-flush bit)."""
    record = DNSAddress(host + ".", _TYPE_A, _CLASS_IN | _CLASS_UNIQUE, 120, socket.inet_aton(address))
    if probe:
        out = DNSOutgoing(_FLAGS_QR_QUERY)
        out.add_question(DNSQuestion(host + ".", _TYPE_A, _CLASS_IN))
        out.authorities.append(record)  # type: ignore[arg-type]  # typed DNSPointer, writes any record
    else:
        out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        out.add_answer_at_time(record, 0)
    zc.async_send(out)


async def test_a_probe_for_a_held_name_gets_our_answer_at_once(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, peer = make_zc(), make_zc()
    plex = unique("plex") + ".local"
    publisher = Publisher(ours, Recorder(), LOOPBACK)
    await publisher.apply({plex: spec(plex)})
    assert cached_a(peer.zeroconf, plex) == []

    # zeroconf answers a probe for a name it holds at once, by multicast (query_handler.py,
    # `_QueryResponse.add_mcast_question_response`: a probe's answers go out "now", not aggregated).
    start = time.monotonic()
    send_a(peer.zeroconf, plex, "127.0.0.2", probe=True)
    await wait_for(lambda: cached_a(peer.zeroconf, plex) == ["127.0.0.1"], timeout=1, description="our answer")
    print(f"\nprobe -> our answer in the prober's cache: {(time.monotonic() - start) * 1000:.0f} ms")
    await publisher.close()


async def test_another_homeproxy_probing_for_a_held_name_leaves_it(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, theirs = make_zc(), make_zc()
    plex = unique("plex") + ".local"
    publisher = Publisher(ours, Recorder(), LOOPBACK)
    await publisher.apply({plex: spec(plex)})

    # A second machine's homeproxy (its own address) wants the same name: its probe hears ours.
    events = Recorder()
    other = Publisher(theirs, events, ["127.0.0.2"])
    await other.apply({plex: spec(plex)})
    assert (other.states[plex].status, other.states[plex].holders) == ("conflict", ("127.0.0.1",))
    assert events.events == [NameConflict(plex, ("127.0.0.1",))]
    assert theirs.zeroconf.registry.async_get_infos_server(plex + ".") == []
    # ... and ours never wavered.
    assert status(publisher, plex) == "announced"
    await other.close()
    await publisher.close()


async def test_a_held_service_name_is_not_unique_to_a_peer_that_registers_it(
    make_zc: Callable[[], AsyncZeroconf],
) -> None:
    ours, peer = make_zc(), make_zc()
    plex, site = unique("plex") + ".local", unique("Plex")
    publisher = Publisher(ours, Recorder(), LOOPBACK)
    await publisher.apply({plex: spec(plex, site=site, advertise=True)})
    label = plex.removesuffix(".local")
    # zeroconf's own probe (for the instance name, _core.py `async_check_service`) hears our answer.
    for type_, instance in ((NAME_TYPE, label), (HTTP, site)):
        claim = ServiceInfo(
            type_,
            f"{instance}.{type_}",
            addresses=[socket.inet_aton("127.0.0.2")],
            port=5000,
            server=plex + ".",
        )
        with pytest.raises(NonUniqueNameException):
            await peer.async_register_service(claim, allow_name_change=False)
    await publisher.close()


async def test_a_later_claim_by_a_machine_that_answers_for_it_is_a_conflict(
    make_zc: Callable[[], AsyncZeroconf],
) -> None:
    ours, peer, third = make_zc(), make_zc(), make_zc()
    plex = unique("plex") + ".local"
    events = Recorder()
    publisher = Publisher(ours, events, LOOPBACK, retry_interval=30)
    await publisher.apply({plex: spec(plex)})
    assert await resolve(third.zeroconf, plex) == ["127.0.0.1"]

    # zeroconf probes instance names only, never the host name a service points at: a device
    # (here zeroconf itself) registers a service on our host name, and announces it, without noticing us.
    start = time.monotonic()
    await (await peer.async_register_service(holder(plex, unique("NAS")), cooperating_responders=True))
    await wait_for(lambda: status(publisher, plex) == "conflict", timeout=5, description="the conflict")
    print(f"\nlater claim -> conflict: {time.monotonic() - start:.3f} s")
    state = publisher.states[plex]
    assert state.holders == ("127.0.0.2",)
    assert f"Another device (127.0.0.2) already answers for {plex}" in state.detail
    assert events.of(NameConflict) == [NameConflict(plex, ("127.0.0.2",))]
    assert events.of(NameWithdrawn) == [NameWithdrawn(plex)]
    # Our records are gone (goodbyes): the LAN hears only the other machine now.
    assert ours.zeroconf.registry.async_get_infos_server(plex + ".") == []
    await wait_for(lambda: cached_a(third.zeroconf, plex) == ["127.0.0.2"], timeout=2, description="our goodbye")
    await publisher.close()


async def test_a_stray_claim_nobody_answers_for_is_outlived(make_zc: Callable[[], AsyncZeroconf]) -> None:
    ours, peer = make_zc(), make_zc()
    plex = unique("plex") + ".local"
    events = Recorder()
    publisher = Publisher(ours, events, LOOPBACK)
    await publisher.apply({plex: spec(plex)})
    assert await resolve(peer.zeroconf, plex) == ["127.0.0.1"]

    # One announcement (a device that went away, a stale packet) and no responder behind it.
    start = time.monotonic()
    send_a(peer.zeroconf, plex, "127.0.0.9")
    await wait_for(lambda: status(publisher, plex) == "probing", timeout=1, description="the re-probe")
    assert "Another device (127.0.0.9) announced" in publisher.states[plex].detail
    await wait_for(lambda: status(publisher, plex) == "announced", timeout=3, description="the name kept")
    # Our announcement again, with the cache-flush bit: the peer forgets the stray record (§10.2).
    await wait_for(
        lambda: cached_a(peer.zeroconf, plex) == ["127.0.0.1"], timeout=3, description="the stray record flushed"
    )
    print(f"\nstray claim -> name kept and the stray flushed: {time.monotonic() - start:.3f} s")
    assert events.of(NameConflict) == [] and events.of(NameWithdrawn) == []
    assert [i.type for i in ours.zeroconf.registry.async_get_infos_server(plex + ".")] == [NAME_TYPE]
    await publisher.close()
