"""The client-facing HTTP/1.1 server, adversarially: raw sockets in, a recording raw upstream behind.

The upstream here (`Recording`) keeps every byte the proxy sends it and decodes each request's
framing itself (Content-Length or chunked), so a test can say exactly what got through. What must
hold: a request whose framing is ambiguous is refused with a 400 on a closed connection and never
reaches the upstream; limits answer 414/431; keep-alive, pipelining, HEAD, 100-continue and
HTTP/1.0 are framed as RFC 9112 says; one stalled client blocks nobody else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.engine.conftest import (
    STEP_TIMEOUT,
    Backend,
    NamedEcho,
    Proxy,
    RawResponse,
    Seen,
    StartProxy,
    StartRawBackend,
    make_config,
    raw_request,
    read_head,
    read_response,
    record,
    site,
)

# --- a raw upstream that records what it receives ---------------------------------------


@dataclass
class Got:
    """One request as the upstream received it."""

    head: bytes  # request line and header block, byte-exact (through the blank line)
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes  # de-chunked when it came chunked
    framing: str  # "chunked", "length" or "none"

    def get(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None


def ok(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), b"".join(extra), body)


def says_path(got: Got) -> bytes:
    """The default answer: which target arrived (no body for HEAD, its length announced)."""
    body = b"path=" + got.target.encode("latin-1")
    if got.method == "HEAD":
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    return ok(body)


class Recording:
    """A raw upstream: records every byte on every connection, answers each request with `answer(got)`."""

    def __init__(self, answer: Callable[[Got], bytes] = says_path) -> None:
        self.answer = answer
        self.raw = bytearray()
        self.requests: list[Got] = []
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buf = bytearray()

        async def fill() -> None:
            data = await reader.read(65536)
            if not data:
                raise EOFError
            buf.extend(data)
            self.raw.extend(data)

        async def until(sep: bytes) -> bytes:
            while (i := buf.find(sep)) < 0:
                await fill()
            out = bytes(buf[: i + len(sep)])
            del buf[: i + len(sep)]
            return out

        async def exactly(n: int) -> bytes:
            while len(buf) < n:
                await fill()
            out = bytes(buf[:n])
            del buf[:n]
            return out

        try:
            while True:
                head = await until(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
                lowered = {k.lower(): v for k, v in headers}
                if lowered.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if "chunked" in lowered.get("transfer-encoding", "").lower():
                    body, framing = b"", "chunked"
                    while True:
                        size = int((await until(b"\r\n")).split(b";")[0], 16)
                        if size == 0:
                            while await until(b"\r\n") != b"\r\n":  # trailer fields, then the blank line
                                pass
                            break
                        chunk = await exactly(size + 2)
                        assert chunk.endswith(b"\r\n"), chunk[-10:]
                        body += chunk[:-2]
                elif "content-length" in lowered:
                    body, framing = await exactly(int(lowered["content-length"])), "length"
                else:
                    body, framing = b"", "none"
                got = Got(head, method, target, headers, body, framing)
                self.requests.append(got)
                writer.write(self.answer(got))
                await writer.drain()
        except (EOFError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def start(proxy: StartProxy, raw_backend: StartRawBackend, up: Recording) -> Proxy:
    backend: Backend = await raw_backend(up)
    return await proxy(make_config(site("s", ["s.lan"], [backend.url])))


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the proxy still sends until it closes the connection (a reset counts as closed)."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), STEP_TIMEOUT):
            data += chunk
    except ConnectionResetError:
        pass
    return data


async def exchange(port: int, data: bytes, *, head_request: bool = False) -> tuple[RawResponse, bytes]:
    """Send `data` on a new connection: the first response, and whatever follows it until the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        response = await read_response(reader, head_request=head_request)
        return response, await until_closed(reader)
    finally:
        writer.close()


async def still_serves(p: Proxy, up: Recording) -> None:
    """A clean request on a new connection is answered, and it is the only one the upstream ever saw."""
    before = len(up.requests)
    resp = await raw_request(p.port, b"GET /after HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n")
    assert (resp.status, resp.body) == (200, b"path=/after")
    assert [g.target for g in up.requests[before:]] == ["/after"]


# --- 1. ambiguous framing and malformed heads: 400, closed, nothing upstream ---------------

SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: s.lan\r\n\r\n"

REFUSED = {
    "content-length-and-chunked": (
        b"POST / HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLE
    ),
    "chunked-and-content-length": (
        b"POST / HTTP/1.1\r\nHost: s.lan\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLE
    ),
    "two-content-lengths": (
        b"POST / HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLE) + SMUGGLE
    ),
    "content-length-list": b"POST / HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 1, 2\r\n\r\nab",
    "xchunked": b"POST / HTTP/1.1\r\nHost: s.lan\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
    "chunked-not-last": b"POST / HTTP/1.1\r\nHost: s.lan\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "chunked-then-second-te-line": (
        b"POST / HTTP/1.1\r\nHost: s.lan\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n"
    ),
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: s.lan\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "space-before-colon-host": b"GET / HTTP/1.1\r\nHost : s.lan\r\n\r\n",
    "space-before-colon-te": (
        b"POST / HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    ),
    "obs-fold": b"GET / HTTP/1.1\r\nHost: s.lan\r\nX-Folded: a\r\n b\r\n\r\n",
    "obs-fold-te": (
        b"POST / HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"
    ),
    "nul-in-header-value": b"GET / HTTP/1.1\r\nHost: s.lan\r\nX-A: a\x00b\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", list(REFUSED.values()), ids=list(REFUSED))
async def test_ambiguous_request_is_a_400_on_a_closed_connection_and_never_forwarded(
    proxy: StartProxy, raw_backend: StartRawBackend, request_bytes: bytes
) -> None:
    up = Recording()
    p = await start(proxy, raw_backend, up)
    rec = record(p)

    resp, rest = await exchange(p.port, request_bytes)

    assert resp.status == 400
    assert rest == b""  # nothing after the 400 (no second answer to a smuggled request), then EOF
    ev = (await rec.wait(1))[0]
    assert ev.status == 400
    assert ev.error.startswith("malformed request: ")
    assert (up.connections, bytes(up.raw)) == (0, b"")
    await still_serves(p, up)
    assert b"smuggled" not in up.raw


