"""The upstream HTTP/1.1 client (engine/h1/) against raw-socket upstreams that misbehave.

Each upstream here is a bare TCP server that reads requests with `read_head` and writes bytes
exactly as a broken (or merely unusual) server would. What must hold: a response that cannot be
framed unambiguously never reaches the client as a clean answer, and a connection is reused only
when its last exchange ended cleanly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from tests.engine.conftest import (
    STEP_TIMEOUT,
    Proxy,
    StartProxy,
    StartRawBackend,
    fetch,
    make_config,
    raw_request,
    read_response,
    record,
    site,
)

Answer = Callable[[int], bytes]
"""The bytes to write for the n-th request (0-based, counted over all connections)."""


async def read_request(reader: asyncio.StreamReader) -> dict[str, str]:
    """One request's head from the proxy: its headers, names lower-case."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP_TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


class Scripted:
    """A raw upstream answering each request with `answer(n)`; counts connections and requests."""

    def __init__(self, answer: Answer, *, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    headers = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                n, self.requests = self.requests, self.requests + 1
                writer.write(self.answer(n))
                await writer.drain()
                if self.close_after:
                    return
        finally:
            writer.close()


async def start(proxy: StartProxy, raw_backend: StartRawBackend, script: Scripted) -> Proxy:
    up = await raw_backend(script)
    return await proxy(make_config(site("s", ["s.lan"], [up.url])))


async def status_and_error(session: aiohttp.ClientSession, p: Proxy) -> tuple[int, str]:
    """One GET through the proxy: the status the client got and the error its event records."""
    rec = record(p)
    status = (await fetch(session, p, host="s.lan")).status
    [event] = await rec.wait(1)
    return status, event.error


def ok(body: bytes = b"hello", *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), b"".join(extra), body)


async def test_keep_alive_connections_are_reused(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    script = Scripted(lambda n: ok(b"n=%d" % n))
    p = await start(proxy, raw_backend, script)
    bodies = [(await fetch(session, p, host="s.lan")).body for _ in range(5)]
    assert bodies == [b"n=0", b"n=1", b"n=2", b"n=3", b"n=4"]
    assert script.connections == 1


async def test_connection_close_mid_pool_is_honoured(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    script = Scripted(lambda n: ok(b"n=%d" % n, b"Connection: close\r\n" if n == 1 else b""))
    p = await start(proxy, raw_backend, script)
    for n in range(4):
        r = await fetch(session, p, host="s.lan")
        assert (r.status, r.body) == (200, b"n=%d" % n)
    assert script.connections == 2  # a new one after the upstream said close, then reused again


@pytest.mark.parametrize("interim", [b"100 Continue", b"103 Early Hints\r\nLink: </a.css>; rel=preload"])
async def test_interim_answers_are_skipped(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession, interim: bytes
) -> None:
    script = Scripted(lambda n: b"HTTP/1.1 " + interim + b"\r\n\r\n" + ok(b"final"))
    p = await start(proxy, raw_backend, script)
    for _ in range(2):
        r = await fetch(session, p, host="s.lan", method="POST", data=b"x" * 10)
        assert (r.status, r.body) == (200, b"final")
    assert script.connections == 1


async def test_an_unasked_101_is_a_502_and_the_connection_is_dropped(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    script = Scripted(
        lambda n: (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n" if n == 0 else ok()
        )
    )
    p = await start(proxy, raw_backend, script)
    status, error = await status_and_error(session, p)
    assert status == 502
    assert error == "upstream failed: UpstreamProtocolError: upstream switched protocols (101) unasked"
    assert (await fetch(session, p, host="s.lan")).body == b"hello"
    assert script.connections == 2


async def test_a_malformed_status_line_is_a_502(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    p = await start(proxy, raw_backend, Scripted(lambda n: b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nhi"))
    status, error = await status_and_error(session, p)
    assert status == 502
    assert error.startswith("upstream failed: UpstreamProtocolError: upstream sent a malformed response")


async def test_a_chunk_size_that_lies_cuts_the_client_off(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    lie = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nnot hex\r\n0\r\n\r\n"
    p = await start(proxy, raw_backend, Scripted(lambda n: lie))
    rec = record(p)
    async with session.get(p.url, headers={"Host": "s.lan"}) as resp:
        assert resp.status == 200  # the head had gone out
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    [event] = await rec.wait(1)
    assert event.error.startswith("upstream failed mid-response: upstream sent a malformed response")


async def test_bytes_after_a_small_body_are_a_502_never_a_clean_answer(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    p = await start(proxy, raw_backend, Scripted(lambda n: ok(b"12345") + b"SURPLUS"))
    status, error = await status_and_error(session, p)
    assert status == 502
    assert error.endswith("upstream sent more bytes than its response's framing said")


async def test_a_close_delimited_body_is_passed_whole(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    body = b"x" * 300_000
    script = Scripted(lambda n: b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body, close_after=True)
    p = await start(proxy, raw_backend, script)
    for _ in range(2):
        r = await fetch(session, p, host="s.lan")
        assert (r.status, len(r.body)) == (200, len(body))
    assert script.connections == 2  # never reused


async def test_head_204_and_304_have_no_body_and_do_not_hang(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    answers = {
        0: b"HTTP/1.1 204 No Content\r\n\r\n",
        1: b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n',
        2: ok(b"after"),
    }
    script = Scripted(lambda n: answers.get(n, ok()))
    p = await start(proxy, raw_backend, script)
    assert (await fetch(session, p, host="s.lan")).status == 204
    assert (await fetch(session, p, host="s.lan", headers={"If-None-Match": '"a"'})).status == 304
    assert (await fetch(session, p, host="s.lan")).body == b"after"
    assert script.connections == 1

    head = await raw_request(p.port, b"HEAD / HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n", head_request=True)
    assert head.status == 200 and head.body == b""


async def test_an_upstream_that_answers_before_the_upload_ends(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    """A 413 while the 1 MB body is still coming: the client gets it, nothing hangs."""
    served: list[int] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n")
        await writer.drain()
        served.append(1)
        writer.close()

    up = await raw_backend(refuse)
    p = await proxy(make_config(site("s", ["s.lan"], [up.url])))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"POST /upload HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100_000)
        await writer.drain()
        response = await asyncio.wait_for(read_response(reader), STEP_TIMEOUT)
        assert (response.status, response.body) == (413, b"too big\n")
    finally:
        writer.close()
    assert served == [1]


async def test_bytes_while_idle_retire_the_connection(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    connections: list[int] = []

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await read_request(reader)
        writer.write(ok(b"first"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")  # nobody asked
        await writer.drain()
        try:
            await read_request(reader)
            writer.write(ok(b"wrong connection"))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not connections:
            await chatty(reader, writer)
            return
        connections.append(1)
        await read_request(reader)
        writer.write(ok(b"second"))
        await writer.drain()
        writer.close()

    up = await raw_backend(answer)
    p = await proxy(make_config(site("s", ["s.lan"], [up.url])))
    assert (await fetch(session, p, host="s.lan")).body == b"first"
    await asyncio.sleep(0.2)  # let the unasked bytes arrive (a wait for the upstream, not a timing check)
    assert (await fetch(session, p, host="s.lan")).body == b"second"
    assert len(connections) == 2
