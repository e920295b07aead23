"""The express lane (`homeproxy/engine/express.py`) through the real engine, on real sockets.

The same requests go through the lane and through the ordinary path (the lane turned off on the
same engine: `HttpServer.express = None`), and the upstream and the client must receive the same
bytes. Then: the lane is what answers a plain GET (no task while it waits) and not the requests
it must leave alone; its hand-overs to the ordinary path (large and streamed bodies, a stale
pooled connection, an upstream that fails before its head, `header_timeout`, an overrun, bodiless
answers, passive health); its events; and a drain while a lane request waits.

The upstreams are raw asyncio servers (`Upstream`) that record each request's exact bytes and
answer by a script, so that every fault is on purpose and every byte is seen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from homeproxy.engine import RequestCompleted, express
from homeproxy.engine.h1.server import HttpServer
from tests.engine.conftest import (
    STEP_TIMEOUT,
    Proxy,
    RawResponse,
    StartProxy,
    StartRawBackend,
    make_config,
    read_response,
    record,
    site,
)
from tests.engine.recording import Parsed, Unframed, parse_one
from tests.waiting import wait_for

# --- upstreams ------------------------------------------------------------------------------

Action = bytes | float | str
"""What a scripted upstream does for a request: bytes are written, a float is a pause, "close"
closes the connection, "reset" resets it (RST), "hold" waits for `Upstream.release`."""
Script = Callable[[Parsed, int, int], list[Action]]
"""(the request, its index on its connection, its index among all the upstream received): actions."""


def answer(body: bytes, *, head_only: bool = False, status: str = "200 OK", extra: bytes = b"") -> bytes:
    """A response with hop-by-hop headers (the plain ones, and one its Connection names) and a few
    end-to-end ones; the head alone for a HEAD."""
    head = (
        b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\n"
        b"Keep-Alive: timeout=5, max=100\r\nX-Hop: secret\r\nX-App: yes\r\n"
        b"Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\n%sContent-Length: %d\r\n\r\n"
    ) % (status.encode(), extra, len(body))
    return head if head_only else head + body


def plain(name: str) -> Script:
    """Answers every request with its upstream's name as the body."""

    def script(request: Parsed, on_conn: int, n: int) -> list[Action]:
        return [answer(name.encode(), head_only=request.method == "HEAD")]

    return script


