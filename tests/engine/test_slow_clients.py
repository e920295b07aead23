"""Slow and greedy clients: the `[server]` timeouts and connection caps, and back-pressure.

Each test sets its limit small in the config (half a second, three connections) and waits for
its effect with a bounded wait, never a sleep that asserts a speed. What must hold: a head or a
body that trickles in is answered 408 and the connection closed (the upstream request, if one
began, aborted); an idle connection is closed; connections over a cap are closed at once while
the others go on; a client that does not read holds homeproxy to a bounded amount of an
upstream's response (the upstream's writes block), and one that stops reading for
`send_timeout` is cut off, its upstream connection with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from typing import Any

import pytest

from tests.engine.conftest import (
    STEP_TIMEOUT,
    Proxy,
    StartProxy,
    StartRawBackend,
    make_config,
    read_head,
    read_response,
    record,
    site,
)
from tests.engine.recording import RecordingUpstream
from tests.engine.test_smuggling import assert_never_completed, still_serves, until_closed
from tests.waiting import wait_for

FAST = "500ms"
"""The timeout under test; the others stay long so only the one under test can fire."""


async def start(proxy: StartProxy, raw_backend: StartRawBackend, **server: Any) -> tuple[Proxy, RecordingUpstream]:
    up = RecordingUpstream()
    url = (await raw_backend(up)).url
    return await proxy(make_config(site("s", ["s.lan"], [url]), **server)), up


# --- timeouts on what the client sends --------------------------------------------------------


async def test_a_head_that_trickles_in_is_a_408(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    """Slowloris: a header byte now and then, never the end of the head."""
    p, up = await start(proxy, raw_backend, client_header_timeout=FAST)
    events = record(p)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)

    async def trickle() -> None:
        writer.write(b"GET / HTTP/1.1\r\nHost: s.lan\r\nX-Slow: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(200):
                await asyncio.sleep(0.1)
                writer.write(b"a")

    sending = asyncio.create_task(trickle())
    try:
        resp = await asyncio.wait_for(read_response(reader), STEP_TIMEOUT)
        rest = await until_closed(reader)
    finally:
        sending.cancel()
        writer.close()
    assert (resp.status, rest) == (408, b"")
    [event] = await events.wait(1)
    assert (event.status, event.error) == (408, "malformed request: request head not received in time")
    assert up.raw == b""
    await still_serves(p, up)


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    """Before its first request, a connection waits as for a head, not as a keep-alive one."""
    p, _ = await start(proxy, raw_backend, client_header_timeout=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        assert await until_closed(reader) == b""
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    p, up = await start(proxy, raw_backend, keepalive_timeout=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET /one HTTP/1.1\r\nHost: s.lan\r\n\r\n")
        first = await read_response(reader)
        assert first.get("Connection") != "close"
        assert await until_closed(reader) == b""  # closed quietly, no answer to a request never sent
    finally:
        writer.close()
    assert [r.target for r in up.requests()] == ["/one"]


@pytest.mark.parametrize(
    ("head", "sent"),
    [
        (b"Content-Length: 10\r\n", b"01234"),  # small: read whole before the upstream is asked
        (b"Content-Length: 200000\r\n", b"x" * 100_000),  # large: streamed upstream as it comes
        (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n"),
    ],
    ids=["small-length", "streamed-length", "chunked"],
)
async def test_a_body_that_stops_is_a_408_and_the_upstream_request_is_aborted(
    proxy: StartProxy, raw_backend: StartRawBackend, head: bytes, sent: bytes
) -> None:
    p, up = await start(proxy, raw_backend, client_body_timeout=FAST)
    events = record(p)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: s.lan\r\n" + head + b"\r\n" + sent)  # and then nothing
        resp = await asyncio.wait_for(read_response(reader), STEP_TIMEOUT)
        rest = await until_closed(reader)
    finally:
        writer.close()
    assert (resp.status, rest) == (408, b"")
    [event] = await events.wait(1)
    assert event.status == 408
    await wait_for(lambda: up.closed == len(up.connections), description="the upstream connection closed")
    assert_never_completed(up)  # the upstream got a beginning at most, never a request to act on
    await still_serves(p, up)


async def test_a_body_held_back_by_a_slow_upstream_is_not_the_clients_fault(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    """The upstream reads nothing for a while: homeproxy stops reading the body (back-pressure),
    and that wait does not count against the client's `client_body_timeout`."""
    size = 64 * 1024 * 1024  # more than the socket buffers on the way hold
    release = asyncio.Event()

    async def late_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()
        await reader.readexactly(size)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    url = (await raw_backend(late_reader)).url
    p = await proxy(make_config(site("s", ["s.lan"], [url]), client_body_timeout=FAST))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: s.lan\r\nContent-Length: %d\r\n\r\n" % size)
        sending = asyncio.create_task(_send(writer, b"x" * size))
        # Every buffer on the way fills up; the client cannot send more for a while.
        await wait_for(lambda: writer.transport.get_write_buffer_size() > 0, description="the client blocked")
        await asyncio.sleep(2.0)  # sweeps well past the body timeout, while homeproxy holds the body back
        release.set()
        resp = await asyncio.wait_for(read_response(reader), STEP_TIMEOUT)
        await sending
    finally:
        writer.close()
    assert (resp.status, resp.body) == (200, b"ok")


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


# --- connection caps --------------------------------------------------------------------------


