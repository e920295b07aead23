"""`balance`: how a site with several upstreams picks one, against real backends on loopback.

Each policy is checked for what it promises: round robin exactly in turn, `weighted` in
proportion and evenly spread, `first` as failover in the listed order, `ip_hash` sticky per
client address (and when an upstream goes down, only its clients move), `cookie` sticky per
browser with a cookie that does not name the address, `least_conn` and `random_two` never
choosing an upstream that is busy while another is idle. Whatever the policy, an upstream
that refuses the connection hands the request to the next.
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from homeproxy.config import Config, ConfigInvalid
from tests.engine.conftest import (
    STEP_TIMEOUT,
    Fetched,
    NamedEcho,
    Proxy,
    Seen,
    StartBackend,
    StartProxy,
    closed_port,
    fetch,
    make_config,
    site,
)
from tests.engine.test_upstream_health import (
    FAST_CHECKS,
    HealthChanges,
    Server,
    StartServer,
    get,
    lb_config,
    served_by,
    server_factory,
)
from tests.waiting import wait_for


@pytest.fixture
async def servers() -> AsyncIterator[StartServer]:
    async with server_factory() as start:
        yield start


async def names(session: aiohttp.ClientSession, p: Proxy, n: int, **headers: str) -> list[str]:
    """The backend names that answered `n` requests sent one after another."""
    out = []
    for k in range(n):
        got = await fetch(session, p, f"/r{k}", host="lb.lan", headers=headers or None)
        assert got.status == 200, got.body
        out.append(Seen.of(got.body).name)
    return out


async def three(named_echo: NamedEcho) -> list[str]:
    return [(await named_echo(name)).url for name in ("a", "b", "c")]


async def test_round_robin_goes_in_turn(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("lb", ["lb.lan"], await three(named_echo))))  # the default policy

    got = await names(session, p, 30)

    assert got[:3] in (["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"])
    assert got == got[:3] * 10
    assert collections.Counter(got) == {"a": 10, "b": 10, "c": 10}


async def test_first_sends_everything_to_the_first_and_fails_over_in_order(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    ups = await three(named_echo)
    p = await proxy(make_config(site("lb", ["lb.lan"], ups, balance="first")))
    assert await names(session, p, 5) == ["a"] * 5

    dead = f"http://127.0.0.1:{closed_port()}"
    q = await proxy(make_config(site("lb", ["lb.lan"], [dead, ups[2], ups[1]], balance="first")))
    assert await names(session, q, 5) == ["c"] * 5  # the next listed, every time, with no error


async def test_ip_hash_keeps_each_client_on_one_upstream(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    # The client address comes from X-Forwarded-For of a trusted proxy (the test's own loopback).
    config = make_config(
        site("lb", ["lb.lan"], await three(named_echo), balance="ip_hash"), trusted_proxies=["127.0.0.1/32"]
    )
    p = await proxy(config)

    chosen = {}
    for n in range(12):
        client = f"192.168.1.{10 + n}"
        got = set(await names(session, p, 4, **{"X-Forwarded-For": client}))
        assert len(got) == 1, f"{client} was sent to {got}"
        chosen[client] = got.pop()
    assert len(set(chosen.values())) >= 2  # clients are spread, each one sticky


@pytest.mark.parametrize("policy", ["least_conn", "random_two"])
async def test_a_busy_upstream_is_passed_over_while_others_are_idle(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, policy: str
) -> None:
    release = asyncio.Event()
    holding: collections.Counter[str] = collections.Counter()
    served: collections.Counter[str] = collections.Counter()

    def handler(name: str) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            if request.path == "/hold":
                holding[name] += 1
                await release.wait()
            else:
                served[name] += 1
            return web.Response(text=name)

        return handle

    ups = [(await backend(handler(name))).url for name in ("a", "b", "c")]
    p = await proxy(make_config(site("lb", ["lb.lan"], ups, balance=policy)))
    held = asyncio.ensure_future(fetch(session, p, "/hold", host="lb.lan"))
    try:
        await wait_for(lambda: sum(holding.values()) == 1, description="one upstream busy")
        (busy,) = holding
        for k in range(12):
            got = await asyncio.wait_for(fetch(session, p, f"/quick{k}", host="lb.lan"), STEP_TIMEOUT)
            assert got.status == 200
    finally:
        release.set()
        await held

    assert served[busy] == 0, f"{policy} sent {served[busy]} requests to the busy upstream"
    assert sum(served.values()) == 12
    assert len(served) == 2  # the idle ones share the rest


def test_an_unknown_policy_names_the_ones_there_are() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        make_config(site("lb", ["lb.lan"], ["http://10.0.0.1"], balance="fastest"))
    (err,) = caught.value.errors
    assert err.key == "sites[0].balance"
    assert '"round_robin", "weighted", "least_conn", "ip_hash", "cookie", "first", "random_two"' in err.message


# --- weighted ---------------------------------------------------------------------------


def longest_run(got: list[str], name: str) -> int:
    """The most answers from `name` in a row."""
    best = run = 0
    for who in got:
        run = run + 1 if who == name else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("weights", [(3, 1), (5, 2, 1)])
async def test_weighted_shares_the_requests_as_the_weights_say(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession, weights: tuple[int, ...]
) -> None:
    ups = [await servers(name) for name in "abc"[: len(weights)]]
    table = [{"url": u.url, "weight": w} for u, w in zip(ups, weights, strict=True)]
    p = await proxy(lb_config(table, balance="weighted"))

    got = await served_by(session, p, 400)

    counts = collections.Counter(got)
    for u, w in zip(ups, weights, strict=True):
        share = counts[u.name] / len(got)
        expected = w / sum(weights)
        assert abs(share - expected) <= 0.05, (u.name, share, expected, counts)
    # Evenly spread, not in blocks: never more in a row than an upstream's weight (3:1 is a a b a).
    for u, w in zip(ups, weights, strict=True):
        assert longest_run(got, u.name) <= w, (u.name, got[:24])


# --- ip_hash ----------------------------------------------------------------------------


async def test_ip_hash_moves_only_the_clients_of_an_upstream_that_goes_down(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    ups = [await servers(name) for name in "abc"]
    config = make_config(
        {
            "name": "lb",
            "hosts": ["lb.lan"],
            "upstreams": [u.url for u in ups],
            "balance": "ip_hash",
            "health": FAST_CHECKS,
        },
        trusted_proxies=["127.0.0.1/32"],  # so X-Forwarded-For names the client
    )
    p = await proxy(config)
    changes = HealthChanges(p)
    clients = [f"192.168.1.{n}" for n in range(10, 40)]

    async def where() -> dict[str, str]:
        out = {}
        for client in clients:
            status, name = await get(session, p, f"/{client}", **{"X-Forwarded-For": client})
            assert status == 200, (status, name)
            out[client] = name
        return out

    before = await where()
    assert await where() == before  # sticky
    gone = max(ups, key=lambda u: list(before.values()).count(u.name))  # the one with the most clients
    gone.health_status = 500
    await changes.wait(gone, up=False)

    during = await where()

    moved = {c for c in clients if during[c] != before[c]}
    assert moved == {c for c in clients if before[c] == gone.name}  # its clients, and only those
    assert gone.name not in during.values()
    assert len(set(during.values())) == 2

    gone.health_status = 200
    await changes.wait(gone, up=True)
    assert await where() == before  # and they come back


# --- cookie -----------------------------------------------------------------------------


def sticky_cookie(headers: Any) -> str | None:
    """The value of the homeproxy_upstream cookie a response sets, if it sets it."""
    for header in headers.getall("Set-Cookie", []):
        name, _, rest = header.partition("=")
        if name == "homeproxy_upstream":
            return str(rest.split(";", 1)[0])
    return None


async def test_cookie_keeps_a_browser_on_the_upstream_that_first_answered_it(
    proxy: StartProxy, servers: StartServer
) -> None:
    ups = [await servers(name) for name in "abc"]
    p = await proxy(lb_config([u.url for u in ups], balance="cookie"))
    # A jar that keeps nothing: the test sends the cookie itself.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        first: dict[str, str] = {}
        for k in range(3):
            got = await fetch(session, p, f"/new{k}", host="lb.lan")
            assert got.status == 200
            value = sticky_cookie(got.headers)
            assert value is not None, got.headers
            assert re.fullmatch(r"[0-9a-f]{8}", value), value  # a short hash, not the address
            for header in got.headers.getall("Set-Cookie"):
                assert "127.0.0.1" not in header
                assert all(f":{u.port}" not in header for u in ups), header
            first[got.body.decode()] = value
        assert sorted(first) == ["a", "b", "c"]  # new browsers in turn, one cookie per upstream

        for name, value in first.items():
            for k in range(5):
                cookie = f"homeproxy_upstream={value}" if k % 2 else f"theme=dark; homeproxy_upstream={value}; x=1"
                got = await fetch(session, p, f"/again{k}", host="lb.lan", headers={"Cookie": cookie})
                assert (got.status, got.body.decode()) == (200, name)
                assert sticky_cookie(got.headers) is None  # already the right one

        # Its upstream gone: another answers, and the cookie now names that one.
        a = next(u for u in ups if u.name == "a")
        await a.stop()
        got = await fetch(session, p, "/moved", host="lb.lan", headers={"Cookie": f"homeproxy_upstream={first['a']}"})
        assert got.status == 200 and got.body.decode() in ("b", "c")
        assert sticky_cookie(got.headers) == first[got.body.decode()]


# --- least_conn and random_two under load --------------------------------------------------


async def hold(session: aiohttp.ClientSession, p: Proxy, server: Server, n: int) -> list[asyncio.Task[Fetched]]:
    """`n` requests held at `server` through a site of its own (`<name>.lan`): the pool counts
    them against its address, whichever site sent them."""
    target = server.holding + n
    held = [asyncio.ensure_future(fetch(session, p, f"/hold{k}", host=f"{server.name}.lan")) for k in range(n)]
    await wait_for(lambda: server.holding >= target, description=f"{n} requests held at {server.name}")
    return held


def with_direct_sites(ups: list[Server], **options: Any) -> Config:
    """Site lb.lan over `ups`, and a site per upstream (`a.lan`...) to load each one alone."""
    lb = {"name": "lb", "hosts": ["lb.lan"], "upstreams": [u.url for u in ups], **options}
    return make_config(lb, *({"name": u.name, "hosts": [f"{u.name}.lan"], "upstreams": [u.url]} for u in ups))


async def test_least_conn_sends_to_the_least_busy(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    a, b, c = ups = [await servers(name) for name in "abc"]
    p = await proxy(with_direct_sites(ups, balance="least_conn"))
    held = await hold(session, p, a, 2) + await hold(session, p, b, 1)

    assert await served_by(session, p, 10) == ["c"] * 10  # a has 2 in flight, b 1, c none

    held += await hold(session, p, c, 3)
    assert await served_by(session, p, 10) == ["b"] * 10  # now b has the fewest
    for s in ups:
        s.release.set()
    await asyncio.wait_for(asyncio.gather(*held), STEP_TIMEOUT)


async def test_random_two_passes_over_a_saturated_upstream(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    a, b, _ = ups = [await servers(name) for name in "abc"]
    p = await proxy(with_direct_sites(ups, balance="random_two"))
    held = await hold(session, p, a, 4) + await hold(session, p, b, 1)

    got = collections.Counter(await served_by(session, p, 120))

    # Two picked at random, the less busy taken: a (4 in flight) never; b (1) only when paired
    # with a (about a third of the time), c (idle) the rest.
    assert got["a"] == 0, got
    assert 0 < got["b"] < got["c"], got
    for s in ups:
        s.release.set()
    await asyncio.wait_for(asyncio.gather(*held), STEP_TIMEOUT)
