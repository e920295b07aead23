"""compression: gzip, brotli and zstd through the real engine, checked with the real decoders.

Backends are real aiohttp apps on loopback (raw sockets for upstreams that lie);
the client never decompresses by itself (`auto_decompress=False`), so every body
is decoded here with `zlib`, `brotli` and `zstandard` and compared byte for byte.
Each test that checks what is *not* compressed also checks a control that is,
so that it fails when the feature is missing.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import brotli  # type: ignore[import-untyped]
import pytest
import zstandard
from aiohttp import web
from multidict import CIMultiDict

from homeproxy.engine import upstream_exchange as upstream_module
from homeproxy.engine.features.compression import (
    MAX_CODINGS,
    ONE_SHOT,
    add_vary,
    negotiate,
    parse_accept_encoding,
    type_matcher,
)
from tests.engine.conftest import (
    STEP_TIMEOUT,
    Fetched,
    Handler,
    Proxy,
    RawCallback,
    StartBackend,
    StartProxy,
    StartRawBackend,
    fetch,
    make_config,
    raw_request,
    read_head,
    record,
    site,
)

HOST = "app.lan"
CODINGS = ("gzip", "br", "zstd")
MIB = 1024 * 1024


# --- bodies and decoders ------------------------------------------------------------------


@functools.cache
def json_doc(size: int) -> bytes:
    """A JSON document of at least `size` bytes, like a home-automation API's list (deterministic)."""
    rng = random.Random(size)
    rooms = ("kitchen", "hall", "office", "garage", "attic", "garden")
    items: list[dict[str, Any]] = []
    total = 0
    while total < size:
        i = len(items)
        item = {
            "id": i,
            "entity": f"sensor.{rng.choice(rooms)}_{i:05d}",
            "state": rng.choice(("on", "off", "unavailable")),
            "value": round(rng.uniform(0, 100), 2),
            "updated": f"2024-05-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
        }
        items.append(item)
        total += len(json.dumps(item)) + 2
    return json.dumps({"items": items}).encode()


def text(size: int) -> bytes:
    """`size` bytes of JSON-like text (a prefix of a bigger document)."""
    return json_doc(2 * MIB)[:size]


class Decoder:
    """A streaming decoder for one coding, from the coding's own library."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        if coding == "gzip":
            z = zlib.decompressobj(31)
            self._feed: Callable[[bytes], bytes] = z.decompress
            self._done: Callable[[], bool] = lambda: z.eof
        elif coding == "br":
            b = brotli.Decompressor()
            self._feed = b.process
            self._done = b.is_finished
        elif coding == "zstd":
            d = zstandard.ZstdDecompressor().decompressobj()
            self._feed = d.decompress
            self._done = lambda: d.eof
        else:
            raise AssertionError(f"no decoder for {coding!r}")

    def feed(self, data: bytes) -> bytes:
        return bytes(self._feed(data)) if data else b""

    @property
    def finished(self) -> bool:
        """The coding's end-of-stream marker has been seen (a truncated stream has none)."""
        return bool(self._done())


def decode(coding: str, data: bytes) -> bytes:
    """Decode a whole body; it must be complete."""
    decoder = Decoder(coding)
    out = decoder.feed(data)
    assert decoder.finished, f"the {coding} stream has no end"
    return out


# --- the backend --------------------------------------------------------------------------


def weak_match(header: str, etag: str) -> bool:
    """If-None-Match's weak comparison (RFC 9110 section 13.1.2)."""
    bare = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == bare for t in header.split(","))


async def shaped(request: web.BaseRequest) -> web.StreamResponse:
    """Answers as its query says: `size` (or `doc=N`: the whole `json_doc(N)`), `type` (media
    type), `status`, `h=Name:Value` (repeatable), `mode` (bytes: one body with its length;
    stream: written in 16 KiB pieces with a Content-Length; chunked: the same without one),
    `etag` (answers 304 to a matching If-None-Match); a `Range` header gets a 206 of the
    first 5000 bytes."""
    q = request.query
    size = int(q.get("size", "20000"))
    status = int(q.get("status", "200"))
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Content-Type"] = q.get("type", "application/json")
    for spec in q.getall("h", ()):
        name, _, value = spec.partition(":")
        headers.add(name.strip(), value.strip())
    body = json_doc(int(q["doc"])) if "doc" in q else text(size)
    if "etag" in q:
        headers["ETag"] = q["etag"]
        if weak_match(request.headers.get("If-None-Match", ""), q["etag"]):
            status = 304
    if "Range" in request.headers and status == 200:
        status, body = 206, body[:5000]
        headers["Content-Range"] = f"bytes 0-4999/{size}"
    if status in (204, 304):
        return web.Response(status=status, headers=headers)
    mode = q.get("mode", "bytes")
    if mode == "bytes":
        return web.Response(status=status, headers=headers, body=body)
    resp = web.StreamResponse(status=status, headers=headers)
    if mode == "stream":
        resp.content_length = len(body)
    await resp.prepare(request)
    for i in range(0, len(body), 16 * 1024):
        await resp.write(body[i : i + 16 * 1024])
    await resp.write_eof()
    return resp


