"""WebSocket tunnels and `send_timeout`: a peer that reads nothing (client or upstream) gets the
tunnel cut, with the reason in its event; an idle tunnel is left alone."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

import aiohttp
from aiohttp import WSMsgType, web

from tests.engine.conftest import (
    STEP_TIMEOUT,
    StartBackend,
    StartProxy,
    make_config,
    read_head,
    record,
    site,
)
from tests.engine.test_websockets import receive, ws_echo

FAST = "500ms"
"""The tests' send_timeout."""
CUT_WITHIN = 10.0
"""A generous bound on how long a stalled tunnel may live (0.5 s plus a loaded machine's delays)."""
PIECE = b"x" * (64 * 1024)

UPGRADE = (
    b"GET /socket HTTP/1.1\r\nHost: ws.lan\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
FRAME = b"\x82\xff" + struct.pack("!Q", len(PIECE)) + b"\x00\x00\x00\x00" + PIECE
"""A masked binary frame (RFC 6455 section 5.2) of PIECE; the zero mask leaves the payload as is."""


async def open_raw_websocket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client past its handshake, with a small receive buffer so a stall shows quickly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    writer.write(UPGRADE)
    status, _, _ = await read_head(reader)
    assert status == 101
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Read what was in flight until the connection ends (EOF or reset)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(1024 * 1024):
            pass


async def still_serves(port: int, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(f"http://127.0.0.1:{port}/", headers={"Host": "ws.lan"}) as ws:
        await ws.send_str("again")
        assert (await receive(ws)).data == "echo:again"


async def test_a_client_that_stops_reading_gets_its_tunnel_cut(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    flood_ended = asyncio.Event()

    async def flood(request: web.BaseRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.path == "/socket":
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                while not ws.closed:
                    await ws.send_bytes(PIECE)
            flood_ended.set()
            return ws
        return await ws_echo_prepared(ws)

    up = await backend(flood)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url]), send_timeout=FAST))
    events = record(p)
    began = time.monotonic()
    reader, writer = await open_raw_websocket(p.port)
    try:
        # Never reading: the backend's flood fills the proxy's buffers, then homeproxy gives up.
        [event] = await events.wait(1)
        assert time.monotonic() - began < CUT_WITHIN
        assert event.status == 101
        assert event.error == "client read nothing for 0.5 s"
        await asyncio.wait_for(flood_ended.wait(), STEP_TIMEOUT)  # the upstream side went too
        await asyncio.wait_for(until_closed(reader), STEP_TIMEOUT)  # and so did the client's
    finally:
        writer.close()
    await still_serves(p.port, session)


async def test_an_upstream_that_stops_reading_gets_its_tunnel_cut(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def deaf(request: web.BaseRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.path == "/socket":
            await release.wait()  # never reads: aiohttp stops reading the socket past 64 KiB
            return ws
        return await ws_echo_prepared(ws)

    up = await backend(deaf)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url]), send_timeout=FAST))
    events = record(p)
    began = time.monotonic()
    _, writer = await open_raw_websocket(p.port)

    async def client_flood() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(FRAME)
                await writer.drain()

    flooding = asyncio.create_task(client_flood())
    try:
        [event] = await events.wait(1)
        assert time.monotonic() - began < CUT_WITHIN
        assert event.status == 101
        assert event.error == "upstream read nothing for 0.5 s"
        # The client's side is closed too: its writes fail, or it reads the end.
        await asyncio.wait_for(flooding, STEP_TIMEOUT)
    finally:
        flooding.cancel()
        release.set()
        writer.close()
    await still_serves(p.port, session)


async def test_an_idle_tunnel_outlives_the_send_timeout(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    up = await backend(ws_echo)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url]), send_timeout=FAST))
    events = record(p)

    async with session.ws_connect(p.url + "/socket", headers={"Host": "ws.lan"}) as ws:
        await ws.send_str("before")
        assert (await receive(ws)).data == "echo:before"
        await asyncio.sleep(2.0)  # four send_timeouts with nothing sent either way
        assert events.poll() == []
        await ws.send_str("after")
        msg = await receive(ws)
        assert (msg.type, msg.data) == (WSMsgType.TEXT, "echo:after")

    [event] = await events.wait(1)
    assert event.status == 101 and not event.error


async def ws_echo_prepared(ws: web.WebSocketResponse) -> web.WebSocketResponse:
    """`ws_echo`'s text echo on a response already prepared."""
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(f"echo:{msg.data}")
    return ws
