"""Request smuggling through homeproxy, proven on the bytes an upstream receives.

The real engine on loopback, raw sockets for the client, and behind it `RecordingUpstream`
(tests/engine/recording.py), which keeps every byte of every connection and frames them with a
strict RFC 9112 parser. For each hostile request: the client gets a 4xx (or a closed
connection), and the upstream either saw nothing, or exactly one well-framed request (the one
homeproxy framed, nothing after it), or, when homeproxy refused a body it was already
streaming, the beginning of one request on a connection homeproxy then closed (never a
request completed on the client's behalf). A request hidden in the payload (`/smuggled`)
never reaches the upstream as a request, and the engine answers a clean request afterwards.

test_client_framing.py covers the first cases of the same kind (CL with TE, two CLs,
`xchunked`, obs-fold, NUL, bare LF, `gzip, chunked`, HTTP/1.0 with TE); these are the rest.
"""

from __future__ import annotations

import asyncio

import pytest

from homeproxy.engine.h1.limits import LINGER_TIME
from tests.engine.conftest import (
    Proxy,
    RawResponse,
    StartProxy,
    StartRawBackend,
    make_config,
    raw_request,
    read_response,
    record,
    site,
)
from tests.engine.recording import RecordingUpstream, Unframed, parse_one, parse_requests
from tests.waiting import wait_for

SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: s.lan\r\n\r\n"
"""A request hidden after (or inside) another: it must never reach the upstream as a request."""


async def start(proxy: StartProxy, raw_backend: StartRawBackend) -> tuple[Proxy, RecordingUpstream]:
    up = RecordingUpstream()
    backend = await raw_backend(up)
    return await proxy(make_config(site("s", ["s.lan"], [backend.url]))), up


CLOSE_BOUND = LINGER_TIME / 2
"""Ceiling for a close that must come at once (a lingering close would take LINGER_TIME)."""


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the proxy still sends until it closes the connection (a reset counts as closed),
    which must come within CLOSE_BOUND of the last byte."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), CLOSE_BOUND):
            data += chunk
    except ConnectionResetError:
        pass
    return data


