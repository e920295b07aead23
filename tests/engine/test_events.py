"""Events: what the engine publishes per request, and the `EventBus`/`Consumer` contract."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import struct
import threading
import time
from collections.abc import Sequence

import aiohttp
import pytest
from aiohttp import web

from homeproxy.engine import Consumer, Engine, EventBus, RequestCompleted
from tests.engine.conftest import (
    STEP_TIMEOUT,
    Backend,
    Proxy,
    StartBackend,
    StartProxy,
    StartRawBackend,
    closed_port,
    fetch,
    make_config,
    raw_request,
    record,
    site,
)
from tests.waiting import wait_for, wait_for_sync


def event(n: int = 0, **changes: object) -> RequestCompleted:
    base = RequestCompleted(
        time=1_700_000_000.0 + n,
        client="192.168.1.5",
        site="plex",
        host="plex.home.arpa",
        method="GET",
        path=f"/{n}",
        status=200,
        bytes_in=0,
        bytes_out=10,
        duration=0.01,
        upstream="http://10.0.0.2:32400",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# --- what the engine publishes ------------------------------------------------------------


async def test_one_event_per_request_with_its_details(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    events = record(p)
    before = time.time()

    got = await fetch(session, p, "/p/x?q=1", host="App.Lan:8080", method="POST", data=b"b" * 1234)
    await fetch(session, p, "/two", host="app.lan")
    await fetch(session, p, "/three", host="app.lan", method="DELETE")
    await events.wait(3)
    await fetch(session, p, "/marker", host="app.lan")
    after = time.time()
    await events.wait(4)

    assert [e.path for e in events.events] == ["/p/x?q=1", "/two", "/three", "/marker"]  # one each, in order
    first = events.events[0]
    assert (first.site, first.host, first.method, first.status) == ("app", "app.lan", "POST", 200)
    assert (first.bytes_in, first.bytes_out) == (1234, len(got.body))
    assert (first.upstream, first.client, first.error, first.cache) == (echo.url, "127.0.0.1", "", "")
    assert before <= first.time <= first.time + first.duration <= after
    assert events.events[2].method == "DELETE"


async def test_unknown_host_event_has_no_site(proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    events = record(p)

    got = await fetch(session, p, "/nope", host="unknown.lan")

    (ev,) = await events.wait(1)
    assert (ev.site, ev.host, ev.status, ev.upstream, ev.path) == ("", "unknown.lan", 404, "", "/nope")
    assert ev.bytes_out == len(got.body)


async def test_head_to_unknown_host_counts_no_body_bytes(proxy: StartProxy, echo: Backend) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    events = record(p)

    resp = await raw_request(p.port, b"HEAD / HTTP/1.1\r\nHost: unknown.lan\r\n\r\n", head_request=True)

    (ev,) = await events.wait(1)
    assert (resp.status, ev.status) == (404, 404)
    assert ev.bytes_out == 0


async def test_error_events_say_what_went_wrong(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    async def stuck(request: web.BaseRequest) -> web.StreamResponse:
        await gate.wait()
        return web.Response()

    slow = await backend(stuck)
    down_url = f"http://127.0.0.1:{closed_port()}"
    p = await proxy(
        make_config(
            site("down", ["down.lan"], [down_url]),
            site("slow", ["slow.lan"], [slow.url], read_timeout="200ms"),
        )
    )
    events = record(p)

    assert (await fetch(session, p, host="down.lan")).status == 502
    assert (await fetch(session, p, host="slow.lan")).status == 504

    down, timed_out = await events.wait(2)
    assert (down.site, down.status, down.upstream) == ("down", 502, down_url)
    assert down.error.startswith("upstream unreachable")
    assert (timed_out.site, timed_out.status, timed_out.upstream) == ("slow", 504, slow.url)
    assert timed_out.error == "upstream timed out before answering"


async def test_upstream_dying_mid_response_is_recorded(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        writer.close()

    up = await raw_backend(dies)
    p = await proxy(make_config(site("dies", ["dies.lan"], [up.url])))
    events = record(p)

    async with session.get(p.url, headers={"Host": "dies.lan"}) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()

    (ev,) = await events.wait(1)
    assert (ev.status, ev.bytes_out) == (200, 100)
    assert ev.error.startswith("upstream failed mid-response")


def proxy_paused_on(engine: Engine) -> bool:
    """Whether the proxy holds more for one of its clients than its transport takes (it waits in drain).

    Read-only look at the engine's HTTP server: the only way to know, without timing, that the
    proxy has stopped on back-pressure from a client that does not read.
    """
    server = engine._http
    return any(conn.write_paused for conn in (server.connections if server is not None else ()))


async def hang_up_mid_download(p: Proxy) -> None:
    """Ask for an endless body, read none of it, and reset the connection once the proxy waits on us."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the back-pressure starts early
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends a RST
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", p.port))
        await loop.sock_sendall(sock, b"GET /video HTTP/1.1\r\nHost: big.lan\r\n\r\n")
        assert (await asyncio.wait_for(loop.sock_recv(sock, 12), STEP_TIMEOUT)).startswith(b"HTTP/1.1 200")
        await wait_for(lambda: proxy_paused_on(p.engine), description="the proxy to wait for the client")
    finally:
        sock.close()


