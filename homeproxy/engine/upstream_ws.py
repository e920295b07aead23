"""WebSocket upgrades, relayed message by message in both directions (aiohttp on both sides).

The handshake goes to the upstream first, on a connection of its own (never a pooled one, so
no idle connection the upstream closed can be met); the client is accepted only once the
upstream has. Each side's close is passed on with its code.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.hop import connection_tokens
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply

if TYPE_CHECKING:
    from homeproxy.engine.upstream import Forwarder

#: Headers of the WebSocket handshake that aiohttp's client writes itself.
_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    h = request.headers
    return h.get("Upgrade", "").lower() == "websocket" and "upgrade" in connection_tokens(h)


async def relay_websocket(fw: Forwarder, ex: Exchange, session: aiohttp.ClientSession) -> Reply:
    """Connect upstream first, then accept the client, then pump until either side closes."""
    request = ex.request
    src = request.headers
    protocols = tuple(p.strip() for p in src.get("Sec-WebSocket-Protocol", "").split(",") if p.strip())
    base = fw.pick(ex)
    if base is None:
        return error_reply(502, request)
    url = URL(str(base) + fw.target(request), encoded=True).with_scheme("wss" if base.scheme == "https" else "ws")
    headers = fw.request_headers(ex, base.raw_authority)
    for name in _WS_HANDSHAKE:
        headers.popall(name, None)
    try:
        # aiohttp's handshake has no timeout of its own: bound it by the site's.
        async with asyncio.timeout(fw.site.connect_timeout + fw.site.read_timeout):
            upstream = await _connect(session, url, headers, protocols, ssl=fw.site.verify_upstream)
    except aiohttp.WSServerHandshakeError as e:
        ex.error = f"upstream refused the WebSocket: {e.status}"
        return error_reply(502, request) if e.status < 400 else Reply(e.status)
    except TimeoutError:
        ex.error = "upstream timed out before answering"
        return error_reply(504, request)
    except aiohttp.ClientError as e:
        ex.error = f"upstream unreachable: {e}"
        return error_reply(502, request)
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (), max_msg_size=0, compress=False
    )
    ex.bytes_out = 0
    try:
        await client.prepare(request)
        await asyncio.gather(_pump(client, upstream, ex, inbound=True), _pump(upstream, client, ex, inbound=False))
    finally:
        await upstream.close()
        await client.close()
    return Reply(101, sent=client)


async def _connect(
    session: aiohttp.ClientSession, url: URL, headers: CIMultiDict[str], protocols: tuple[str, ...], *, ssl: bool
) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(
        url,
        headers=headers,
        protocols=protocols,
        autoping=True,
        compress=0,
        max_msg_size=0,
        ssl=ssl,
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
    )


async def _pump(src: Any, dst: Any, ex: Exchange, *, inbound: bool) -> None:
    """Copy messages from one WebSocket to the other until either closes."""
    async for msg in src:
        if msg.type == WSMsgType.TEXT:
            data = msg.data
            await dst.send_str(data)
        elif msg.type == WSMsgType.BINARY:
            data = msg.data
            await dst.send_bytes(data)
        else:  # ERROR; CLOSE and the rest end the iteration
            break
        if inbound:
            ex.bytes_in += len(data)
        else:
            ex.bytes_out = (ex.bytes_out or 0) + len(data)
    # One side closed: close the other with the same code.
    code = src.close_code or 1000
    await dst.close(code=code if 1000 <= code < 5000 and code not in (1005, 1006) else 1000)