@dataclass
class Upstream:
    """A raw-socket upstream that records the exact bytes of every request and answers by `script`."""

    name: str
    script: Script
    log: list[tuple[str, bytes]]
    """Shared by the upstreams of a test: (which upstream, the request's bytes), in arrival order."""
    port: int = 0
    received: int = 0
    connections: int = 0
    closed: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buf = b""
        on_conn = 0
        try:
            while True:
                try:
                    request, end = parse_one(buf)
                except EOFError:
                    data = await reader.read(65536)
                    if not data:
                        return
                    buf += data
                    continue
                raw, buf = buf[:end], buf[end:]
                self.log.append((self.name, raw))
                n = self.received
                self.received += 1
                for action in self.script(request, on_conn, n):
                    if isinstance(action, bytes):
                        writer.write(action)
                        await writer.drain()
                    elif isinstance(action, float):
                        await asyncio.sleep(action)
                    elif action == "hold" and not await self._held(reader):
                        return  # the other side closed the connection while it was held
                    elif action == "close":
                        return
                    elif action == "reset":
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        writer.transport.abort()
                        return
                on_conn += 1
        except (ConnectionError, Unframed):
            pass
        finally:
            self.closed += 1
            writer.close()

    async def _held(self, reader: asyncio.StreamReader) -> bool:
        """Wait for `release`; False if the connection is closed first (anything sent is dropped)."""
        released = asyncio.ensure_future(self.release.wait())
        while not released.done():
            reading = asyncio.ensure_future(reader.read(65536))
            await asyncio.wait((released, reading), return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
            elif not reading.exception() and not reading.result():
                released.cancel()
                return False
        return True


StartUpstream = Callable[..., Awaitable[Upstream]]


@pytest.fixture
async def upstream(raw_backend: StartRawBackend) -> AsyncIterator[StartUpstream]:
    """Factory: `Upstream(name, script)` listening on 127.0.0.1:0; all share one log."""
    started: list[Upstream] = []
    log: list[tuple[str, bytes]] = []

    async def start(name: str, script: Script | None = None) -> Upstream:
        up = Upstream(name, script or plain(name), log)
        up.port = (await raw_backend(up)).port
        started.append(up)
        return up

    yield start
    for up in started:  # nothing stays held: the engine's drain and the servers' close are quick
        up.release.set()


# --- the client -------------------------------------------------------------------------------


@dataclass
class Seen:
    """One response as the client saw it (Date left out: it is the clock's)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def of(cls, raw: RawResponse) -> Seen:
        return cls(raw.status, raw.reason, [(k, v) for k, v in raw.headers if k.lower() != "date"], raw.body)


async def converse(port: int, requests: list[bytes], *, closes: bool = False) -> tuple[list[Seen], bool]:
    """Send `requests` one after the other on one connection, reading each response; and whether the
    proxy closed the connection after the last (looked for only with `closes`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        got = []
        for data in requests:
            writer.write(data)
            await writer.drain()
            raw = await read_response(reader, head_request=data.startswith(b"HEAD "))
            got.append(Seen.of(raw))
        ended = closes and await asyncio.wait_for(reader.read(), STEP_TIMEOUT) == b""
        return got, ended
    finally:
        writer.close()


async def get(port: int, path: str = "/", host: str = "app.lan", method: str = "GET", **headers: str) -> Seen:
    lines = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    data = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{lines}\r\n".encode()
    (seen,), _ = await converse(port, [data])
    return seen


def server_of(p: Proxy) -> HttpServer:
    http = p.engine._http
    assert http is not None
    return http


@pytest.fixture(autouse=True)
def _lane_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lane is on in these engines whatever HOMEPROXY_EXPRESS says (the flag is read at start)."""
    monkeypatch.setattr(express, "ENABLED", True)


# --- 1. the same bytes both ways ------------------------------------------------------------------


def req(target: str, host: str = "app.lan", *lines: str, version: str = "1.1", method: str = "GET") -> bytes:
    head = f"{method} {target} HTTP/{version}\r\nHost: {host}\r\n" + "".join(f"{line}\r\n" for line in lines)
    return (head + "\r\n").encode("latin-1")


#: Conversations (requests on one client connection) and whether the proxy must close it after them.
CORPUS: list[tuple[str, list[bytes], bool]] = [
    ("plain", [req("/")], False),
    (
        "query, cookies, repeated headers",
        [
            req(
                "/a/b?x=1&y=%20z&y=2",
                "app.lan",
                "Accept: text/html",
                "Accept: */*",
                "User-Agent: test/1.0",
                "Cookie: sid=1; theme=dark",
                "Cookie: other=2",
            )
        ],
        False,
    ),
    ("head", [req("/h?q", method="HEAD")], False),
    (
        "connection-named headers",
        [
            req(
                "/c",
                "app.lan",
                "Connection: keep-alive, X-Secret, Foo",
                "X-Secret: 1",
                "Foo: bar",
                "Keep-Alive: 300",
                "TE: trailers",
                "Proxy-Authorization: Basic eDp5",
                "X-Kept: yes",
            )
        ],
        False,
    ),
    (
        "forwarding headers from an untrusted client",
        [
            req(
                "/xff",
                "app.lan",
                "X-Forwarded-For: 1.2.3.4, 5.6.7.8",
                "X-Real-IP: 9.9.9.9",
                "X-Forwarded-Host: evil.example",
                "X-Forwarded-Proto: https",
                "X-Forwarded-Port: 1",
                "Forwarded: for=1.2.3.4",
            )
        ],
        False,
    ),
    ("http/1.0, closes", [req("/old?v=1", version="1.0")], True),
    ("http/1.0 keep-alive", [req("/k1", "app.lan", "Connection: keep-alive", version="1.0")] * 2, False),
    ("keep-alive then close", [req("/one"), req("/two?z", "app.lan", "Connection: close")], True),
    ("strip_prefix", [req("/api/items?id=3"), req("/api", method="HEAD")], False),
    ("rewrite", [req("/v1/x/y?q=1"), req("/v1/")], False),
    ("host case and port", [req("/case", "App.LAN"), req("/port", "app.lan:8080")], False),
    ("absolute form", [req("http://app.lan/abs?q=1", "app.lan")], False),
    ("preserve_host off", [req("/p?1", "plain.lan", "Cookie: c=1"), req("/p", "plain.lan", method="HEAD")], False),
    ("preserve_host off, close", [req("/p2", "plain.lan", "Connection: close")], True),
]


async def test_the_lane_and_the_ordinary_path_send_and_answer_the_same_bytes(
    proxy: StartProxy, upstream: StartUpstream
) -> None:
    a, b, r, s = await upstream("a"), await upstream("b"), await upstream("r"), await upstream("s")
    routes = [
        {"path": "/api/", "upstreams": [r.url], "strip_prefix": True},
        {"path": "/v1/", "upstreams": [r.url], "rewrite": "/new/"},
    ]
    p = await proxy(
        make_config(
            site("app", ["app.lan"], [a.url, b.url], routes=routes),
            site("plain", ["plain.lan"], [s.url], preserve_host=False),
        )
    )
    http = server_of(p)
    lane = http.express
    assert lane is not None
    log = a.log

    async def run(on: bool) -> tuple[list[Seen], bool, list[tuple[str, bytes]]]:
        http.express = lane if on else None  # read by the engine's thread as each request starts
        start = len(log)
        seen, ended = await converse(p.port, requests, closes=closes)
        return seen, ended, log[start:]

    for what, requests, closes in CORPUS:
        # Each way twice: round robin over two upstreams gives the same upstream to the i-th of
        # each; the first run of the lane may find no pooled connection, the second does.
        fast = [await run(True), await run(True)]
        slow = [await run(False), await run(False)]
        for k in range(2):
            assert fast[k][2] == slow[k][2], f"{what}: the upstream received other bytes"
            assert fast[k][0] == slow[k][0], f"{what}: the client received another answer"
            assert fast[k][1] == slow[k][1] == closes, f"{what}: the connection's end"
            assert len(fast[k][2]) == len(requests), what
        for seen in fast[1][0]:
            assert seen.status == 200, (what, seen)
            names = {k.lower() for k, _ in seen.headers}
            assert not names & {"x-hop", "keep-alive"}, (what, seen.headers)  # hop-by-hop: not passed on
    assert {name for name, _ in log} == {"a", "b", "r", "s"}
    http.express = lane


async def test_the_flag_read_at_start_turns_the_lane_off(
    proxy: StartProxy, upstream: StartUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = await upstream("a")
    monkeypatch.setattr(express, "ENABLED", False)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    assert server_of(p).express is None
    assert (await get(p.port)).body == b"a"


# --- 2. which requests the lane takes ---------------------------------------------------------------


def held_after_first(name: str) -> Script:
    """Answers at once the first request it gets (the one that warms the pool), then holds each."""

    def script(request: Parsed, on_conn: int, n: int) -> list[Action]:
        if request.get("Upgrade") == "websocket":  # the handshake, and nothing after it
            return ["hold", SWITCHED, "hold"]
        return [*(["hold"] if n else []), answer(name.encode(), head_only=request.method == "HEAD")]

    return script


async def test_a_plain_get_is_answered_from_callbacks_without_a_task(
    proxy: StartProxy, upstream: StartUpstream
) -> None:
    up = await upstream("a", held_after_first("a"))
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    http = server_of(p)
    assert (await get(p.port, "/warm")).body == b"a"  # the pool now holds a connection to it

    pending = asyncio.ensure_future(get(p.port, "/held?x=1"))
    await wait_for(lambda: up.received == 2, description="the held request at the upstream")
    assert http.express_calls == 1
    assert not http.tasks
    assert p.engine.in_flight == 1  # a lane request counts as in flight
    up.release.set()
    seen = await asyncio.wait_for(pending, STEP_TIMEOUT)
    assert (seen.status, seen.body) == (200, b"a")
    await wait_for(lambda: http.express_calls == 0 and p.engine.in_flight == 0, description="the lane idle")
    assert up.connections == 1  # the pooled connection carried it


WS_HEADERS = (
    "Connection: Upgrade",
    "Upgrade: websocket",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
)

#: The upstream's side of the handshake for `WS_HEADERS`' key (RFC 6455 section 1.3's example).
SWITCHED = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)

NOT_THE_LANES: list[tuple[str, dict[str, Any], bytes]] = [
    ("post with a body", {}, b"POST /held HTTP/1.1\r\nHost: app.lan\r\nContent-Length: 3\r\n\r\nabc"),
    ("range", {}, req("/held", "app.lan", "Range: bytes=0-1")),
    ("via", {}, req("/held", "app.lan", "Via: 1.1 elsewhere")),
    ("websocket upgrade", {}, req("/held", "app.lan", *WS_HEADERS)),
    ("cache", {"cache": True}, req("/held")),
    ("compression", {"compression": True}, req("/held", "app.lan", "Accept-Encoding: gzip")),
    ("headers", {"headers": {"security": True}}, req("/held")),
]


@pytest.mark.parametrize(("what", "options", "data"), NOT_THE_LANES, ids=[w for w, _, _ in NOT_THE_LANES])
async def test_what_the_lane_leaves_to_the_ordinary_path_is_answered_there(
    proxy: StartProxy, upstream: StartUpstream, what: str, options: dict[str, Any], data: bytes
) -> None:
    up = await upstream("a", held_after_first("a"))
    p = await proxy(make_config(site("app", ["app.lan"], [up.url], **options)))
    http = server_of(p)
    assert http.express is not None
    assert (await get(p.port, "/warm")).body == b"a"

    pending = asyncio.ensure_future(converse(p.port, [data]))
    await wait_for(lambda: up.received == 2, description="the held request at the upstream")
    assert http.express_calls == 0, what
    assert len(http.tasks) == 1, what
    up.release.set()
    (seen,), _ = await asyncio.wait_for(pending, STEP_TIMEOUT)
    if what == "websocket upgrade":
        assert seen.status == 101, (what, seen)
    else:
        assert (seen.status, seen.body) == (200, b"a"), (what, seen)
    sent = up.log[-1][1]
    assert sent.split(b"\r\n", 1)[0] == data.split(b"\r\n", 1)[0]  # the same request line went up
    if what == "post with a body":
        assert sent.endswith(b"\r\n\r\nabc")


# --- 3. hand-overs ------------------------------------------------------------------------------

LARGE = bytes(range(256)) * 400  # 100 KiB: more than the lane writes in one piece
CHUNKS = [b"x" * 30000, b"y" * 40000, b"z" * 10]


def shaped(request: Parsed, on_conn: int, n: int) -> list[Action]:
    """Answers by path: large, chunked, a small body in a second write, close-delimited; else plain."""
    path = request.target.split("?")[0]
    if path == "/large":
        return [answer(LARGE)]
    if path == "/chunked":
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-App: yes\r\n\r\n"
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in CHUNKS) + b"0\r\n\r\n"
        return [head, body[:5000], 0.05, body[5000:]]
    if path == "/split":
        whole = answer(b"split body")
        return [whole[:-4], 0.1, whole[-4:]]
    if path == "/eof":
        return [b"HTTP/1.1 200 OK\r\nX-App: yes\r\n\r\nuntil the end", "close"]
    return [answer(b"plain", head_only=request.method == "HEAD")]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/large", LARGE), ("/chunked", b"".join(CHUNKS)), ("/split", b"split body"), ("/eof", b"until the end")],
)
async def test_answers_the_lane_hands_over_arrive_whole(
    proxy: StartProxy, upstream: StartUpstream, path: str, body: bytes
) -> None:
    up = await upstream("a", shaped)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    http = server_of(p)
    lane = http.express
    results = []
    for on in (True, False):
        http.express = lane if on else None
        # On one client connection: warm the pool, the answer handed over, then one after it.
        seen, _ = await converse(p.port, [req("/warm"), req(path), req("/after")])
        assert [s.status for s in seen] == [200, 200, 200]
        assert seen[1].body == body
        assert seen[2].body == b"plain"
        results.append(seen)
    assert results[0] == results[1]
    assert len(up.log) == 6


def closes_after_answering(request: Parsed, on_conn: int, n: int) -> list[Action]:
    return [answer(b"ok"), "close"]  # no Connection: close said


def drops_the_second(request: Parsed, on_conn: int, n: int) -> list[Action]:
    """A pooled connection the upstream gave up on: the second request on it is met with a close."""
    return [answer(b"ok")] if on_conn == 0 else ["close"]


@pytest.mark.parametrize("script", [closes_after_answering, drops_the_second])
async def test_a_get_on_a_stale_pooled_connection_is_sent_again_on_a_fresh_one(
    proxy: StartProxy, upstream: StartUpstream, script: Script
) -> None:
    up = await upstream("a", script)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    recorder = record(p)
    for k in range(4):
        seen = await get(p.port, f"/r{k}")
        assert (seen.status, seen.body) == (200, b"ok"), k
    events = await recorder.wait(4)
    assert [e.status for e in events] == [200] * 4
    assert all(e.error == "" for e in events)
    if script is drops_the_second:
        # Each request after the first went out twice (the pooled connection, then a fresh one),
        # byte for byte the same.
        targets = [raw.split(b"\r\n", 1)[0] for _, raw in up.log]
        assert targets == [b"GET /r0 HTTP/1.1"] + [b"GET /r%d HTTP/1.1" % k for k in (1, 2, 3) for _ in (0, 1)]
        assert up.log[1][1] == up.log[2][1]
        assert up.connections == 4


def answers_once(name: str, then: str) -> Script:
    """Answers the first request it ever gets, then `then` ("close" or "reset") for every other."""

    def script(request: Parsed, on_conn: int, n: int) -> list[Action]:
        return [answer(name.encode())] if n == 0 else [then]

    return script


@pytest.mark.parametrize("then", ["close", "reset"])
@pytest.mark.parametrize("on", [True, False], ids=["lane", "ordinary"])
async def test_an_upstream_that_fails_before_its_head_sends_the_get_to_the_other(
    proxy: StartProxy, upstream: StartUpstream, then: str, on: bool
) -> None:
    a, b = await upstream("a"), await upstream("b", answers_once("b", then))
    p = await proxy(make_config(site("app", ["app.lan"], [a.url, b.url], retry_idempotent=True)))
    http = server_of(p)
    if not on:
        http.express = None
    recorder = record(p)
    first = [(await get(p.port, f"/w{k}")).body for k in range(2)]
    assert sorted(first) == [b"a", b"b"]  # each has a pooled connection now
    for k in range(4):
        seen = await get(p.port, f"/r{k}")
        assert (seen.status, seen.body) == (200, b"a"), k
    assert b.received >= 2  # b was tried (on its pooled connection, then a fresh one), and failed
    events = await recorder.wait(6)
    assert all(e.status == 200 and e.upstream == a.url for e in events[2:])


@pytest.mark.parametrize("then", ["close", "reset"])
@pytest.mark.parametrize("on", [True, False], ids=["lane", "ordinary"])
async def test_one_upstream_that_fails_before_its_head_is_a_502(
    proxy: StartProxy, upstream: StartUpstream, then: str, on: bool
) -> None:
    up = await upstream("a", answers_once("a", then))
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    if not on:
        server_of(p).express = None
    recorder = record(p)
    assert (await get(p.port, "/warm")).status == 200
    seen = await get(p.port, "/broken")
    assert seen.status == 502
    (_, event) = await recorder.wait(2)
    assert (event.status, event.path, event.upstream) == (502, "/broken", up.url)
    assert event.error.startswith("upstream failed"), event.error


@pytest.mark.parametrize("on", [True, False], ids=["lane", "ordinary"])
async def test_an_upstream_that_never_answers_is_a_504_after_header_timeout(
    proxy: StartProxy, upstream: StartUpstream, on: bool
) -> None:
    up = await upstream("a", held_after_first("a"))
    p = await proxy(make_config(site("app", ["app.lan"], [up.url], header_timeout="300ms")))
    if not on:
        server_of(p).express = None
    recorder = record(p)
    assert (await get(p.port, "/warm")).status == 200
    began = time.monotonic()
    seen = await get(p.port, "/never")
    took = time.monotonic() - began
    assert seen.status == 504
    assert 0.25 <= took < 10.0, took
    (_, event) = await recorder.wait(2)
    assert event.status == 504
    assert event.error == "upstream timed out before answering"
    await wait_for(lambda: up.closed >= 1, description="the timed-out connection closed")


def overruns_the_second(request: Parsed, on_conn: int, n: int) -> list[Action]:
    body = answer(b"hello")
    return [body + (b"EXTRA BYTES" if n == 1 else b"")]


@pytest.mark.parametrize("on", [True, False], ids=["lane", "ordinary"])
async def test_more_bytes_than_the_content_length_is_a_502_and_the_connection_is_not_reused(
    proxy: StartProxy, upstream: StartUpstream, on: bool
) -> None:
    up = await upstream("a", overruns_the_second)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    if not on:
        server_of(p).express = None
    recorder = record(p)
    assert (await get(p.port, "/warm")).body == b"hello"
    seen = await get(p.port, "/overrun")
    assert seen.status == 502
    assert b"hello" not in seen.body
    await wait_for(lambda: up.closed == 1, description="the overrun connection closed")
    after = await get(p.port, "/after")
    assert (after.status, after.body) == (200, b"hello")
    assert up.connections == 2  # not the overrun one
    events = await recorder.wait(3)
    assert events[1].status == 502
    assert "more bytes than its response's framing said" in events[1].error, events[1].error


def bodiless(request: Parsed, on_conn: int, n: int) -> list[Action]:
    path = request.target
    if path == "/304":
        return [
            b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nConnection: keep-alive\r\nCache-Control: max-age=9\r\n\r\n'
        ]
    if path == "/204":
        return [b"HTTP/1.1 204 No Content\r\nX-App: yes\r\n\r\n"]
    return [answer(b"0123456789", head_only=request.method == "HEAD")]


@pytest.mark.parametrize("on", [True, False], ids=["lane", "ordinary"])
async def test_304_204_and_head_answers_pass_with_no_body(proxy: StartProxy, upstream: StartUpstream, on: bool) -> None:
    up = await upstream("a", bodiless)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    if not on:
        server_of(p).express = None
    requests = [
        req("/warm"),
        req("/304", "app.lan", 'If-None-Match: "v1"'),
        req("/204"),
        req("/head", method="HEAD"),
        req("/last"),
    ]
    seen, _ = await converse(p.port, requests)
    assert [s.status for s in seen] == [200, 304, 204, 200, 200]
    assert [s.body for s in seen] == [b"0123456789", b"", b"", b"", b"0123456789"]  # nothing stray in between
    assert ("ETag", '"v1"') in seen[1].headers
    assert ("Content-Length", "10") in seen[3].headers
    # The 304 and the 204 left the pooled connection good; a HEAD answer that declared a length
    # is not trusted for another request (`H1Connection.on_headers_complete`).
    assert up.connections == 2
    assert [raw.split(b" ", 2)[1] for _, raw in up.log] == [b"/warm", b"/304", b"/204", b"/head", b"/last"]


def fails_after_first(request: Parsed, on_conn: int, n: int) -> list[Action]:
    return [answer(b"ok")] if n == 0 else [answer(b"bad gateway", status="502 Bad Gateway")]


@pytest.mark.parametrize("on", [True, False], ids=["lane", "ordinary"])
async def test_passive_health_counts_a_502_the_upstream_answered(
    proxy: StartProxy, upstream: StartUpstream, on: bool
) -> None:
    up = await upstream("a", fails_after_first)
    passive = {"fails": 1, "window": "30s", "cooldown": "30s", "status_5xx": True}
    p = await proxy(make_config(site("app", ["app.lan"], [up.url], passive_health=passive)))
    if not on:
        server_of(p).express = None
    assert (await get(p.port, "/warm")).status == 200
    seen = await get(p.port, "/bad")
    assert (seen.status, seen.body) == (502, b"bad gateway")  # the upstream's own answer, passed on
    (status,) = p.engine.upstream_health()
    assert not status.up
    assert "status 502" in status.reason, status.reason
    assert (await get(p.port, "/later")).status == 503  # every upstream is down now
    assert up.received == 2


# --- 4. events ----------------------------------------------------------------------------------


def fields(e: RequestCompleted) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(e).items() if k not in ("time", "duration")}


async def test_each_lane_request_publishes_one_event_as_the_ordinary_path_does(
    proxy: StartProxy, upstream: StartUpstream
) -> None:
    up = await upstream("a")
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    http = server_of(p)
    lane = http.express
    recorder = record(p)
    requests = [req("/e?q=1"), req("/e?q=1", "app.lan", "Cookie: x=1"), req("/head", method="HEAD")]
    await converse(p.port, [req("/warm")])
    await recorder.wait(1)
    got = {}
    for on in (True, False):
        http.express = lane if on else None
        start = len(recorder.poll())
        await converse(p.port, requests)
        await recorder.wait(start + len(requests))
        await asyncio.sleep(0.2)  # and no more than one each
        got[on] = recorder.poll()[start:]
        assert len(got[on]) == len(requests)
    assert [fields(e) for e in got[True]] == [fields(e) for e in got[False]]
    first = got[True][0]
    assert (first.site, first.upstream, first.status, first.bytes_out) == ("app", up.url, 200, 1)
    assert (first.method, first.path, first.client, first.error) == ("GET", "/e?q=1", "127.0.0.1", "")
    assert got[True][2].method == "HEAD"


# --- 5. drain -----------------------------------------------------------------------------------


def slow_after_first(request: Parsed, on_conn: int, n: int) -> list[Action]:
    return [*([0.5] if n else []), answer(b"slow")]


async def test_a_lane_request_waiting_at_stop_is_drained(proxy: StartProxy, upstream: StartUpstream) -> None:
    up = await upstream("a", slow_after_first)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url]), drain_timeout="10s"))
    http = server_of(p)
    assert (await get(p.port, "/warm")).status == 200
    pending = asyncio.ensure_future(get(p.port, "/slow"))
    await wait_for(lambda: up.received == 2, description="the slow request at the upstream")
    assert (http.express_calls, len(http.tasks), p.engine.in_flight) == (1, 0, 1)
    began = time.monotonic()
    await asyncio.to_thread(p.engine.stop)
    assert time.monotonic() - began < 9.0  # it waited for the request, not for the whole drain_timeout
    seen = await asyncio.wait_for(pending, STEP_TIMEOUT)
    assert (seen.status, seen.body) == (200, b"slow")


@pytest.mark.parametrize("on", [True, False], ids=["lane", "ordinary"])
async def test_a_request_still_waiting_when_the_drain_ends_is_cut_cleanly(
    proxy: StartProxy, upstream: StartUpstream, on: bool
) -> None:
    up = await upstream("a", held_after_first("a"))
    p = await proxy(make_config(site("app", ["app.lan"], [up.url]), drain_timeout="300ms"))
    if not on:
        server_of(p).express = None
    http = server_of(p)
    recorder = record(p)
    assert (await get(p.port, "/warm")).status == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(req("/forever"))
        await writer.drain()
        await wait_for(lambda: up.received == 2, description="the held request at the upstream")
        assert p.engine.in_flight == 1
        began = time.monotonic()
        await asyncio.to_thread(p.engine.stop)
        assert time.monotonic() - began < 10.0
        assert await asyncio.wait_for(reader.read(), STEP_TIMEOUT) == b""  # cut: no answer
    finally:
        writer.close()
    # The cut request is over (as the ordinary path's cancelled task is), nothing is left open
    # towards the upstream, and the cut request has its event.
    assert (http.express_calls, len(http.tasks)) == (0, 0)
    await wait_for(lambda: up.closed == up.connections, timeout=5.0, description="the upstream connection closed")
    await wait_for(lambda: len(recorder.poll()) >= 2, timeout=3.0, description="the cut request's event")
    assert [e.path for e in recorder.events] == ["/warm", "/forever"]


# --- 6. a fault in the lane itself --------------------------------------------------------------


async def test_a_fault_in_the_lane_is_a_502_with_its_event_never_a_hang(
    proxy: StartProxy, upstream: StartUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug met while answering (injected here: the lane's own head check raises) must not leave
    the client waiting: it gets homeproxy's 502 page, the event names the error, and the next
    request is answered as usual."""
    up = await upstream("a")
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    recorder = record(p)
    await converse(p.port, [req("/warm")])  # a pooled connection: the next GET takes the lane
    await recorder.wait(1)

    def broken(*args: object) -> bool:
        raise RuntimeError("injected")

    monkeypatch.setattr(express, "_as_sent", broken)
    seen, _ = await asyncio.wait_for(converse(p.port, [req("/boom")]), 10)
    assert seen[0].status == 502
    await recorder.wait(2)
    event = recorder.poll()[1]
    assert (event.path, event.status, event.error) == ("/boom", 502, "internal error: RuntimeError")
    assert server_of(p).express_calls == 0
    monkeypatch.undo()
    seen, _ = await converse(p.port, [req("/after")])
    assert seen[0].status == 200


# --- 7. found in review -------------------------------------------------------------------------

BIG = 2_000_000


def big_after_first(request: Parsed, on_conn: int, n: int) -> list[Action]:
    if n == 0:
        return [answer(b"")]
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG
    return [0.5, head, *[x for _ in range(10) for x in (0.1, b"x" * (BIG // 10))]]


@pytest.mark.parametrize("on", [True, False], ids=["lane", "ordinary"])
async def test_a_large_answer_handed_over_at_stop_is_drained_whole(
    proxy: StartProxy, upstream: StartUpstream, on: bool
) -> None:
    """The lane hands a large body to a task; the drain must see that task (it once saw nothing
    in flight for a moment and cut the body short)."""
    up = await upstream("a", big_after_first)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url]), drain_timeout="10s"))
    if not on:
        server_of(p).express = None
    assert (await get(p.port, "/warm")).status == 200
    pending = asyncio.ensure_future(get(p.port, "/big"))
    await wait_for(lambda: up.received == 2, description="the big request at the upstream")
    await asyncio.to_thread(p.engine.stop)
    seen = await asyncio.wait_for(pending, STEP_TIMEOUT)
    assert (seen.status, len(seen.body)) == (200, BIG)


def names_date_and_server(request: Parsed, on_conn: int, n: int) -> list[Action]:
    return [
        b"HTTP/1.1 200 OK\r\nConnection: Date, Server\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
        b"Server: up\r\nContent-Length: 2\r\n\r\nhi"
    ]


async def test_a_date_and_server_the_upstream_names_in_connection_are_replaced_by_ours(
    proxy: StartProxy, upstream: StartUpstream
) -> None:
    up = await upstream("a", names_date_and_server)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    http = server_of(p)
    lane = http.express
    heads = {}
    for on in (True, False):
        http.express = lane if on else None
        seen, _ = await converse(p.port, [req("/warm"), req("/second")])
        heads[on] = seen[1].headers  # Date left out (`Seen`)
    assert heads[True] == heads[False]
    assert ("Server", "homeproxy") in heads[True]
    http.express = lane  # and homeproxy's own Date, not the upstream's, on the lane
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    writer.write(req("/warm") + req("/third", "app.lan", "Connection: close"))
    raw = await asyncio.wait_for(reader.read(), STEP_TIMEOUT)
    writer.close()
    second = raw.split(b"\r\n\r\nhi", 1)[1]
    assert b"\r\nDate: " in second and b"2001" not in second


def trailer_then_plain(request: Parsed, on_conn: int, n: int) -> list[Action]:
    if request.target == "/chunked":
        return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Leak: trailer\r\n\r\n"]
    return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]


@pytest.mark.parametrize("on", [True, False], ids=["lane", "ordinary"])
async def test_a_chunked_answers_trailer_never_becomes_the_next_answers_header(
    proxy: StartProxy, upstream: StartUpstream, on: bool
) -> None:
    up = await upstream("a", trailer_then_plain)
    p = await proxy(make_config(site("app", ["app.lan"], [up.url])))
    if not on:
        server_of(p).express = None
    first = await get(p.port, "/chunked")
    second = await get(p.port, "/other")  # on the same pooled upstream connection
    assert (first.status, first.body, second.status, second.body) == (200, b"ok", 200, b"ok")
    assert up.connections == 1
    assert not any(n.lower() == "x-leak" for n, _ in [*first.headers, *second.headers])