async def test_http10_with_transfer_encoding_is_a_400(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    """RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing."""
    up = Recording()
    p = await start(proxy, raw_backend, up)

    resp, rest = await exchange(
        p.port, b"POST / HTTP/1.0\r\nHost: s.lan\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )

    assert (resp.status, rest) == (400, b"")
    assert bytes(up.raw) == b""


async def test_a_coding_before_chunked_is_refused_and_never_forwarded(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    """`gzip, chunked` is valid framing, but homeproxy would have to pass a coded body on untouched
    and trust the upstream to frame it the same way: it refuses any coding but `chunked` (400)."""
    up = Recording()
    p = await start(proxy, raw_backend, up)
    events = record(p)

    resp, rest = await exchange(
        p.port,
        b"POST /gz HTTP/1.1\r\nHost: s.lan\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )

    assert (resp.status, rest) == (400, b"")
    assert bytes(up.raw) == b""
    (ev,) = await events.wait(1)
    assert ev.error == "malformed request: transfer coding other than chunked"


async def test_bare_lf_is_refused_and_never_forwarded(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    up = Recording()
    p = await start(proxy, raw_backend, up)

    resp, rest = await exchange(p.port, b"GET /lf HTTP/1.1\nHost: s.lan\nConnection: close\n\n")

    assert (resp.status, rest) == (400, b"")
    assert bytes(up.raw) == b""


# --- 3. limits ----------------------------------------------------------------------------

LIMITS = {
    "target-20KiB": (b"GET /" + b"a" * 20 * 1024 + b" HTTP/1.1\r\nHost: s.lan\r\n\r\n", 414),
    "header-line-20KiB": (b"GET / HTTP/1.1\r\nHost: s.lan\r\nX-Long: " + b"a" * 20 * 1024 + b"\r\n\r\n", 431),
    "500-headers": (
        b"GET / HTTP/1.1\r\nHost: s.lan\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n",
        431,
    ),
}


@pytest.mark.parametrize(("request_bytes", "status"), list(LIMITS.values()), ids=list(LIMITS))
async def test_oversized_heads_get_414_or_431_and_the_engine_keeps_serving(
    proxy: StartProxy, raw_backend: StartRawBackend, request_bytes: bytes, status: int
) -> None:
    up = Recording()
    p = await start(proxy, raw_backend, up)
    rec = record(p)

    resp, _ = await exchange(p.port, request_bytes)

    assert resp.status == status
    assert (await rec.wait(1))[0].status == status
    assert bytes(up.raw) == b""
    await still_serves(p, up)


# --- 4. keep-alive, pipelining, closing ---------------------------------------------------


async def test_two_requests_on_one_connection(proxy: StartProxy, named_echo: NamedEcho) -> None:
    echo = await named_echo("echo")
    p = await proxy(make_config(site("s", ["s.lan"], [echo.url])))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        paths = []
        for path in (b"/one", b"/two"):
            writer.write(b"GET %s HTTP/1.1\r\nHost: s.lan\r\n\r\n" % path)
            resp = await read_response(reader)
            assert resp.status == 200
            paths.append(Seen.of(resp.body).path)
    finally:
        writer.close()
    assert paths == ["/one", "/two"]


async def test_pipelined_requests_are_answered_in_order(proxy: StartProxy, named_echo: NamedEcho) -> None:
    echo = await named_echo("echo")
    p = await proxy(make_config(site("s", ["s.lan"], [echo.url])))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(
            b"GET /a HTTP/1.1\r\nHost: s.lan\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 3\r\n\r\nxyz"
            b"GET /c HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        first, second, third = [await read_response(reader) for _ in range(3)]
        rest = await until_closed(reader)
    finally:
        writer.close()
    seen = [Seen.of(r.body) for r in (first, second, third)]
    assert [(s.method, s.path, s.body) for s in seen] == [("GET", "/a", ""), ("POST", "/b", "xyz"), ("GET", "/c", "")]
    assert rest == b""


async def test_http10_without_keep_alive_is_closed_after_the_response(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    up = Recording()
    p = await start(proxy, raw_backend, up)

    resp, rest = await exchange(p.port, b"GET /old HTTP/1.0\r\nHost: s.lan\r\n\r\n")

    assert (resp.status, resp.body, rest) == (200, b"path=/old", b"")


async def test_connection_close_is_answered_with_close_and_closed(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    up = Recording()
    p = await start(proxy, raw_backend, up)

    resp, rest = await exchange(p.port, b"GET /bye HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n")

    assert (resp.status, resp.body, rest) == (200, b"path=/bye", b"")
    assert [v.lower() for v in resp.all("Connection")] == ["close"]


# --- 5. request bodies ----------------------------------------------------------------------


async def test_chunked_request_body_reaches_the_upstream_intact(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    up = Recording(lambda got: ok(b"len=%d;" % len(got.body) + got.body))
    p = await start(proxy, raw_backend, up)
    parts = [b"hello", b" ", bytes(range(26)), b"\r\n0\r\n\r\n", b"x" * 70_000]
    chunked = b"".join(b"%X\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"

    resp, _ = await exchange(
        p.port,
        b"POST /up HTTP/1.1\r\nHost: s.lan\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked,
    )

    whole = b"".join(parts)
    [got] = up.requests
    assert got.body == whole
    assert got.framing in ("chunked", "length")
    if got.framing == "length":
        assert got.get("Transfer-Encoding") is None
    assert (resp.status, resp.body) == (200, b"len=%d;" % len(whole) + whole)


async def test_expect_100_continue_is_answered_before_the_body(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    up = Recording(lambda got: ok(b"got=" + got.body))
    p = await start(proxy, raw_backend, up)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(
            b"PUT /up HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 11\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP_TIMEOUT)
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(b"hello world")
        await writer.drain()
        final = await read_response(reader)
    finally:
        writer.close()
    assert (final.status, final.body) == (200, b"got=hello world")
    assert up.requests[0].body == b"hello world"


# --- 6. HEAD ------------------------------------------------------------------------------


async def test_head_has_no_body_and_the_connection_goes_on(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    up = Recording()
    p = await start(proxy, raw_backend, up)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"HEAD /h HTTP/1.1\r\nHost: s.lan\r\n\r\n")
        await writer.drain()
        head = await read_response(reader, head_request=True)
        writer.write(b"GET /g HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n")
        await writer.drain()
        # A stray body byte after the HEAD's head would garble this status line.
        status, _, _ = await read_head(reader)
        rest = await until_closed(reader)
    finally:
        writer.close()
    assert (head.status, head.get("Content-Length")) == (200, str(len(b"path=/h")))
    assert head.get("Transfer-Encoding") is None
    assert status == 200
    assert rest == b"path=/g"
    assert [(g.method, g.target) for g in up.requests] == [("HEAD", "/h"), ("GET", "/g")]


# --- 7. a streamed response without Content-Length -------------------------------------------

CHUNKS = [bytes(range(256)) * 256, b"!", b"tail" * 10_000]  # 64 KiB, 1 byte, 40 KB


def chunked_answer(got: Got) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in CHUNKS) + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + body


async def test_chunked_response_reaches_an_http11_client_framed(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    up = Recording(lambda got: chunked_answer(got) if got.target == "/stream" else says_path(got))
    p = await start(proxy, raw_backend, up)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET /stream HTTP/1.1\r\nHost: s.lan\r\n\r\n")
        await writer.drain()
        streamed = await read_response(reader)
        writer.write(b"GET /next HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n")
        await writer.drain()
        after = await read_response(reader)
    finally:
        writer.close()
    framing = (streamed.get("Transfer-Encoding"), streamed.get("Content-Length"))
    assert framing in (("chunked", None), (None, str(len(b"".join(CHUNKS))))), framing
    assert streamed.body == b"".join(CHUNKS)
    assert (after.status, after.body) == (200, b"path=/next")


async def test_chunked_response_reaches_an_http10_client_close_delimited(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    up = Recording(chunked_answer)
    p = await start(proxy, raw_backend, up)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET /stream HTTP/1.0\r\nHost: s.lan\r\n\r\n")
        await writer.drain()
        status, _, headers = await read_head(reader)
        rest = await until_closed(reader)
    finally:
        writer.close()
    names = {k.lower(): v for k, v in headers}
    assert status == 200
    assert "transfer-encoding" not in names  # HTTP/1.0 has no chunked coding
    assert names.get("content-length", str(len(rest))) == str(len(rest))
    assert rest == b"".join(CHUNKS)


# --- 8. a stalled client ----------------------------------------------------------------------


async def test_a_client_stalled_mid_head_does_not_block_others(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    up = Recording()
    p = await start(proxy, raw_backend, up)
    _, stalled = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        stalled.write(b"GET /stalled HTTP/1.1\r\nHost: s.l")  # and nothing more, connection kept open
        await stalled.drain()
        for i in range(2):
            resp = await asyncio.wait_for(
                raw_request(p.port, b"GET /other/%d HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n" % i),
                STEP_TIMEOUT,
            )
            assert (resp.status, resp.body) == (200, b"path=/other/%d" % i)
    finally:
        stalled.close()
    assert [g.target for g in up.requests] == ["/other/0", "/other/1"]


# --- 9. absolute-form targets --------------------------------------------------------------


async def test_absolute_form_is_routed_by_the_targets_authority(proxy: StartProxy, named_echo: NamedEcho) -> None:
    s, other = await named_echo("s"), await named_echo("other")
    p = await proxy(make_config(site("s", ["s.lan"], [s.url]), site("other", ["other.lan"], [other.url])))
    rec = record(p)

    resp = await raw_request(p.port, b"GET http://s.lan/x HTTP/1.1\r\nHost: other.lan\r\nConnection: close\r\n\r\n")

    assert resp.status == 200
    assert Seen.of(resp.body).name == "s"
    ev = (await rec.wait(1))[0]
    assert (ev.site, ev.host) == ("s", "s.lan")


async def test_absolute_form_goes_upstream_in_origin_form_with_the_targets_host(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    """RFC 9112 3.2.2: the received Host is ignored for the target's authority (preserve_host is on)."""
    up = Recording()
    p = await start(proxy, raw_backend, up)

    resp = await raw_request(p.port, b"GET http://s.lan/x?q=1 HTTP/1.1\r\nHost: other.lan\r\nConnection: close\r\n\r\n")

    assert resp.status == 200
    [got] = up.requests
    assert (got.target, got.get("Host")) == ("/x?q=1", "s.lan")