async def open_working(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`n` keep-alive connections, each with one answered request (so homeproxy counts them)."""
    conns = []
    for i in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /open/%d HTTP/1.1\r\nHost: s.lan\r\n\r\n" % i)
        assert (await read_response(reader)).status == 200
        conns.append((reader, writer))
    return conns


async def is_cut_at_once(port: int) -> bool:
    """A new connection is closed by homeproxy without an answer, whatever it sends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /extra HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n")
        return await until_closed(reader) == b""
    finally:
        writer.close()


@pytest.mark.parametrize("cap", [{"max_connections_per_ip": 3}, {"max_connections": 3}], ids=["per-ip", "total"])
async def test_connections_over_the_cap_are_closed_and_the_others_go_on(
    proxy: StartProxy, raw_backend: StartRawBackend, cap: dict[str, int]
) -> None:
    p, up = await start(proxy, raw_backend, **cap)
    conns = await open_working(p.port, 3)
    try:
        assert await is_cut_at_once(p.port)
        for i, (reader, writer) in enumerate(conns):  # the three still work
            writer.write(b"GET /again/%d HTTP/1.1\r\nHost: s.lan\r\n\r\n" % i)
            assert (await read_response(reader)).status == 200
        _, first = conns.pop(0)
        first.close()  # one closes: a new one fits again
        await first.wait_closed()

        async def new_one_works() -> bool:
            try:
                await open_working(p.port, 1)
            except (ConnectionError, asyncio.IncompleteReadError):
                return False
            return True

        deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
        while not await new_one_works():
            assert asyncio.get_running_loop().time() < deadline, "no room after a connection closed"
            await asyncio.sleep(0.05)
    finally:
        for _, writer in conns:
            writer.close()
    assert b"/extra" not in up.raw


async def test_trusted_proxies_are_not_capped_per_ip(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    """A proxy in front of homeproxy carries many clients on its connections."""
    p, _ = await start(proxy, raw_backend, max_connections_per_ip=1, trusted_proxies=["127.0.0.1"])
    conns = await open_working(p.port, 3)
    for _, writer in conns:
        writer.close()


# --- clients that do not read ---------------------------------------------------------------------

BIG = 50 * 1024 * 1024
PIECE = bytes(range(256)) * 4096  # 1 MiB


class Streaming:
    """A raw upstream that answers with BIG bytes, written as fast as the proxy takes them."""

    def __init__(self) -> None:
        self.sent = 0
        self.writer: asyncio.StreamWriter | None = None
        self.ended: str = ""
        """"done" once the whole body is written, "cut" when the proxy closed the connection first."""

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n" % BIG)
        try:
            while self.sent < BIG:
                writer.write(PIECE)
                self.sent += len(PIECE)
                await writer.drain()
            self.ended = "done"
        except ConnectionError:
            self.ended = "cut"
        finally:
            writer.close()

    async def stalled(self) -> None:
        """Wait (bounded) until its writes wait and two looks a quarter second apart find it has
        sent nothing more, or until it has sent everything."""
        deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT
        last = -1
        while not self.ended:
            if self.blocked() and self.sent == last:
                return
            last = self.sent
            assert asyncio.get_running_loop().time() < deadline, "the upstream neither blocked nor finished"
            await asyncio.sleep(0.25)

    def blocked(self) -> bool:
        """Its writes wait: the proxy has stopped reading (its buffer is past asyncio's high-water mark)."""
        w = self.writer
        return w is not None and w.transport.get_write_buffer_size() > 64 * 1024


async def test_a_client_that_does_not_read_holds_the_proxy_to_a_bounded_buffer(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    up = Streaming()
    url = (await raw_backend(up)).url
    p = await proxy(make_config(site("s", ["s.lan"], [url])))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    sock = writer.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        writer.write(b"GET /big HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n")
        status, _, _ = await read_head(reader)
        assert status == 200
        # The client reads nothing more. The upstream soon cannot write either: homeproxy stopped
        # reading from it instead of buffering the response.
        await up.stalled()
        assert up.ended == "", "the whole response left the upstream for a client that reads nothing"
        assert up.sent < BIG // 2, f"{up.sent} bytes left the upstream for a client that reads nothing"
        # Everything arrives once the client reads: nothing was dropped to keep memory down.
        digest = hashlib.sha256()
        got = 0
        while chunk := await asyncio.wait_for(reader.read(1024 * 1024), STEP_TIMEOUT):
            digest.update(chunk)
            got += len(chunk)
    finally:
        writer.close()
    assert got == BIG
    expected = hashlib.sha256()
    for _ in range(BIG // len(PIECE)):
        expected.update(PIECE)
    assert digest.hexdigest() == expected.hexdigest()


async def test_a_client_that_stops_reading_is_cut_after_the_send_timeout(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    up = Streaming()
    url = (await raw_backend(up)).url
    p = await proxy(make_config(site("s", ["s.lan"], [url]), send_timeout=FAST))
    events = record(p)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        writer.write(b"GET /big HTTP/1.1\r\nHost: s.lan\r\n\r\n")
        status, _, _ = await read_head(reader)
        assert status == 200
        # Not reading: homeproxy gives up on this client, and on the upstream response for it.
        await wait_for(lambda: up.ended == "cut", timeout=STEP_TIMEOUT, description="the upstream connection cut")
        assert len(await until_closed(reader)) < BIG  # what was in flight, then the end: never the whole body
    finally:
        writer.close()
    [event] = await events.wait(1)
    assert event.status == 200 and event.bytes_out < BIG
