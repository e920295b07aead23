"""Retries to the next upstream, and the limits on the way there, against real backends.

What may go to another upstream: anything nothing of which was sent yet (a refused
connection), within `retries` and `retry_deadline`; with `retry_idempotent`, an idempotent
request that timed out waiting for its answer. Never a body that was streamed (over 64 KiB,
read from the client as it goes upstream): it cannot be sent twice. `max_body` refuses a
body before reading it when its length is known, else as it streams; `max_conns` makes a
request wait briefly for a slot, then answers 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.engine.conftest import (
    STEP_TIMEOUT,
    Proxy,
    RawResponse,
    StartProxy,
    StartRawBackend,
    closed_port,
    fetch,
    read_response,
    record,
)
from tests.engine.test_upstream_health import StartServer, lb_config, server_factory
from tests.waiting import wait_for

#: A body this large is streamed (homeproxy reads up to 64 KiB whole first, to be able to send it again).
BIG = 256 * 1024


@pytest.fixture
async def servers() -> AsyncIterator[StartServer]:
    async with server_factory() as start:
        yield start


def refused() -> str:
    """An upstream URL whose port refuses connections."""
    return f"http://127.0.0.1:{closed_port()}"


async def send(
    session: aiohttp.ClientSession, p: Proxy, path: str = "/", *, method: str = "GET", body: bytes | None = None
) -> tuple[int, str]:
    """(status, body) of one request to `lb.lan`."""
    got = await fetch(session, p, path, host="lb.lan", method=method, data=body)
    return got.status, got.body.decode("utf-8", "replace")


# --- what may be sent to the next upstream ---------------------------------------------------


@pytest.mark.parametrize(("method", "retry_idempotent"), [("POST", False), ("PUT", True)])
async def test_a_streamed_body_is_never_sent_again_to_another_upstream(
    proxy: StartProxy,
    raw_backend: StartRawBackend,
    servers: StartServer,
    session: aiohttp.ClientSession,
    method: str,
    retry_idempotent: bool,
) -> None:
    got_part: list[int] = []

    async def reset_after_part(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the request's head and 16 KiB of its body, then reset the connection."""
        await reader.readuntil(b"\r\n\r\n")
        got_part.append(len(await reader.readexactly(16 * 1024)))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    resetter = await raw_backend(reset_after_part)
    second = await servers("second")
    p = await proxy(lb_config([resetter.url, second.url], balance="first", retry_idempotent=retry_idempotent))
    events = record(p)

    status, _ = await send(session, p, "/upload", method=method, body=bytes(range(256)) * (BIG // 256))

    assert status == 502
    assert got_part == [16 * 1024]  # the first upstream got part of it, once
    assert second.served == []  # and the second never saw the request
    (event,) = await events.wait(1)
    assert event.upstream == resetter.url


async def test_a_small_post_to_a_refused_upstream_goes_to_the_next(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    second = await servers("second")
    p = await proxy(lb_config([refused(), second.url], balance="first"))
    body = b"x" * (60 * 1024)  # under 64 KiB: in hand, and nothing was sent to the refusing one

    got = await fetch(session, p, "/small", host="lb.lan", method="POST", data=body)

    assert (got.status, got.body) == (200, b"second")
    assert got.headers["X-Body-Length"] == str(len(body))
    assert second.served == ["/small"]


@pytest.mark.parametrize("size", [60 * 1024, BIG])
async def test_a_post_to_a_refused_upstream_goes_to_the_next_small_or_streamed(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession, size: int
) -> None:
    """A refused connection happens before anything is read from the client: even a body
    that would be streamed is still whole, and goes to the next."""
    second = await servers("second")
    p = await proxy(lb_config([refused(), refused(), second.url], balance="first"))

    got = await fetch(session, p, "/post", host="lb.lan", method="POST", data=b"y" * size)

    assert (got.status, got.body, got.headers["X-Body-Length"]) == (200, b"second", str(size))


@pytest.mark.parametrize(("retries", "refusing", "answer"), [(0, 1, 502), (1, 2, 502), (1, 1, 200), (2, 2, 200)])
async def test_retries_bound_how_many_upstreams_a_request_tries(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession, retries: int, refusing: int, answer: int
) -> None:
    last = await servers("last")
    ups = [refused() for _ in range(refusing)] + [last.url]
    p = await proxy(lb_config(ups, balance="first", retries=retries))
    events = record(p)

    status, body = await send(session, p, "/one")

    assert status == answer
    if answer == 502:
        assert last.served == []  # the next one was never tried
        (event,) = await events.wait(1)
        assert "upstream unreachable" in event.error, event.error
    else:
        assert (body, last.served) == ("last", ["/one"])


@pytest.mark.parametrize(
    ("retry_idempotent", "method", "answer"), [(True, "GET", 200), (False, "GET", 504), (True, "POST", 504)]
)
async def test_retry_idempotent_sends_a_request_that_timed_out_to_the_next(
    proxy: StartProxy,
    servers: StartServer,
    session: aiohttp.ClientSession,
    retry_idempotent: bool,
    method: str,
    answer: int,
) -> None:
    slow, second = await servers("slow"), await servers("second")
    second.holds = False
    config = lb_config(
        [slow.url, second.url], balance="first", header_timeout="300ms", retry_idempotent=retry_idempotent
    )
    p = await proxy(config)

    status, body = await send(session, p, "/hold", method=method, body=b"small" if method == "POST" else None)

    assert status == answer
    assert slow.served == ["/hold"]  # it was sent there first, and it hung past header_timeout
    if answer == 200:
        assert (body, second.served) == ("second", ["/hold"])
    else:
        assert second.served == []


async def test_retry_deadline_bounds_the_time_spent_on_retries(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    slow, second = await servers("slow"), await servers("second")
    second.holds = False
    ups = [slow.url, second.url]
    common = {"balance": "first", "header_timeout": "300ms", "retry_idempotent": True}
    p = await proxy(lb_config(ups, retry_deadline="200ms", **common))
    q = await proxy(lb_config(ups, retry_deadline="15s", **common))

    assert (await send(session, p, "/hold"))[0] == 504  # 300 ms spent on the first: no time for another
    assert second.served == []
    assert await send(session, q, "/hold") == (200, "second")
    assert slow.served == ["/hold", "/hold"]


# --- max_body ---------------------------------------------------------------------------


async def raw(p: Proxy, head: str, chunks: tuple[bytes, ...] = ()) -> RawResponse | None:
    """Send `head` then `chunks` on a new connection while reading the answer; None if the
    connection closed before a response came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)

    async def write() -> None:
        with contextlib.suppress(ConnectionError):  # homeproxy may close before taking it all
            writer.write(head.encode())
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()

    writing = asyncio.ensure_future(write())
    try:
        try:
            return await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
    finally:
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing
        writer.close()


async def test_max_body_refuses_a_content_length_over_it_before_reading_any(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    up = await servers("up")
    p = await proxy(lb_config([up.url], max_body="100KiB"))

    # Only the head is sent: the answer must not wait for the body.
    head = "POST /big HTTP/1.1\r\nHost: lb.lan\r\nContent-Length: 5000000\r\n\r\n"
    response = await raw(p, head)
    assert response is not None and response.status == 413
    # Nor with Expect: 100-continue (no 100 Continue first either).
    response = await raw(p, head.replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n"))
    assert response is not None and response.status == 413
    assert up.served == []

    got = await fetch(session, p, "/fits", host="lb.lan", method="POST", data=b"z" * (100 * 1024))
    assert (got.status, got.headers["X-Body-Length"]) == (200, str(100 * 1024))


async def test_max_body_stops_a_chunked_body_that_passes_it(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    up = await servers("up")
    p = await proxy(lb_config([up.url], max_body="100KiB"))
    events = record(p)
    chunk = b"c" * (32 * 1024)
    chunks = (*(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)), b"0\r\n\r\n")  # 256 KiB

    head = "POST /chunked HTTP/1.1\r\nHost: lb.lan\r\nTransfer-Encoding: chunked\r\n\r\n"
    response = await raw(p, head, chunks)

    assert response is None or response.status == 413
    (event,) = await events.wait(1)
    assert event.status == 413, (event.status, event.error)
    assert "max_body" in event.error
    # The upstream may have got the start of it, never all of it.
    await wait_for(lambda: p.engine.in_flight == 0 and not up.busy, description="the exchange over")
    assert up.bodies == []


# --- max_conns --------------------------------------------------------------------------


async def test_max_conns_queues_a_request_until_a_slot_is_free(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    up = await servers("up")
    p = await proxy(lb_config([{"url": up.url, "max_conns": 1}]))

    first = asyncio.ensure_future(send(session, p, "/hold-first"))
    await wait_for(lambda: up.holding == 1, description="the first request in flight")
    second = asyncio.ensure_future(send(session, p, "/second"))
    await wait_for(lambda: p.engine.in_flight == 2, description="the second request waiting")
    assert up.served == ["/hold-first"]  # the second waits in homeproxy, not at the upstream

    up.release.set()
    assert await asyncio.wait_for(first, STEP_TIMEOUT) == (200, "up")
    assert await asyncio.wait_for(second, STEP_TIMEOUT) == (200, "up")
    assert up.served == ["/hold-first", "/second"]
    assert up.most_at_once == 1


async def test_max_conns_answers_503_with_retry_after_when_no_slot_frees_in_time(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    up = await servers("up")
    p = await proxy(lb_config([{"url": up.url, "max_conns": 1}]))

    first = asyncio.ensure_future(send(session, p, "/hold-first"))
    await wait_for(lambda: up.holding == 1, description="the first request in flight")
    got = await fetch(session, p, "/second", host="lb.lan")  # the first is held past the 2 s queue wait

    assert got.status == 503
    assert got.headers.get("Retry-After") == "1"
    assert up.served == ["/hold-first"]
    up.release.set()
    assert await asyncio.wait_for(first, STEP_TIMEOUT) == (200, "up")


async def test_max_conns_holds_for_requests_that_arrive_together(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    up = await servers("up")
    p = await proxy(lb_config([{"url": up.url, "max_conns": 2}]))

    burst = [asyncio.ensure_future(send(session, p, f"/hold{k}")) for k in range(6)]
    await wait_for(lambda: p.engine.in_flight == 6, description="six requests in homeproxy")
    await wait_for(lambda: up.holding >= 2, description="two at the upstream")
    up.release.set()
    answers = await asyncio.wait_for(asyncio.gather(*burst), STEP_TIMEOUT)

    assert answers == [(200, "up")] * 6
    assert up.most_at_once == 2