def path(**params: Any) -> str:
    """`/?...` with the given query (lists repeat their key)."""
    return "/?" + urlencode(params, doseq=True)


def canned(head: bytes, body: bytes) -> RawCallback:
    """A raw upstream: read one request head, write `head` + `body`, close."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + body)
            await writer.drain()
        finally:
            writer.close()

    return answer


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that sends only the Accept-Encoding a test gives and never decodes by itself."""
    async with aiohttp.ClientSession(
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
        timeout=aiohttp.ClientTimeout(total=120),
    ) as s:
        yield s


StartApp = Callable[..., Awaitable[Proxy]]


@pytest.fixture
def app(proxy: StartProxy, backend: StartBackend) -> StartApp:
    """Factory: a backend (`shaped` unless given) behind a site with `compression` set as given."""

    async def start(compression: Any = True, handler: Handler = shaped, **options: Any) -> Proxy:
        up = await backend(handler)
        return await proxy(make_config(site("app", [HOST], [up.url], compression=compression, **options)))

    return start


async def get(
    client: aiohttp.ClientSession,
    p: Proxy,
    target: str = "/",
    *,
    ae: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Fetched:
    h = dict(headers or {})
    if ae is not None:
        h["Accept-Encoding"] = ae
    return await fetch(client, p, target, host=HOST, method=method, headers=h)


def vary(r: Fetched) -> list[str]:
    return [t.strip().lower() for v in r.headers.getall("Vary", ()) for t in v.split(",") if t.strip()]


def assert_compressed(r: Fetched, coding: str, original: bytes) -> None:
    assert r.status == 200, (r.status, r.body[:200])
    assert r.headers.get("Content-Encoding") == coding, dict(r.headers)
    assert "accept-encoding" in vary(r)
    assert len(r.body) < len(original)
    assert decode(coding, r.body) == original


def assert_identity(r: Fetched, original: bytes, *, status: int = 200) -> None:
    assert r.status == status, (r.status, r.body[:200])
    assert "Content-Encoding" not in r.headers, dict(r.headers)
    assert r.body == original


# --- Accept-Encoding, as a function -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "weights"),
    [
        ("gzip", {"gzip": 1000}),
        ("gzip;q=0.5, br;q=0.25", {"gzip": 500, "br": 250}),
        ("GZIP;Q=0.5", {"gzip": 500}),
        ("x-gzip;q=0.3", {"gzip": 300}),
        ("gzip;q=1.000, br;q=0.", {"gzip": 1000, "br": 0}),
        ("gzip;q=0.001", {"gzip": 1}),
        ("gzip;q=garbage, br", {"br": 1000}),
        ("gzip;q=1.5, gzip;q=0.4", {"gzip": 400}),
        ("gzip;q=-1", {}),
        ("gzip;q=0.0001", {}),
        ("gzip;q=", {}),
        ("gzip;level=9;q=0.2", {"gzip": 200}),
        ("gzip, gzip;q=0", {"gzip": 1000}),
        ("*;q=0, identity", {"*": 0, "identity": 1000}),
        (",, ,br ,,", {"br": 1000}),
        ("br gzip, gzip/1, \x00zstd", {}),
        ("", {}),
    ],
)
def test_weights_follow_the_qvalue_grammar(value: str, weights: dict[str, int]) -> None:
    assert parse_accept_encoding([value]) == weights


def test_only_the_first_codings_are_read() -> None:
    assert parse_accept_encoding(["x," * 500_000 + "gzip"]) == {"x": 1000}
    assert parse_accept_encoding(["gzip, " + "x, " * 500_000]) == {"gzip": 1000, "x": 1000}
    assert parse_accept_encoding(["a"] * (MAX_CODINGS - 1) + ["gzip"]) == {"a": 1000, "gzip": 1000}
    assert parse_accept_encoding(["a"] * MAX_CODINGS + ["gzip"]) == {"a": 1000}


@pytest.mark.parametrize(
    ("weights", "algorithms", "chosen"),
    [
        ({"gzip": 1000, "br": 1000}, ("br", "zstd", "gzip"), "br"),
        ({"gzip": 1000, "br": 1000}, ("gzip", "br"), "gzip"),
        ({"*": 500, "gzip": 1000}, ("br", "gzip"), "gzip"),
        ({"*": 500, "br": 0}, ("br", "zstd", "gzip"), "zstd"),
        ({"gzip": 500, "identity": 900}, ("gzip",), None),
        ({"gzip": 500, "identity": 500}, ("gzip",), "gzip"),
        ({"gzip": 500, "*": 900}, ("gzip",), None),
        ({"identity": 0}, ("gzip",), None),
        ({"br": 1000}, ("gzip", "zstd"), None),
        ({}, ("gzip",), None),
    ],
)
def test_negotiation(weights: dict[str, int], algorithms: tuple[str, ...], chosen: str | None) -> None:
    assert negotiate(weights, algorithms) == chosen


