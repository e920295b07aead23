"""Live changes: `apply()` with requests in flight, rebinding, refused binds, and `stop()` draining."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Iterator

import aiohttp
import pytest
from aiohttp import web

from homeproxy.engine import BindError, Engine
from tests.conftest import free_port
from tests.engine.conftest import (
    STEP_TIMEOUT,
    Backend,
    NamedEcho,
    Proxy,
    StartBackend,
    StartProxy,
    connect_refused_sync,
    fetch,
    is_refused,
    make_config,
    site,
)
from tests.waiting import wait_for


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port held by another listening socket for the whole test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def held_backend(backend: StartBackend, gate: asyncio.Event, arrived: list[str]) -> Awaitable[Backend]:
    """A backend that answers "old" only once `gate` is set; `arrived` grows as requests come in."""

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        arrived.append(request.path)
        await gate.wait()
        return web.Response(text="old")

    return backend(handler)


async def test_apply_swaps_upstreams_without_failing_requests_in_flight(
    proxy: StartProxy,
    backend: StartBackend,
    named_echo: NamedEcho,
    session: aiohttp.ClientSession,
    gate: asyncio.Event,
) -> None:
    arrived: list[str] = []
    old = await held_backend(backend, gate, arrived)
    new = await named_echo("new")
    p = await proxy(make_config(site("app", ["app.lan"], [old.url])))
    port = p.port

    in_flight = [asyncio.create_task(fetch(session, p, f"/slow/{i}", host="app.lan")) for i in range(20)]
    await wait_for(lambda: len(arrived) == 20, description="20 requests at the old backend")

    await asyncio.to_thread(p.engine.apply, make_config(site("app", ["app.lan"], [new.url])))

    assert p.port == port  # same listeners: no rebind
    for i in range(5):  # new requests go to the new upstream while the old ones still wait
        assert (await fetch(session, p, f"/fresh/{i}", host="app.lan")).seen.name == "new"
    assert not any(t.done() for t in in_flight)
    gate.set()
    results = await asyncio.gather(*in_flight)

    assert [(r.status, r.body) for r in results] == [(200, b"old")] * 20
    assert sorted(arrived) == sorted(f"/slow/{i}" for i in range(20))
    assert p.engine.config.sites[0].upstream_urls == (new.url,)


async def test_open_websocket_survives_an_apply(
    proxy: StartProxy, backend: StartBackend, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    async def ws_old(request: web.BaseRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(f"old:{msg.data}")
        return ws

    old, new = await backend(ws_old), await named_echo("new")
    p = await proxy(make_config(site("app", ["app.lan"], [old.url])))

    async with session.ws_connect(p.url, headers={"Host": "app.lan"}) as ws:
        await ws.send_str("before")
        assert (await asyncio.wait_for(ws.receive(), STEP_TIMEOUT)).data == "old:before"

        await asyncio.to_thread(p.engine.apply, make_config(site("app", ["app.lan"], [new.url])))

        await ws.send_str("after")
        assert (await asyncio.wait_for(ws.receive(), STEP_TIMEOUT)).data == "old:after"
        assert (await fetch(session, p, host="app.lan")).seen.name == "new"


async def test_apply_adds_removes_and_disables_sites(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    a, b, c = await named_echo("a"), await named_echo("b"), await named_echo("c")
    p = await proxy(make_config(site("a", ["a.lan"], [a.url]), site("b", ["b.lan"], [b.url])))
    assert (await fetch(session, p, host="b.lan")).seen.name == "b"

    await asyncio.to_thread(
        p.engine.apply,
        make_config(site("a", ["a.lan"], [a.url], enabled=False), site("c", ["c.lan", "*.c.lan"], [c.url])),
    )

    assert (await fetch(session, p, host="a.lan")).status == 404
    assert (await fetch(session, p, host="b.lan")).status == 404
    assert (await fetch(session, p, host="x.c.lan")).seen.name == "c"


async def test_apply_with_a_new_port_rebinds(proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))
    old_port = p.port
    new_port = free_port()

    await asyncio.to_thread(p.engine.apply, make_config(site("a", ["a.lan"], [echo.url]), http_port=new_port))

    assert p.engine.addresses == (("127.0.0.1", new_port),)
    assert (await fetch(session, p, host="a.lan")).status == 200  # p.url follows engine.addresses
    assert await is_refused(old_port)


async def test_apply_with_a_taken_port_raises_and_changes_nothing(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession, taken_port: int
) -> None:
    first, second = await named_echo("first"), await named_echo("second")
    config = make_config(site("a", ["a.lan"], [first.url]))
    p = await proxy(config)
    port = p.port

    with pytest.raises(BindError, match="already in use"):
        await asyncio.to_thread(p.engine.apply, make_config(site("a", ["a.lan"], [second.url]), http_port=taken_port))

    assert p.engine.config is config
    assert p.engine.addresses == (("127.0.0.1", port),)
    assert p.engine.listen_errors == ()
    assert (await fetch(session, p, host="a.lan")).seen.name == "first"


async def test_failed_start_is_reported_and_a_later_apply_recovers(
    echo: Backend, session: aiohttp.ClientSession, taken_port: int
) -> None:
    engine = Engine(make_config(site("a", ["a.lan"], [echo.url]), http_port=taken_port))
    try:
        await asyncio.to_thread(engine.start)  # does not raise: the error is kept for the UI
        assert engine.addresses == ()
        assert len(engine.listen_errors) == 1
        assert f"127.0.0.1:{taken_port}" in engine.listen_errors[0]
        assert "already in use" in engine.listen_errors[0]

        await asyncio.to_thread(engine.apply, make_config(site("a", ["a.lan"], [echo.url])))

        assert not engine.listen_errors
        p = Proxy(engine, engine.bus)
        assert (await fetch(session, p, host="a.lan")).status == 200
    finally:
        await asyncio.to_thread(engine.stop)


async def test_apply_before_start_is_used_by_start(echo: Backend, session: aiohttp.ClientSession) -> None:
    engine = Engine(make_config(site("a", ["a.lan"], [echo.url])))
    engine.apply(make_config(site("b", ["b.lan"], [echo.url])))
    try:
        await asyncio.to_thread(engine.start)
        p = Proxy(engine, engine.bus)
        assert (await fetch(session, p, host="b.lan")).status == 200
        assert (await fetch(session, p, host="a.lan")).status == 404
    finally:
        await asyncio.to_thread(engine.stop)


async def test_stop_drains_a_request_in_flight(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    arrived: list[str] = []
    up = await held_backend(backend, gate, arrived)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    port = p.port
    request = asyncio.create_task(fetch(session, p, "/long", host="app.lan"))
    await wait_for(lambda: arrived == ["/long"], description="the request at the backend")

    stopping = asyncio.create_task(asyncio.to_thread(p.engine.stop))
    await wait_for(lambda: connect_refused_sync(port), description="the listener to close")
    assert not stopping.done()  # still draining
    assert not request.done()
    gate.set()

    got = await request
    await stopping
    assert (got.status, got.body) == (200, b"old")
    assert not p.engine.running


async def test_stop_gives_up_on_a_stuck_request_after_the_drain_timeout(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    arrived: list[str] = []
    up = await held_backend(backend, gate, arrived)  # the gate stays shut until teardown
    p = await proxy(make_config(site("app", ["app.lan"], [up.url]), drain_timeout="300ms"))
    request = asyncio.create_task(fetch(session, p, "/stuck", host="app.lan"))
    await wait_for(lambda: arrived == ["/stuck"], description="the request at the backend")

    await asyncio.to_thread(p.engine.stop)  # returns although the request never finished

    assert not p.engine.running
    with pytest.raises(aiohttp.ClientError):
        await request


async def test_stop_with_a_stuck_request_is_bounded_by_the_drain_timeout(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    """The one timing assertion of the suite: an upper bound on a documented timeout, with a wide margin."""
    arrived: list[str] = []
    up = await held_backend(backend, gate, arrived)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url]), drain_timeout="1s"))
    request = asyncio.create_task(fetch(session, p, "/stuck", host="app.lan"))
    await wait_for(lambda: arrived == ["/stuck"], description="the request at the backend")

    started = time.monotonic()
    await asyncio.to_thread(p.engine.stop)
    took = time.monotonic() - started

    with pytest.raises(aiohttp.ClientError):
        await request
    assert took < 1.0 + 0.6, f"stop() took {took:.2f}s with drain_timeout = 1s"