async def exchange(port: int, data: bytes) -> tuple[RawResponse | None, bytes]:
    """Send `data` on a new connection: the first response (None if the proxy closed without one)
    and whatever followed it until the proxy closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        try:
            response = await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None, b""
        return response, await until_closed(reader)
    finally:
        writer.close()


async def still_serves(p: Proxy, up: RecordingUpstream) -> None:
    """A clean request on a new connection is answered, and the upstream sees it alone."""
    before = len(up.complete())
    resp = await raw_request(p.port, b"GET /after HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n\r\n")
    assert (resp.status, resp.body) == (200, b"ok")
    assert [r.target for r in up.complete()[before:]] == ["/after"]


def assert_never_completed(up: RecordingUpstream) -> None:
    """Every upstream connection holds at most the beginning of one request, and was closed: the
    upstream got no request it could act on, and no second one."""
    for raw in up.connections:
        data = bytes(raw)
        if not data:
            continue
        with pytest.raises(EOFError):  # incomplete: its end never came
            parse_one(data)
    assert up.closed == len(up.connections)
    assert b"smuggled" not in up.raw


# --- refused before anything goes upstream ------------------------------------------------

REFUSED = {
    # Transfer-Encoding spelled so that one parser might see chunked and another not
    "te-chunked-chunked": b"Transfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-two-lines-chunked": (
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ),
    "te-other-then-chunked-lines": b"Transfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-trailing-tab": b"Content-Length: 5\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
    "te-tab-inside": b"Content-Length: 5\r\nTransfer-Encoding: chu\tnked\r\n\r\n0\r\n\r\n",
    "te-tab-before-colon": b"Content-Length: 5\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
    "te-quoted": b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n',
    "te-identity-with-length": b"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
    "te-then-cl-same-request": b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    # Content-Length that is not one plain decimal number
    "cl-plus-sign": b"Content-Length: +5\r\n\r\nhello",
    "cl-negative": b"Content-Length: -5\r\n\r\nhello",
    "cl-hex": b"Content-Length: 0x5\r\n\r\nhello",
    "cl-overflow": b"Content-Length: 99999999999999999999999\r\n\r\nhello",
    "cl-space-inside": b"Content-Length: 1 0\r\n\r\nhelloworld",
    "cl-twice-same-value": b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-space-before-colon": b"Content-Length : 5\r\n\r\nhello",
    # chunk sizes a lenient parser reads differently
    "chunk-size-hex-overflow": b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    "chunk-size-negative": b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-0x": b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-leading-space": b"Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-trailing-space": b"Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    "chunk-size-empty": b"Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
    "chunk-size-bare-lf": b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    "chunk-data-longer-than-size": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
    "chunk-data-without-crlf": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n",
    # line endings and header syntax
    "bare-lf-in-headers": b"X-A: 1\nContent-Length: 5\r\n\r\nhello",
    "bare-cr-in-headers": b"X-A: 1\rContent-Length: 5\r\n\r\nhello",
    "cr-in-header-value": b"X-A: a\rb\r\nContent-Length: 5\r\n\r\nhello",
    "obs-fold-tab": b"X-Folded: a\r\n\tb\r\nContent-Length: 5\r\n\r\nhello",
    "obs-fold-content-length": b"Content-Length:\r\n 5\r\n\r\nhello",
    "space-before-colon-te-chunked": b"Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "space-in-header-name": b"Transfer Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
}


@pytest.mark.parametrize("rest", list(REFUSED.values()), ids=list(REFUSED))
async def test_ambiguous_framing_is_a_400_and_never_reaches_the_upstream(
    proxy: StartProxy, raw_backend: StartRawBackend, rest: bytes
) -> None:
    p, up = await start(proxy, raw_backend)
    events = record(p)

    resp, after = await exchange(p.port, b"POST /in HTTP/1.1\r\nHost: s.lan\r\n" + rest + SMUGGLE)

    assert resp is not None and resp.status == 400
    assert after == b""  # no answer to a second request: the connection closed after the 400
    [event] = await events.wait(1)
    assert (event.status, event.error.startswith("malformed request: ")) == (400, True), event.error
    assert up.raw == b""
    await still_serves(p, up)
    assert b"smuggled" not in up.raw


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /in HTTP/1.0\r\nHost: s.lan\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /in HTTP/1.0\r\nHost: s.lan\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLE,
    ],
    ids=["with-content-length", "keep-alive"],
)
async def test_http10_with_transfer_encoding_is_a_400(
    proxy: StartProxy, raw_backend: StartRawBackend, request_bytes: bytes
) -> None:
    """RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing."""
    p, up = await start(proxy, raw_backend)

    resp, after = await exchange(p.port, request_bytes)

    assert resp is not None and (resp.status, after) == (400, b"")
    assert up.raw == b""
    await still_serves(p, up)


# --- accepted: exactly one request upstream, framed by homeproxy -------------------------

INNER = b"GET /smuggled HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 0\r\n\r\n"
"""A request sent as body bytes: the upstream must see it as body, never as a request."""


def chunks(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


ACCEPTED = {
    "te-trailing-space": (b"Transfer-Encoding: chunked \r\n\r\n" + chunks(INNER), INNER),
    "te-leading-tab": (b"Transfer-Encoding:\tchunked\r\n\r\n" + chunks(INNER), INNER),
    "te-upper-case": (b"Transfer-Encoding: CHUNKED\r\n\r\n" + chunks(b"hello"), b"hello"),
    "chunk-extensions": (
        b'Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n1;q="a;b";x\r\n!\r\n0;last\r\n\r\n',
        b"hello!",
    ),
    "chunk-size-leading-zeros-upper-hex": (
        b"Transfer-Encoding: chunked\r\n\r\n000A\r\n0123456789\r\n0\r\n\r\n",
        b"0123456789",
    ),
    "chunked-with-trailer": (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", b"hello"),
    "chunk-data-holding-a-terminator": (b"Transfer-Encoding: chunked\r\n\r\n" + chunks(b"0\r\n\r\n" + INNER), None),
    "cl-leading-zeros": (b"Content-Length: 0005\r\n\r\nhello", b"hello"),
    "cl-body-holding-a-request": (b"Content-Length: %d\r\n\r\n" % len(INNER) + INNER, INNER),
    "connection-names-content-length": (
        b"Connection: Content-Length\r\nContent-Length: %d\r\n\r\n" % len(INNER) + INNER,
        INNER,
    ),
    "connection-names-transfer-encoding": (
        b"Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks(INNER),
        INNER,
    ),
}


@pytest.mark.parametrize(("rest", "body"), list(ACCEPTED.values()), ids=list(ACCEPTED))
async def test_valid_framing_reaches_the_upstream_as_exactly_one_request(
    proxy: StartProxy, raw_backend: StartRawBackend, rest: bytes, body: bytes | None
) -> None:
    p, up = await start(proxy, raw_backend)

    resp, after = await exchange(p.port, b"POST /in HTTP/1.1\r\nHost: s.lan\r\nConnection: close\r\n" + rest)

    assert resp is not None and (resp.status, resp.body, after) == (200, b"ok", b"")
    [got] = up.requests()  # strict framing, one request, no byte after it
    assert (got.method, got.target) == ("POST", "/in")
    if body is None:
        body = b"0\r\n\r\n" + INNER
    assert got.body == body
    if got.framing == "length":
        assert got.get("Content-Length") == str(len(body))
    else:
        assert got.framing == "chunked"


async def test_a_request_after_a_refused_one_is_never_answered_or_forwarded(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    """Pipelined: a good request, a malformed one, a good one. The first is answered, the second
    is a 400 and the connection closes: the third is never parsed, let alone forwarded."""
    p, up = await start(proxy, raw_backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(
            b"GET /first HTTP/1.1\r\nHost: s.lan\r\n\r\n"
            b"POST /bad HTTP/1.1\r\nHost: s.lan\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            + SMUGGLE
        )
        await writer.drain()
        first = await read_response(reader)
        second = await read_response(reader)
        after = await until_closed(reader)
    finally:
        writer.close()
    assert (first.status, second.status, after) == (200, 400, b"")
    assert [r.target for r in up.requests()] == ["/first"]
    await still_serves(p, up)


# --- refused while the body was already going upstream ------------------------------------


async def body_refused_mid_stream(p: Proxy, up: RecordingUpstream, later: bytes) -> RawResponse | None:
    """A chunked POST whose first chunk goes upstream before `later` arrives; the response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"POST /in HTTP/1.1\r\nHost: s.lan\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await wait_for(lambda: b"hello" in up.raw, description="the first chunk upstream")
        try:
            writer.write(later)
            await writer.drain()
        except ConnectionError:
            pass  # the proxy may close before the whole of a long `later` is written
        try:
            response = await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        assert await until_closed(reader) == b""
        return response
    finally:
        writer.close()


