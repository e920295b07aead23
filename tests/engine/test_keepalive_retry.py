"""Pooled upstream connections that the upstream closes as homeproxy reuses them (issue 10).

Real aiohttp origins that close idle keep-alive connections after ORIGIN_KEEPALIVE, and
requests sent through the real engine after pauses swept across that moment, so that many
of them go out on a connection the origin is closing just then. A PUT (idempotent, its small
body in hand) must never come back 502; a POST is never sent twice and only rarely lost.
Raw backends check the rules of the replay itself: once, on a fresh connection, and only
after a failure on a reused one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.engine.conftest import Proxy, StartProxy, StartRawBackend, fetch, make_config, record, site

#: The origins close a connection that has been idle this long.
ORIGIN_KEEPALIVE = 0.3
#: Origins (each its own site, so its own pooled connection), driven at the same time.
LANES = 8
#: Requests per lane, each after a pause near ORIGIN_KEEPALIVE.
ROUNDS = 20
#: The pauses sweep ORIGIN_KEEPALIVE + k * STEP for k in SWEEP (lane by lane shifted): on loopback
#: the origin's close and the next request cross a few milliseconds before the full timeout.
STEP = 0.0005
SWEEP = range(-12, 5)


@dataclass
class Origin:
    """A running origin and what it received."""

    port: int
    bodies: Counter[bytes] = field(default_factory=Counter)
    """Request bodies received (complete requests only), with how often each arrived."""
    peers: list[int] = field(default_factory=list)
    """The client port of the connection each request came on, in order."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


StartOrigin = Callable[..., Awaitable[Origin]]


@pytest.fixture
async def origin() -> AsyncIterator[StartOrigin]:
    """Factory: an aiohttp app on 127.0.0.1:0 that echoes request bodies and closes idle connections."""
    runners: list[web.AppRunner] = []

    async def start(keepalive: float = ORIGIN_KEEPALIVE) -> Origin:
        seen = Origin(0)

        async def echo(request: web.Request) -> web.Response:
            body = await request.read()
            seen.bodies[body] += 1
            peer = request.transport.get_extra_info("peername") if request.transport else None
            seen.peers.append(peer[1] if peer else 0)
            return web.Response(body=body, headers={"X-Method": request.method})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", echo)
        runner = web.AppRunner(app, keepalive_timeout=keepalive, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        runners.append(runner)
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        seen.port = tcp.port
        return seen

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@dataclass
class Race:
    total: int
    bad: int
    errors: list[str]
    origins: list[Origin]


async def _lane(
    session: aiohttp.ClientSession, p: Proxy, lane: int, method: str, rounds: int, statuses: list[int]
) -> None:
    """`rounds` requests to one site, each after a pause around its origin's keep-alive timeout."""
    for i in range(rounds):
        body = f"{method} lane {lane} round {i} ".encode() * 50
        got = await fetch(session, p, "/up", host=f"s{lane}.lan", method=method, data=body)
        statuses.append(got.status)
        if got.status == 200:
            assert got.body == body
            assert got.headers["X-Method"] == method
        k = SWEEP[(i * 5 + lane * 3) % len(SWEEP)]
        await asyncio.sleep(ORIGIN_KEEPALIVE + k * STEP)


async def _race(proxy: StartProxy, origin: StartOrigin, method: str, rounds: int = ROUNDS, **options: str) -> Race:
    origins = [await origin() for _ in range(LANES)]
    p = await proxy(make_config(*(site(f"s{n}", [f"s{n}.lan"], [o.url], **options) for n, o in enumerate(origins))))
    events = record(p)
    statuses: list[int] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(_lane(session, p, n, method, rounds, statuses) for n in range(LANES)))
    errors = [e.error for e in await events.wait(len(statuses)) if e.status == 502]
    assert statuses.count(200) + statuses.count(502) == len(statuses), Counter(statuses)
    return Race(len(statuses), statuses.count(502), errors, origins)


async def test_put_on_a_connection_the_origin_is_closing_is_never_a_502(proxy: StartProxy, origin: StartOrigin) -> None:
    race = await _race(proxy, origin, "PUT")

    print(f"\nPUT: {race.bad} of {race.total} answered 502 {race.errors[:3]}")
    assert race.bad == 0, race.errors


async def test_post_on_a_connection_the_origin_is_closing_is_never_sent_twice_and_rarely_lost(
    proxy: StartProxy, origin: StartOrigin
) -> None:
    race = await _race(proxy, origin, "POST")

    print(f"\nPOST: {race.bad} of {race.total} answered 502 {race.errors[:3]}")
    twice = [body[:30] for o in race.origins for body, n in o.bodies.items() if n > 1]
    assert twice == [], "a POST reached the origin twice"
    assert all("upstream closed the pooled connection; POST not replayed" in e for e in race.errors), race.errors
    assert race.bad <= race.total // 10, race.errors