async def test_client_hanging_up_mid_download_is_not_an_error(
    proxy: StartProxy, backend: StartBackend, caplog: pytest.LogCaptureFixture
) -> None:
    async def endless(request: web.BaseRequest) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            for _ in range(100_000):  # ~6 GB: ends when the proxy lets go, long before that
                await resp.write(b"z" * 64 * 1024)
        except ConnectionError:
            pass
        return resp

    up = await backend(endless)
    p = await proxy(make_config(site("big", ["big.lan"], [up.url])))
    events = record(p)
    caplog.set_level(logging.ERROR)

    # A video player seeking hangs up on a download it no longer needs, again and again.
    for n in range(3):
        await hang_up_mid_download(p)
        await events.wait(n + 1)

    assert [(e.status, e.error) for e in events.events] == [(200, "client went away")] * 3
    assert [r.getMessage() for r in caplog.records if r.name.startswith("homeproxy")] == []


async def test_client_abandoning_an_upload_is_not_blamed_on_the_upstream(proxy: StartProxy, echo: Backend) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    events = record(p)

    _, writer = await asyncio.open_connection("127.0.0.1", p.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: app.lan\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1_000_000)
    await writer.drain()
    writer.transport.abort()  # gone after a tenth of the body

    (ev,) = await events.wait(1)
    assert ev.error == "client went away"
    assert not 500 <= ev.status < 600  # the site did nothing wrong: no 5xx in its numbers


async def test_event_client_is_the_forwarded_client_behind_a_trusted_proxy(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url]), trusted_proxies=["127.0.0.0/8"]))
    events = record(p)

    await fetch(session, p, host="app.lan", headers={"X-Forwarded-For": "203.0.113.7"})

    (ev,) = await events.wait(1)
    assert ev.client == "203.0.113.7"


async def test_websocket_session_is_one_event(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    async def ws_echo(request: web.BaseRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data * 2)
        return ws

    up = await backend(ws_echo)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url])))
    events = record(p)

    async with session.ws_connect(p.url + "/live", headers={"Host": "ws.lan"}) as ws:
        for word in ("abc", "defg"):
            await ws.send_str(word)
            assert (await asyncio.wait_for(ws.receive(), STEP_TIMEOUT)).data == word * 2

    (ev,) = await events.wait(1)
    assert (ev.site, ev.status, ev.path, ev.upstream) == ("ws", 101, "/live", up.url)
    # The session is tunnelled as bytes: WebSocket frames as they crossed, close frames included.
    # In: "abc" and "defg" as masked frames (2 + 4 + n bytes each) and the client's close (2 + 4 + 2).
    # Out: "abcabc" and "defgdefg" unmasked (2 + n) and the backend's close (2 + 2).
    assert (ev.bytes_in, ev.bytes_out) == ((9 + 10 + 8), (8 + 10 + 4))


