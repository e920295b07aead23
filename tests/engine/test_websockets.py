"""WebSockets: messages both ways, subprotocols, close codes in both directions, and `websockets = false`."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from tests.engine.conftest import (
    STEP_TIMEOUT,
    Backend,
    Seen,
    StartBackend,
    StartProxy,
    make_config,
    raw_request,
    site,
)


async def ws_echo(request: web.BaseRequest) -> web.StreamResponse:
    """Echo text as "echo:<text>" and binary reversed; "close:<code>" closes with that code."""
    ws = web.WebSocketResponse(protocols=("v1",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            if msg.data.startswith("close:"):
                await ws.close(code=int(msg.data[6:]), message=b"bye")
                break
            await ws.send_str(f"echo:{msg.data}")
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


async def receive(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    return await asyncio.wait_for(ws.receive(), STEP_TIMEOUT)


async def test_text_and_binary_both_ways(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    up = await backend(ws_echo)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url])))

    async with session.ws_connect(p.url + "/socket", headers={"Host": "ws.lan"}) as ws:
        await ws.send_str("hello ✓")
        msg = await receive(ws)
        assert (msg.type, msg.data) == (WSMsgType.TEXT, "echo:hello ✓")

        payload = bytes(range(256)) * 300  # larger than one TCP segment
        await ws.send_bytes(payload)
        msg = await receive(ws)
        assert (msg.type, msg.data) == (WSMsgType.BINARY, payload[::-1])

        for i in range(20):
            await ws.send_str(str(i))
        assert [(await receive(ws)).data for _ in range(20)] == [f"echo:{i}" for i in range(20)]


async def test_subprotocol_is_negotiated_with_the_backend(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    offered: list[str] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        offered.append(request.headers.get("Sec-WebSocket-Protocol", ""))
        return await ws_echo(request)

    up = await backend(handler)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url])))

    async with session.ws_connect(p.url + "/", headers={"Host": "ws.lan"}, protocols=("v2", "v1")) as ws:
        assert ws.protocol == "v1"
        await ws.send_str("x")
        assert (await receive(ws)).data == "echo:x"

    assert [p.replace(" ", "") for p in offered] == ["v2,v1"]


async def test_close_code_from_backend_reaches_the_client(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    up = await backend(ws_echo)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url])))

    async with session.ws_connect(p.url + "/", headers={"Host": "ws.lan"}) as ws:
        await ws.send_str("close:4001")
        msg = await receive(ws)

        assert msg.type == WSMsgType.CLOSE
        assert msg.data == 4001
        assert ws.close_code == 4001


async def test_close_code_from_client_reaches_the_backend(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        closed.set_result(ws.close_code)
        return ws

    up = await backend(handler)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url])))

    async with session.ws_connect(p.url + "/", headers={"Host": "ws.lan"}) as ws:
        await ws.close(code=4002, message=b"done")

    assert await asyncio.wait_for(closed, STEP_TIMEOUT) == 4002


async def test_websockets_off_sends_no_upgrade_upstream(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("ws", ["ws.lan"], [echo.url], websockets=False)))

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(p.url + "/", headers={"Host": "ws.lan"})
    assert refused.value.status == 200  # the backend answered a plain GET

    resp = await raw_request(
        p.port,
        b"GET /chat HTTP/1.1\r\nHost: ws.lan\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    assert resp.status == 200
    seen = Seen.of(resp.body)
    assert seen.one("Upgrade") is None
    assert seen.one("Connection") is None