def test_type_patterns() -> None:
    matches = type_matcher(("text/*", "application/json", "application/*+xml", "*/x-custom"))
    assert matches("text/html") and matches("text/event-stream")
    assert matches("application/json") and matches("application/atom+xml")
    assert matches("image/x-custom") and matches("application/x-custom")
    assert not matches("application/jsonp") and not matches("application/xml")
    assert not matches("image/png") and not matches("") and not matches("textual/html")


def test_vary_is_merged_into_one_line() -> None:
    h: CIMultiDict[str] = CIMultiDict([("Vary", "Origin"), ("Vary", "Cookie")])
    add_vary(h)
    assert h.getall("Vary") == ["Origin, Cookie, Accept-Encoding"]
    for present in ("accept-encoding", "Origin, Accept-Encoding", "*"):
        h = CIMultiDict([("Vary", present)])
        add_vary(h)
        assert h.getall("Vary") == [present]


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
async def test_each_coding_round_trips_byte_exact(app: StartApp, client: aiohttp.ClientSession, coding: str) -> None:
    p = await app()
    rec = record(p)
    original = text(20000)

    r = await get(client, p, path(size=20000), ae=coding)

    assert_compressed(r, coding, original)
    # Small bodies still go out in one write, with the compressed length.
    assert r.headers["Content-Length"] == str(len(r.body))
    (event,) = await rec.wait(1)
    assert event.bytes_out == len(r.body)  # the access log counts what went on the wire


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("mode", ["stream", "chunked"])
async def test_a_large_json_body_round_trips(
    app: StartApp, client: aiohttp.ClientSession, coding: str, mode: str
) -> None:
    p = await app()
    doc = json_doc(3 * MIB // 2)
    assert len(doc) > MIB

    r = await get(client, p, path(doc=3 * MIB // 2, mode=mode), ae=coding)

    assert_compressed(r, coding, doc)
    assert "Content-Length" not in r.headers  # streamed: chunked, never buffered to learn the length
    assert json.loads(decode(coding, r.body)) == json.loads(doc)


@pytest.mark.parametrize("coding", CODINGS)
async def test_a_large_bytes_body_is_compressed_off_the_loop(
    app: StartApp, client: aiohttp.ClientSession, coding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Let the upstream hand over 1.5 MiB as bytes, as a future cache or page might.
    monkeypatch.setattr(upstream_module, "SMALL_BODY", 4 * MIB)
    threaded: list[Callable[..., Any]] = []
    to_thread = asyncio.to_thread

    async def counting(fn: Callable[..., Any], /, *args: Any) -> Any:
        if fn in ONE_SHOT.values():
            threaded.append(fn)
        return await to_thread(fn, *args)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    p = await app()
    doc = json_doc(3 * MIB // 2)

    r = await get(client, p, path(doc=3 * MIB // 2), ae=coding)

    assert_compressed(r, coding, doc)
    assert r.headers["Content-Length"] == str(len(r.body))  # the bytes path
    assert threaded == [ONE_SHOT[coding]]

    small = await get(client, p, path(size=20000), ae=coding)
    assert_compressed(small, coding, text(20000))
    assert threaded == [ONE_SHOT[coding]]  # small bodies stay on the loop


# --- Accept-Encoding, through the proxy ---------------------------------------------------

#: (Accept-Encoding, site algorithms or None for the default, the coding expected or None).
NEGOTIATION = [
    ("gzip", None, "gzip"),
    ("gzip, br, zstd", None, "br"),
    ("zstd, gzip", None, "zstd"),
    ("gzip, deflate, br, zstd", None, "br"),
    ("gzip;q=1, br;q=0.5", None, "gzip"),
    ("br;q=0, gzip", None, "gzip"),
    ("*", None, "br"),
    ("*;q=0.5, gzip", None, "gzip"),
    ("*;q=0.5, br;q=0", None, "zstd"),
    ("identity;q=0", None, None),
    ("*;q=0", None, None),
    ("identity;q=0, *;q=0", None, None),
    ("identity;q=0, gzip;q=0", None, None),
    ("deflate, compress, exi", None, None),
    ("identity", None, None),
    ("", None, None),
    ("x-gzip", None, "gzip"),
    ("GZIP;Q=0.5", None, "gzip"),
    ("gzip ; q=0.5", None, "gzip"),
    ("gzip;q=0.5, identity;q=0.9", None, None),
    ("gzip;q=0.5, identity;q=0.5", None, "gzip"),
    ("zstd;q=0.8, br;q=0.8, gzip;q=0.9", None, "gzip"),
    ("zstd;q=0.8, br;q=0.8", None, "br"),
    ("br;q=garbage, gzip;q=0.1", None, "gzip"),
    ("br;q=1.5, gzip;q=0.2", None, "gzip"),
    ("br;q=-1, gzip;q=0.2", None, "gzip"),
    ("br;q=, gzip;q=0.2", None, "gzip"),
    ("br;q=0.0001, gzip;q=0.2", None, "gzip"),
    ("br;q=0.5;q=1, gzip;q=0.7", None, "gzip"),
    ("gzip;q=1.000", None, "gzip"),
    ("gzip;q=0.", None, None),
    ("gzip;q=0.001", None, "gzip"),
    ("gzip;level=9", None, "gzip"),
    ("gzip, gzip;q=0", None, "gzip"),
    ("gzip;q=0, gzip", None, None),
    (",, ,gzip ,,", None, "gzip"),
    ("br gzip", None, None),
    ("br", ("gzip", "zstd"), None),
    ("br, zstd, gzip", ("gzip", "zstd"), "gzip"),
    ("*", ("gzip", "zstd"), "gzip"),
    ("zstd;q=0.9, gzip;q=0.8", ("gzip", "zstd"), "zstd"),
    ("gzip", ("zstd",), None),
]


async def test_accept_encoding_is_negotiated_by_q_values(
    proxy: StartProxy, backend: StartBackend, client: aiohttp.ClientSession
) -> None:
    up = await backend(shaped)
    proxies: dict[tuple[str, ...] | None, Proxy] = {}
    original = text(20000)
    for value, algorithms, expected in NEGOTIATION:
        if algorithms not in proxies:
            options: Any = True if algorithms is None else {"algorithms": list(algorithms)}
            proxies[algorithms] = await proxy(make_config(site("app", [HOST], [up.url], compression=options)))

        r = await get(client, proxies[algorithms], path(size=20000), ae=value)

        where = f"Accept-Encoding {value!r} with algorithms {algorithms}"
        assert r.status == 200, where
        assert r.headers.get("Content-Encoding") == expected, where
        # Either way the answer depends on Accept-Encoding, and says so.
        assert "accept-encoding" in vary(r), where
        assert (decode(expected, r.body) if expected else r.body) == original, where


async def test_no_accept_encoding_means_identity(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app()
    original = text(20000)

    r = await get(client, p, path(size=20000))

    assert_identity(r, original)
    assert r.headers["Content-Length"] == str(len(original))
    assert "accept-encoding" in vary(r)  # a cache must not hand this to a client that asks for gzip


async def test_repeated_accept_encoding_lines_are_one_list(app: StartApp) -> None:
    p = await app()
    original = text(20000)
    request = (
        f"GET {path(size=20000)} HTTP/1.1\r\nHost: {HOST}\r\n"
        "Accept-Encoding: br;q=0\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    ).encode()

    r = await raw_request(p.port, request)

    assert r.status == 200
    assert r.get("Content-Encoding") == "gzip"
    assert decode("gzip", r.body) == original


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([b"x" * 8000], None, id="huge"),
        pytest.param([b"c, " * 2500 + b"gzip"], None, id="thousands-then-gzip"),
        pytest.param([b"gzip" + b", c" * 2500], "gzip", id="gzip-then-thousands"),
        pytest.param([b"c1, c2, c3, c4"] * 100 + [b"gzip"], None, id="a-hundred-lines"),
        pytest.param([b"br;q=nan, zstd;q=inf, gzip;q=1e0, identity;q=0x1"], None, id="q-garbage"),
        pytest.param([b"br;q=2, zstd;q=-0.5, gzip;q=0.7"], "gzip", id="q-out-of-range"),
        pytest.param([b"gz\xffip, br\x80, zstd;q=\xff"], None, id="not-ascii"),
        pytest.param([b";;;;q=1;;;, =, ;q=0.5, gzip"], "gzip", id="stray-separators"),
    ],
)
async def test_absurd_accept_encoding_gets_a_plain_answer(
    app: StartApp, lines: list[bytes], expected: str | None
) -> None:
    p = await app()
    original = text(20000)
    request = (
        f"GET {path(size=20000)} HTTP/1.1\r\nHost: {HOST}\r\n".encode()
        + b"".join(b"Accept-Encoding: " + line + b"\r\n" for line in lines)
        + b"Connection: close\r\n\r\n"
    )

    r = await raw_request(p.port, request)

    assert r.status == 200
    assert r.get("Content-Encoding") == expected
    assert "Accept-Encoding" in (r.get("Vary") or "")
    assert (decode(expected, r.body) if expected else r.body) == original
    # ... and the proxy is none the worse for it.
    again = await raw_request(
        p.port,
        f"GET {path(size=20000)} HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: br\r\nConnection: close\r\n\r\n".encode(),
    )
    assert decode("br", again.body) == original


# --- what is not compressed ---------------------------------------------------------------


async def test_an_already_encoded_response_passes_untouched(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app()
    original = text(20000)

    control = await get(client, p, path(size=20000), ae="gzip")
    assert_compressed(control, "gzip", original)

    # The upstream says its body is brotli: the proxy must not add a layer (or its Vary).
    r = await get(client, p, path(size=20000, h="Content-Encoding: br"), ae="gzip, br")
    assert r.headers.getall("Content-Encoding") == ["br"]
    assert r.body == original  # as the upstream sent it
    assert vary(r) == []
    # "identity" is no encoding: that one is compressed as usual.
    r = await get(client, p, path(size=20000, h="Content-Encoding: identity"), ae="gzip")
    assert r.headers.getall("Content-Encoding") == ["gzip"]
    assert decode("gzip", r.body) == original


async def test_no_transform_is_respected(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app()
    original = text(20000)

    control = await get(client, p, path(size=20000, h="Cache-Control: public, max-age=60"), ae="gzip")
    assert_compressed(control, "gzip", original)

    for value in ("public, no-transform", "No-Transform", "max-age=60,no-transform"):
        r = await get(client, p, path(size=20000, h=f"Cache-Control: {value}"), ae="gzip")
        assert_identity(r, original)
        assert vary(r) == []


async def test_partial_and_bodyless_statuses_are_left_alone(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app()
    original = text(20000)
    etag = '"v1"'

    control = await get(client, p, path(size=20000, etag=etag, h="Accept-Ranges: bytes"), ae="gzip")
    assert_compressed(control, "gzip", original)
    assert "Accept-Ranges" not in control.headers  # ranges of the compressed body are not offered
    assert control.headers.getall("ETag") == ['W/"v1"']

    # 206: a range of the identity body, passed as it is.
    r = await get(client, p, path(size=20000), ae="gzip", headers={"Range": "bytes=0-4999"})
    assert_identity(r, original[:5000], status=206)
    assert r.headers["Content-Range"] == "bytes 0-4999/20000"

    # 304: the upstream's weak comparison matches the weakened validator.
    r = await get(client, p, path(size=20000, etag=etag), ae="gzip", headers={"If-None-Match": 'W/"v1"'})
    assert_identity(r, b"", status=304)
    assert r.headers.getall("ETag") == ['"v1"']

    r = await get(client, p, path(status=204), ae="gzip")
    assert_identity(r, b"", status=204)


async def test_head_is_never_compressed(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app()

    control = await get(client, p, path(size=20000), ae="gzip")
    assert_compressed(control, "gzip", text(20000))

    r = await get(client, p, path(size=20000), ae="gzip", method="HEAD")
    assert_identity(r, b"")
    assert r.headers["Content-Length"] == "20000"
    assert "accept-encoding" in vary(r)  # the GET of the same URL varies


async def test_only_compressible_types_are_compressed(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app()
    original = text(20000)

    for ctype in (
        "application/json",
        "application/json; charset=utf-8",
        "Text/HTML; charset=UTF-8",
        "text/css",
        "application/javascript",
        "image/svg+xml",
        "application/ld+json",
        "application/atom+xml",
        "application/manifest+json",
    ):
        r = await get(client, p, path(size=20000, type=ctype), ae="gzip")
        assert r.headers.get("Content-Encoding") == "gzip", ctype
        assert decode("gzip", r.body) == original
    for ctype in ("image/png", "application/octet-stream", "video/mp4", "application/zip", "font/woff2"):
        r = await get(client, p, path(size=20000, type=ctype), ae="gzip")
        assert_identity(r, original)
        assert vary(r) == [], ctype


async def test_configured_types_replace_the_default_list(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app({"types": ["application/x-custom", "application/*+json", "text/*"]})
    original = text(20000)

    for ctype in ("application/x-custom", "application/ld+json", "text/csv"):
        r = await get(client, p, path(size=20000, type=ctype), ae="gzip")
        assert_compressed(r, "gzip", original)
    r = await get(client, p, path(size=20000, type="application/json"), ae="gzip")
    assert_identity(r, original)


async def test_a_response_without_a_content_type_is_left_alone(
    proxy: StartProxy, raw_backend: StartRawBackend, client: aiohttp.ClientSession
) -> None:
    original = text(20000)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n" % len(original)
    typed = await raw_backend(canned(head + b"Content-Type: text/plain\r\n\r\n", original))
    untyped = await raw_backend(canned(head + b"\r\n", original))
    p = await proxy(
        make_config(
            site("typed", ["typed.lan"], [typed.url], compression=True),
            site("untyped", ["untyped.lan"], [untyped.url], compression=True),
        )
    )

    control = await fetch(client, p, host="typed.lan", headers={"Accept-Encoding": "gzip"})
    assert_compressed(control, "gzip", original)
    r = await fetch(client, p, host="untyped.lan", headers={"Accept-Encoding": "gzip"})
    assert_identity(r, original)


async def test_small_responses_are_left_alone(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app()  # min_bytes 1024

    control = await get(client, p, path(size=1024), ae="gzip")
    assert_compressed(control, "gzip", text(1024))
    for size in (1023, 10, 0):
        r = await get(client, p, path(size=size), ae="gzip")
        assert_identity(r, text(size))
        assert vary(r) == []  # every client gets the same bytes


async def test_min_bytes_is_configurable_and_reads_a_streams_length(
    app: StartApp, client: aiohttp.ClientSession
) -> None:
    p = await app({"min_bytes": 200_000})

    r = await get(client, p, path(size=150_000, mode="stream"), ae="gzip")
    assert_identity(r, text(150_000))
    r = await get(client, p, path(size=250_000, mode="stream"), ae="gzip")
    assert_compressed(r, "gzip", text(250_000))
    # A stream of unknown length may be long: it is compressed.
    r = await get(client, p, path(size=150_000, mode="chunked"), ae="gzip")
    assert_compressed(r, "gzip", text(150_000))


async def test_min_bytes_zero_still_leaves_empty_bodies_alone(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app({"min_bytes": 0})

    r = await get(client, p, path(size=300), ae="gzip")
    assert_compressed(r, "gzip", text(300))
    r = await get(client, p, path(size=0), ae="gzip")
    assert_identity(r, b"")


async def test_an_incompressible_body_is_sent_as_it_is(app: StartApp, client: aiohttp.ClientSession) -> None:
    noise = os.urandom(20000)

    async def mislabelled(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=noise if request.path == "/noise" else text(20000), content_type="text/plain")

    p = await app(handler=mislabelled)

    control = await get(client, p, "/text", ae="gzip")
    assert_compressed(control, "gzip", text(20000))
    r = await get(client, p, "/noise", ae="gzip")
    assert_identity(r, noise)  # gzip would only have made it larger


# --- headers of a compressed response -----------------------------------------------------


async def test_compressed_response_headers(app: StartApp, client: aiohttp.ClientSession) -> None:
    p = await app()
    original = text(200_000)
    identity_only = ["Accept-Ranges: bytes", "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==", "Vary: Origin"]

    r = await get(client, p, path(size=200_000, mode="stream", etag='"abc"', h=identity_only), ae="zstd")

    assert_compressed(r, "zstd", original)
    assert "Content-Length" not in r.headers
    assert r.headers["Transfer-Encoding"] == "chunked"
    assert "Accept-Ranges" not in r.headers
    assert "Content-MD5" not in r.headers
    assert r.headers.getall("ETag") == ['W/"abc"']
    assert r.headers.getall("Vary") == ["Origin, Accept-Encoding"]

    # The same response, not compressed for this client, keeps them all.
    r = await get(client, p, path(size=200_000, mode="stream", etag='"abc"', h=identity_only))
    assert_identity(r, original)
    assert r.headers["Content-Length"] == "200000"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers.getall("ETag") == ['"abc"']
    assert r.headers.getall("Vary") == ["Origin, Accept-Encoding"]

    # Weak validators and a Vary that covers it already stay as they are.
    r = await get(client, p, path(size=20000, etag='W/"w"', h="Vary: accept-encoding"), ae="gzip")
    assert r.headers.getall("ETag") == ['W/"w"']
    assert r.headers.getall("Vary") == ["accept-encoding"]
    r = await get(client, p, path(size=20000, h="Vary: *"), ae="gzip")
    assert r.headers.get("Content-Encoding") == "gzip"
    assert r.headers.getall("Vary") == ["*"]


# --- streaming ----------------------------------------------------------------------------


@functools.cache
def log_block() -> bytes:
    """1 MiB of varied log-like text (compresses to about a third; never repeats inside a window)."""
    rng = random.Random(7)
    lines = []
    size = 0
    while size < MIB:
        line = (
            f"{rng.randrange(10**9):09d} sensor.{rng.choice(('temp', 'hum', 'power', 'door'))}_{rng.randrange(500)} "
            f"{rng.uniform(-40, 120):.4f} {rng.choice(('ok', 'warn', 'stale'))}\n"
        ).encode()
        lines.append(line)
        size += len(line)
    return b"".join(lines)[:MIB]


def rss() -> int:
    """This process's resident set now (VmRSS), in bytes: the engine runs in a thread in it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def long_text(request: web.BaseRequest) -> web.StreamResponse:
    """`?blocks=N` MiB of log text with a Content-Length, written block by block."""
    blocks = int(request.query["blocks"])
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    resp.content_length = blocks * MIB
    await resp.prepare(request)
    for _ in range(blocks):
        await resp.write(log_block())
    await resp.write_eof()
    return resp


async def download(client: aiohttp.ClientSession, p: Proxy, blocks: int, coding: str) -> tuple[int, int, int]:
    """Decode `blocks` MiB through the proxy as it arrives: (bytes, crc32, peak RSS)."""
    decoder = Decoder(coding)
    count = crc = peak = 0
    next_sample = 0
    url = f"{p.url}/long?blocks={blocks}"
    async with client.get(url, headers={"Host": HOST, "Accept-Encoding": coding}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == coding
        async for chunk in resp.content.iter_chunked(256 * 1024):
            out = decoder.feed(chunk)
            count += len(out)
            crc = zlib.crc32(out, crc)
            if count >= next_sample:
                next_sample += 8 * MIB
                peak = max(peak, rss())
    assert decoder.finished
    return count, crc, peak


def expected_crc(blocks: int) -> int:
    crc = 0
    for _ in range(blocks):
        crc = zlib.crc32(log_block(), crc)
    return crc


async def test_a_long_stream_is_compressed_in_bounded_memory(app: StartApp, client: aiohttp.ClientSession) -> None:
    blocks = 160
    p = await app(handler=long_text)
    count, crc, _ = await download(client, p, 16, "gzip")  # warm up the steady-state buffers
    assert (count, crc) == (16 * MIB, expected_crc(16))
    before = rss()

    count, crc, peak = await download(client, p, blocks, "gzip")

    assert (count, crc) == (blocks * MIB, expected_crc(blocks))
    # Holding the body (or even its compressed form, about a third) would be far more than this.
    assert peak - before < 40 * MIB, f"RSS grew by {(peak - before) / MIB:.1f} MiB for a {blocks} MiB body"


def gated(content_type: str, first: bytes, second: bytes, gate: asyncio.Event) -> Handler:
    """A chunked stream: `first`, then `second` only once the test sets `gate`."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(first)
        await gate.wait()  # set by the test only once `first` came out of the proxy, decoded
        await resp.write(second)
        await resp.write_eof()
        return resp

    return handle


async def read_until_decoded(resp: aiohttp.ClientResponse, decoder: Decoder, wanted: bytes) -> bytes:
    """Read and decode until `wanted` has come out (bounded by STEP_TIMEOUT per read)."""
    out = b""
    while wanted not in out:
        chunk = await asyncio.wait_for(resp.content.readany(), STEP_TIMEOUT)
        assert chunk, f"the stream ended before {wanted!r} came through; got {out!r}"
        out += decoder.feed(chunk)
    return out


@pytest.mark.parametrize("coding", CODINGS)
async def test_server_sent_events_are_flushed_as_they_come(
    app: StartApp, client: aiohttp.ClientSession, gate: asyncio.Event, coding: str
) -> None:
    first, second = b'event: state\ndata: {"on": true}\n\n', b'event: state\ndata: {"on": false}\n\n'
    p = await app({"min_bytes": 0}, handler=gated("text/event-stream", first, second, gate))

    async with client.get(p.url + "/events", headers={"Host": HOST, "Accept-Encoding": coding}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == coding
        decoder = Decoder(coding)
        got = await read_until_decoded(resp, decoder, first)
        assert got == first
        assert not gate.is_set()
        gate.set()
        got += decoder.feed(await asyncio.wait_for(resp.content.read(), STEP_TIMEOUT))

    assert got == first + second
    assert decoder.finished


async def test_a_chunked_stream_is_flushed_as_it_comes(
    app: StartApp, client: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    # NDJSON of unknown length (a model streaming tokens, a log tail): each line when it happens.
    first = b'{"response": "Hel", "done": false}\n' * 40
    second = b'{"response": "", "done": true}\n'
    p = await app(handler=gated("application/x-ndjson", first, second, gate))

    async with client.get(p.url + "/api/generate", headers={"Host": HOST, "Accept-Encoding": "br"}) as resp:
        assert resp.headers["Content-Encoding"] == "br"
        decoder = Decoder("br")
        got = await read_until_decoded(resp, decoder, first)
        gate.set()
        got += decoder.feed(await asyncio.wait_for(resp.content.read(), STEP_TIMEOUT))

    assert got == first + second


# --- upstreams that lie, clients that leave -----------------------------------------------


def raw_head(length: int, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {length}", "Connection: close"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


async def test_an_upstream_that_sends_less_than_its_content_length(
    proxy: StartProxy, raw_backend: StartRawBackend, client: aiohttp.ClientSession
) -> None:
    body = text(300_000)
    honest = await raw_backend(canned(raw_head(300_000), body))
    short_big = await raw_backend(canned(raw_head(300_000), body[:100_000]))
    short_small = await raw_backend(canned(raw_head(5000), body[:3000]))
    p = await proxy(
        make_config(
            site("honest", ["honest.lan"], [honest.url], compression=True),
            site("big", ["big.lan"], [short_big.url], compression=True),
            site("small", ["small.lan"], [short_small.url], compression=True),
        )
    )
    rec = record(p)

    control = await fetch(client, p, host="honest.lan", headers={"Accept-Encoding": "gzip"})
    assert_compressed(control, "gzip", body)

    # Streamed: the client sees a cut connection, never a clean end of a gzip stream.
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.get(p.url, headers={"Host": "big.lan", "Accept-Encoding": "gzip"}) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            async for chunk in resp.content.iter_any():
                received += chunk
    decoder = Decoder("gzip")
    partial = decoder.feed(received)
    assert not decoder.finished
    assert body.startswith(partial)

    # Read whole: a clean 502 instead.
    r = await fetch(client, p, host="small.lan", headers={"Accept-Encoding": "gzip"})
    assert r.status == 502
    events = await rec.wait(3)
    assert events[1].error == "upstream failed mid-response: the connection closed before the body's end"
    assert events[2].status == 502


async def test_an_upstream_that_sends_more_than_its_content_length(
    proxy: StartProxy, raw_backend: StartRawBackend, client: aiohttp.ClientSession
) -> None:
    body = text(6000)
    honest = await raw_backend(canned(raw_head(6000), body))
    liar = await raw_backend(canned(raw_head(3000), body))
    p = await proxy(
        make_config(
            site("honest", ["honest.lan"], [honest.url], compression=True),
            site("liar", ["liar.lan"], [liar.url], compression=True),
        )
    )

    control = await fetch(client, p, host="honest.lan", headers={"Accept-Encoding": "br"})
    assert_compressed(control, "br", body)
    # Bytes after the declared end: the upstream is broken, and the client is told so plainly
    # (a 502 page, never a compressed body with the upstream's extra bytes in it).
    r = await fetch(client, p, host="liar.lan", headers={"Accept-Encoding": "br"})
    assert r.status == 502
    assert "Content-Encoding" not in r.headers
    assert r.body.startswith(b"502 Bad Gateway")


async def test_a_client_that_leaves_mid_body(app: StartApp, client: aiohttp.ClientSession, gate: asyncio.Event) -> None:
    piece = log_block()[: 64 * 1024]
    upstream_cut = asyncio.Event()

    async def endless(request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/tail":
            return web.Response(body=text(20000), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(piece)
        await gate.wait()
        try:
            for _ in range(20_000):  # at most 1.25 GiB; the proxy must hang up long before
                await resp.write(piece)
        except ConnectionError:
            upstream_cut.set()
            raise
        return resp

    p = await app(handler=endless)
    rec = record(p)

    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    writer.write(f"GET /tail HTTP/1.1\r\nHost: {HOST}\r\nAccept-Encoding: gzip\r\n\r\n".encode())
    status, _, headers = await read_head(reader)
    assert status == 200
    assert ("Content-Encoding", "gzip") in headers
    assert await asyncio.wait_for(reader.read(1024), STEP_TIMEOUT)  # compressed bytes are flowing
    writer.transport.abort()  # the client is gone, mid-body
    gate.set()

    await asyncio.wait_for(upstream_cut.wait(), STEP_TIMEOUT)  # the proxy let go of the upstream
    (event,) = await rec.wait(1)
    assert event.error == "client went away"
    # And everything else carries on.
    r = await get(client, p, "/", ae="gzip")
    assert_compressed(r, "gzip", text(20000))


# --- with the cache -----------------------------------------------------------------------


async def test_the_cache_keeps_the_compressed_variant(
    proxy: StartProxy, backend: StartBackend, client: aiohttp.ClientSession
) -> None:
    pytest.importorskip("homeproxy.engine.features.cache")
    hits = 0
    original = text(20000)

    async def cacheable(request: web.BaseRequest) -> web.StreamResponse:
        nonlocal hits
        hits += 1
        return web.json_response(body=original, headers={"Cache-Control": "max-age=60"})

    up = await backend(cacheable)
    p = await proxy(make_config(site("app", [HOST], [up.url], compression=True, cache=True)))

    first = await get(client, p, ae="gzip")
    second = await get(client, p, ae="gzip")

    assert_compressed(first, "gzip", original)
    assert second.body == first.body  # stored compressed, served as stored
    assert second.headers["Content-Encoding"] == "gzip"
    assert hits == 1
    # Vary keeps the variants apart: no client gets a coding it did not ask for.
    plain = await get(client, p)
    assert_identity(plain, original)
    br = await get(client, p, ae="br")
    assert_compressed(br, "br", original)