async def test_a_subscriber_that_never_drains_cannot_slow_the_proxy(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    stuck = p.bus.subscribe("stuck", maxlen=2)
    events = record(p)

    for i in range(6):
        assert (await fetch(session, p, f"/{i}", host="app.lan")).status == 200
    await events.wait(6)

    assert stuck.dropped == 4
    assert [e.path for e in stuck.drain()] == ["/4", "/5"]


# --- the bus ------------------------------------------------------------------------------


def test_events_are_frozen_data() -> None:
    ev = event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.status = 500  # type: ignore[misc]
    assert not hasattr(ev, "__dict__")


def test_full_queue_drops_the_oldest_and_counts() -> None:
    bus = EventBus()
    sub = bus.subscribe("slow", maxlen=3)

    for n in range(5):
        bus.publish(event(n))

    assert [e.path for e in sub.drain()] == ["/2", "/3", "/4"]
    assert sub.dropped == 2
    bus.publish(event(5))
    assert [e.path for e in sub.drain()] == ["/5"]
    assert sub.dropped == 2
    assert sub.drain() == []


def test_each_subscriber_gets_every_event_and_unsubscribe_stops_them() -> None:
    bus = EventBus()
    a, b = bus.subscribe("a"), bus.subscribe("b")
    bus.publish(event(1))
    bus.unsubscribe(a)
    bus.publish(event(2))

    assert [e.path for e in a.drain()] == ["/1"]
    assert [e.path for e in b.drain()] == ["/1", "/2"]


def test_failing_consumer_is_detached_and_others_keep_receiving() -> None:
    bus = EventBus()
    calls: list[int] = []
    good: list[RequestCompleted] = []
    lock = threading.Lock()

    def explode(batch: Sequence[RequestCompleted]) -> None:
        calls.append(len(batch))
        raise RuntimeError("subscriber bug")

    def collect(batch: Sequence[RequestCompleted]) -> None:
        with lock:
            good.extend(batch)

    bad = Consumer(bus, "bad", explode, interval=0.01)
    fine = Consumer(bus, "fine", collect, interval=0.01)
    bad.start()
    fine.start()
    try:
        bus.publish(event(1))  # never raises, although a handler will
        wait_for_sync(lambda: calls, description="the failing handler to run")
        wait_for_sync(
            lambda: "homeproxy-bad" not in {t.name for t in threading.enumerate()},
            description="the failing consumer's thread to end",
        )

        for n in range(2, 6):
            bus.publish(event(n))
        wait_for_sync(lambda: len(good) == 5, description="the healthy consumer to get every event")

        assert calls == [1]
        assert bad.subscription.drain() == []  # detached: nothing queues up for it any more
        assert [e.path for e in good] == ["/1", "/2", "/3", "/4", "/5"]
    finally:
        bad.stop()
        fine.stop()


def test_consumer_stop_hands_over_what_is_queued() -> None:
    bus = EventBus()
    got: list[RequestCompleted] = []
    consumer = Consumer(bus, "late", got.extend, interval=60)  # would not wake on its own during the test
    consumer.start()
    for n in range(3):
        bus.publish(event(n))

    consumer.stop()

    assert [e.path for e in got] == ["/0", "/1", "/2"]


async def test_consumer_is_fed_by_a_running_engine(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    got: list[RequestCompleted] = []
    consumer = Consumer(p.bus, "test", got.extend, interval=0.01)
    consumer.start()
    try:
        for i in range(3):
            await fetch(session, p, f"/{i}", host="app.lan")
        await wait_for(lambda: len(got) == 3, description="3 events through the consumer")
    finally:
        consumer.stop()
    assert [e.path for e in got] == ["/0", "/1", "/2"]


async def test_headers_are_copied_only_for_a_subscriber_that_shows_them(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    plain = record(p)
    assert not p.bus.wants_headers
    await fetch(session, p, "/one", host="app.lan", headers={"X-Probe": "1"})
    (first,) = await plain.wait(1)
    assert (first.request_headers, first.response_headers) == ((), ())

    shows = p.bus.subscribe("tui", headers=True)
    assert p.bus.wants_headers
    await fetch(session, p, "/two", host="app.lan", headers={"X-Probe": "2"})
    await wait_for(lambda: len(plain.poll()) == 2, description="the second event")
    (second,) = shows.drain()
    assert ("X-Probe", "2") in second.request_headers
    assert any(name.lower() == "content-type" for name, _ in second.response_headers)
    p.bus.unsubscribe(shows)
    assert not p.bus.wants_headers