async def test_post_is_never_a_502_with_upstream_keepalive_below_the_origins(
    proxy: StartProxy, origin: StartOrigin
) -> None:
    """The remedy for POSTs: homeproxy drops an idle connection before the origin can."""
    keepalive = f"{int(ORIGIN_KEEPALIVE * 1000) - 100}ms"
    race = await _race(proxy, origin, "POST", rounds=ROUNDS // 2, upstream_keepalive=keepalive)

    print(f"\nPOST, upstream_keepalive below the origin's: {race.bad} of {race.total} answered 502")
    assert race.bad == 0, race.errors


async def test_a_pooled_connection_the_origin_has_closed_is_not_used(
    proxy: StartProxy, origin: StartOrigin, session: aiohttp.ClientSession
) -> None:
    o = await origin(keepalive=0.1)
    p = await proxy(make_config(site("a", ["a.lan"], [o.url])))

    for i in range(5):
        got = await fetch(session, p, host="a.lan", method="POST", data=b"post %d" % i)
        assert (got.status, got.body) == (200, b"post %d" % i)
        await asyncio.sleep(0.3)  # the origin has closed the connection (and homeproxy has seen it)

    assert len(set(o.peers)) == 5, o.peers


async def test_upstream_keepalive_closes_connections_idle_longer(
    proxy: StartProxy, origin: StartOrigin, session: aiohttp.ClientSession
) -> None:
    o = await origin(keepalive=30.0)
    config = make_config(site("a", ["a.lan"], [o.url], upstream_keepalive="200ms"), site("b", ["b.lan"], [o.url]))
    assert [s.upstream_keepalive for s in config.sites] == [0.2, 4.0]
    p = await proxy(config)

    for pause in (0.02, 0.02, 0.5, 0.02):
        assert (await fetch(session, p, host="a.lan")).status == 200
        await asyncio.sleep(pause)
    assert (await fetch(session, p, host="a.lan")).status == 200

    first, second, third, fourth, fifth = o.peers
    assert first == second == third  # reused while idle less than 200 ms
    assert fourth != third  # idle for 500 ms: closed by homeproxy, a new connection
    assert fifth == fourth


# --- the rules of the replay, with upstreams that misbehave on purpose ------------------------


@dataclass
class Raw:
    """What a raw backend saw: requests per connection, in order of connection."""

    connections: list[list[str]] = field(default_factory=list)


async def _read_request(reader: asyncio.StreamReader) -> str | None:
    """One request's method (its body read and dropped), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(v) for n, _, v in (h.partition(":") for h in lines[1:]) if n.lower() == "content-length"), 0)
    await reader.readexactly(length)
    return lines[0].split(" ")[0]


def _answers_once_then_hangs_up(raw: Raw, *, first_only: bool) -> Callable[..., Awaitable[None]]:
    """A backend whose first connection answers one request, then takes the next and closes without
    answering (as an origin whose keep-alive timer fires just then); later connections do the same
    at once (or answer, when `first_only`)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mine: list[str] = []
        raw.connections.append(mine)
        first = len(raw.connections) == 1
        try:
            while (method := await _read_request(reader)) is not None:
                mine.append(method)
                if (first and len(mine) == 1) or (not first and first_only):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
                    continue
                break
        finally:
            writer.close()

    return serve


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
async def test_idempotent_request_lost_on_a_reused_connection_is_sent_again_on_a_new_one(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession, method: str
) -> None:
    raw = Raw()
    b = await raw_backend(_answers_once_then_hangs_up(raw, first_only=True))
    p = await proxy(make_config(site("a", ["a.lan"], [b.url])))
    data = b"small body" if method == "PUT" else None

    assert (await fetch(session, p, host="a.lan")).status == 200
    got = await fetch(session, p, host="a.lan", method=method, data=data)

    assert (got.status, got.body) == (200, b"ok")
    assert raw.connections == [["GET", method], [method]]


async def test_a_replay_that_fails_too_is_a_502_and_is_not_tried_again(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    raw = Raw()
    b = await raw_backend(_answers_once_then_hangs_up(raw, first_only=False))
    p = await proxy(make_config(site("a", ["a.lan"], [b.url])))
    events = record(p)

    assert (await fetch(session, p, host="a.lan")).status == 200
    got = await fetch(session, p, host="a.lan", method="PUT", data=b"small body")

    assert got.status == 502
    assert raw.connections == [["GET", "PUT"], ["PUT"]]
    last = (await events.wait(2))[-1]
    assert last.error.startswith("upstream failed"), last.error


async def test_a_request_lost_on_a_fresh_connection_is_a_502_at_once(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    raw = Raw()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw.connections.append([m] if (m := await _read_request(reader)) else [])
        writer.close()

    b = await raw_backend(hang_up)
    p = await proxy(make_config(site("a", ["a.lan"], [b.url])))

    got = await fetch(session, p, host="a.lan", method="PUT", data=b"small body")

    assert got.status == 502
    assert raw.connections == [["PUT"]]


async def test_a_post_written_on_a_reused_connection_and_lost_is_not_replayed(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    raw = Raw()
    b = await raw_backend(_answers_once_then_hangs_up(raw, first_only=True))
    p = await proxy(make_config(site("a", ["a.lan"], [b.url])))
    events = record(p)

    assert (await fetch(session, p, host="a.lan")).status == 200
    got = await fetch(session, p, host="a.lan", method="POST", data=b"order one pizza")

    assert got.status == 502
    assert raw.connections == [["GET", "POST"]]
    last = (await events.wait(2))[-1]
    assert last.error.startswith("upstream closed the pooled connection; POST not replayed"), last.error