async def test_a_bad_chunk_after_a_streamed_one_aborts_the_upstream_request(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    """The body was half upstream when its next chunk size turned out bad: the upstream
    connection is closed with that request unfinished (homeproxy never ends it with a `0` chunk
    of its own), and the request after the bad chunk goes nowhere."""
    p, up = await start(proxy, raw_backend)

    resp = await body_refused_mid_stream(p, up, b"zz\r\n" + SMUGGLE)

    assert resp is None or resp.status == 400
    await wait_for(lambda: up.closed == len(up.connections), description="the upstream connection closed")
    assert_never_completed(up)
    await still_serves(p, up)


@pytest.mark.parametrize(
    "later",
    [b"5;" + b"e" * 1024 * 1024, b"0\r\nX-Trailer: " + b"t" * 1024 * 1024],
    ids=["chunk-extension-1MiB", "trailer-field-1MiB"],
)
async def test_an_endless_chunk_line_or_trailer_is_refused(
    proxy: StartProxy, raw_backend: StartRawBackend, later: bytes
) -> None:
    """Chunk extensions and trailer fields have no length limit in llhttp, and httptools keeps a
    trailer field in memory until it ends: past `MAX_CHUNK_LINE` (16 KiB) the body is refused
    (413), the upstream request is aborted and the connection closed."""
    p, up = await start(proxy, raw_backend)

    resp = await body_refused_mid_stream(p, up, later)

    assert resp is None or resp.status == 413
    await wait_for(lambda: up.closed == len(up.connections), description="the upstream connection closed")
    assert_never_completed(up)
    await still_serves(p, up)


async def test_the_recording_upstream_refuses_what_it_cannot_frame() -> None:
    """The strict parser behind these proofs: a second request, or a byte left over, is seen."""
    one = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    assert len(parse_requests(one)) == 1
    assert [r.target for r in parse_requests(one + SMUGGLE)] == ["/", "/smuggled"]
    for bad in (one + b"x", one.replace(b"\r\n", b"\n"), b"GET / HTTP/1.1\r\nA : b\r\n\r\n"):
        with pytest.raises(Unframed):
            parse_requests(bad)
