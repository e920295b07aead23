"""compression: gzip, brotli and zstd responses for clients that accept them.

On the way back up, a response is compressed when all of these hold:

- its status has a body that may be transformed: not 1xx, 204, 205, 206 (a range
  of the identity body; compressing it would break the client's reassembly,
  RFC 9110 section 14.2) or 304, and it is not a relayed WebSocket;
- it carries no `Content-Encoding` of its own (the upstream compressed it
  already) and no `Cache-Control: no-transform` (RFC 9111 section 5.2.2.6);
- its media type is in the site's `types` (`type/*` and `type/*+suffix` allowed);
- it is at least `min_bytes` long: bytes bodies by their length, streams by
  their `Content-Length` (a stream of unknown length is always compressed);
- the request is not HEAD, and the client's Accept-Encoding accepts one of the
  site's `algorithms` (RFC 9110 section 12.5.3, see `choose_coding`).

Such a response gets `Vary: Accept-Encoding` whether or not this client's
request was compressed, since another client's would be: a cache (the cache
feature sits outside this one) then keeps one variant per coding, and a hit is
never compressed again. A compressed response loses `Content-Length` (bytes
bodies get the new one, streams go chunked), `Accept-Ranges` (ranges of the
compressed body are not offered) and the digests of the identity body, and a
strong ETag becomes weak (`W/"..."`, as nginx does), because the bytes differ
from the identity ones the upstream's validator names.

Streams are compressed chunk by chunk, never held whole. A stream of unknown
length (chunked upstream: NDJSON, logs, long polls) and `text/event-stream` are
flushed after every chunk the upstream sends, as Caddy and Go's reverse proxy
do, so events and lines arrive when they happen. A stream of known length is
left to the compressor, which holds at most its window. A body or chunk above
`THREAD_MIN` is compressed in a worker thread (the three libraries release the
GIL) so that the loop is not stalled for milliseconds.

If the client accepts no coding at all, not even identity (`identity;q=0`), the
response is sent uncompressed anyway, as nginx and Caddy do, rather than a 406.
"""

from __future__ import annotations

import asyncio
import functools
import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Protocol

import brotli  # type: ignore[import-untyped]
import zstandard
from multidict import CIMultiDict

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.reply import Reply

#: Levels for on-the-fly use (nginx-like speed; on this project's 2-core test machine,
#: 64 KiB of JSON takes about 0.45 ms with gzip 5 or brotli 4 and 0.12 ms with zstd 3).
GZIP_LEVEL = 5
BROTLI_QUALITY = 4
#: Brotli window: 2**19 = 512 KiB (nginx's brotli module default), the most a stream holds.
BROTLI_WINDOW = 19
ZSTD_LEVEL = 3
#: Bodies and chunks larger than this are compressed off the event loop (about 2 ms of
#: gzip or brotli work at 256 KiB; handing work to a thread costs about 0.1-0.2 ms).
THREAD_MIN = 256 * 1024
#: Only the first this many Accept-Encoding elements are read (real clients send under 10).
MAX_CODINGS = 64

#: Statuses whose body is never compressed (206: a range of the identity body).
_SKIP_STATUS = frozenset({204, 205, 206, 304})
#: Headers that describe the identity body and are wrong for a compressed one.
_IDENTITY_ONLY = ("Content-Length", "Content-MD5", "Digest", "Content-Digest", "Repr-Digest", "Accept-Ranges")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
#: RFC 9110 section 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
#: Single-line Accept-Encoding values up to this length have their choice cached.
_CACHE_MAX_LEN = 256


# --- Accept-Encoding ------------------------------------------------------------------


def parse_accept_encoding(lines: Iterable[str]) -> dict[str, int]:
    """The codings of Accept-Encoding header lines, each with its weight in thousandths (0-1000).

    Codings are lower-cased and `x-gzip` counts as `gzip` (RFC 9110 section 8.4.1.3).
    Lenient the way servers are: an element whose qvalue breaks the grammar (`q=abc`,
    `q=2`, `q=-1`, `q=0.0001`) is ignored as if absent; parameters other than `q` are
    ignored; the first element for a coding wins over later repeats; only the first
    `MAX_CODINGS` elements (over all lines) are read, so a huge value costs no more
    than a short one.
    """
    weights: dict[str, int] = {}
    budget = MAX_CODINGS
    for line in lines:
        if budget <= 0:
            break
        elements = line.split(",", budget)
        if len(elements) > budget:
            del elements[budget:]
        budget -= len(elements)
        for element in elements:
            coding, _, params = element.partition(";")
            coding = coding.strip().lower()
            if not coding or not _TOKEN.fullmatch(coding):
                continue
            weight = _weight(params)
            if weight is None:
                continue
            weights.setdefault("gzip" if coding == "x-gzip" else coding, weight)
    return weights


def _weight(params: str) -> int | None:
    """The q parameter in thousandths (1000 without one), or None if it is malformed."""
    if not params:
        return 1000
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        value = value.strip()
        if not _QVALUE.fullmatch(value):
            return None
        whole, _, fraction = value.partition(".")
        return int(whole) * 1000 + int((fraction + "000")[:3])
    return 1000


def negotiate(weights: dict[str, int], algorithms: Sequence[str]) -> str | None:
    """The coding to send given the client's `weights`, or None for identity.

    The highest weight above 0 wins; among equal weights, the first in `algorithms`
    (the site's preference). `*` stands for every coding not named, identity included
    (RFC 9110 section 12.5.3). If the client names identity (or `*`) with a higher
    weight than every coding we have, it gets identity. When nothing is acceptable,
    identity is sent anyway (the caller never answers 406).
    """
    star = weights.get("*", 0)
    best: str | None = None
    best_weight = 0
    for coding in algorithms:
        weight = weights.get(coding, star)
        if weight > best_weight:
            best, best_weight = coding, weight
    if best is None:
        return None
    identity = weights.get("identity", weights.get("*"))
    if identity is not None and identity > best_weight:
        return None
    return best


@functools.lru_cache(maxsize=256)
def _negotiate_cached(value: str, algorithms: tuple[str, ...]) -> str | None:
    return negotiate(parse_accept_encoding((value,)), algorithms)


def choose_coding(lines: Sequence[str], algorithms: tuple[str, ...]) -> str | None:
    """The coding for a request with these Accept-Encoding lines, or None for identity.

    No Accept-Encoding at all means identity: RFC 9110 would allow any coding, but
    no server compresses for a client that did not ask, and neither does homeproxy.
    """
    if not lines:
        return None
    if len(lines) == 1 and len(lines[0]) <= _CACHE_MAX_LEN:
        return _negotiate_cached(lines[0], algorithms)
    return negotiate(parse_accept_encoding(lines), algorithms)


# --- encoders -------------------------------------------------------------------------


class Encoder(Protocol):
    """A streaming compressor for one response."""

    def compress(self, data: bytes) -> bytes:
        """Feed `data`; returns what the compressor lets out (possibly nothing)."""
        ...

    def flush(self) -> bytes:
        """Everything fed so far, decodable by the client now (the stream goes on)."""
        ...

    def finish(self) -> bytes:
        """The end of the stream."""
        ...


class _Gzip:
    __slots__ = ("_z",)

    def __init__(self) -> None:
        # wbits 31: a gzip header and trailer around the deflate stream (RFC 1952).
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def flush(self) -> bytes:
        return self._z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class _Brotli:
    __slots__ = ("_b",)

    def __init__(self) -> None:
        self._b = brotli.Compressor(quality=BROTLI_QUALITY, lgwin=BROTLI_WINDOW)

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._b.process(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._b.flush()
        return out

    def finish(self) -> bytes:
        out: bytes = self._b.finish()
        return out


class _Zstd:
    __slots__ = ("_z",)

    def __init__(self) -> None:
        self._z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def flush(self) -> bytes:
        return self._z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self._z.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


def _gzip_whole(data: bytes) -> bytes:
    return zlib.compress(data, GZIP_LEVEL, 31)


def _brotli_whole(data: bytes) -> bytes:
    out: bytes = brotli.compress(data, quality=BROTLI_QUALITY, lgwin=BROTLI_WINDOW)
    return out


def _zstd_whole(data: bytes) -> bytes:
    # One-shot frames record the content size, so the decoder sizes its window to it.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


ENCODERS: dict[str, Callable[[], Encoder]] = {"gzip": _Gzip, "br": _Brotli, "zstd": _Zstd}
"""A new streaming compressor per coding name."""
ONE_SHOT: dict[str, Callable[[bytes], bytes]] = {"gzip": _gzip_whole, "br": _brotli_whole, "zstd": _zstd_whole}
"""Whole-body compression per coding name."""


async def _run(fn: Callable[[bytes], bytes], data: bytes) -> bytes:
    """`fn(data)`, in a worker thread when `data` is large enough to stall the loop."""
    if len(data) > THREAD_MIN:
        return await asyncio.to_thread(fn, data)
    return fn(data)


async def compress_stream(chunks: AsyncIterator[bytes], encoder: Encoder, *, flush_each: bool) -> AsyncIterator[bytes]:
    """`chunks`, compressed as they come; flushed after each one if `flush_each`.

    An upstream failure mid-stream propagates as it is, without the compressor's
    end, so that `send()` cuts the connection and the client cannot take a
    truncated body for a whole one. Closing this generator closes `chunks`.
    """
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            out = await _run(encoder.compress, chunk)
            if flush_each:
                out += encoder.flush()
            if out:
                yield out
        yield encoder.finish()
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


# --- response checks ------------------------------------------------------------------


def type_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A test for media types (lower case, no parameters) against `type/*`-style patterns."""
    exact = frozenset(p for p in patterns if "*" not in p)
    wild = [re.escape(p).replace(r"\*", "[^/]*") for p in patterns if "*" in p]
    rx = re.compile("|".join(f"(?:{w})" for w in wild)) if wild else None

    def matches(media_type: str) -> bool:
        return media_type in exact or (rx is not None and rx.fullmatch(media_type) is not None)

    return matches


def media_type(headers: CIMultiDict[str]) -> str:
    """The response's media type, lower case without parameters ("" if none)."""
    return headers.get("Content-Type", "").partition(";")[0].strip().lower()


def _tokens(headers: CIMultiDict[str], name: str) -> Iterable[str]:
    """The lower-cased list elements of every `name` line (parameters after `=` or `;` cut)."""
    for value in headers.getall(name, ()):
        for element in value.split(","):
            yield element.partition("=")[0].partition(";")[0].strip().lower()


def _encoded(headers: CIMultiDict[str]) -> bool:
    return any(t not in ("", "identity") for t in _tokens(headers, "Content-Encoding"))


def _no_transform(headers: CIMultiDict[str]) -> bool:
    return any(t == "no-transform" for t in _tokens(headers, "Cache-Control"))


def _declared_length(headers: CIMultiDict[str]) -> int | None:
    value = headers.get("Content-Length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def add_vary(headers: CIMultiDict[str]) -> None:
    """Add `Accept-Encoding` to Vary unless it (or `*`) is there already; one line results."""
    tokens = set(_tokens(headers, "Vary"))
    if "*" in tokens or "accept-encoding" in tokens:
        return
    values = [v.strip() for v in headers.getall("Vary", ()) if v.strip()]
    headers["Vary"] = ", ".join([*values, "Accept-Encoding"])


def _mark_encoded(headers: CIMultiDict[str], coding: str) -> None:
    headers["Content-Encoding"] = coding
    for name in _IDENTITY_ONLY:
        headers.popall(name, None)
    etags = headers.getall("ETag", ())
    if etags:
        # The compressed bytes are not the ones a strong validator names (RFC 9110 8.8.3);
        # a weak one still matches If-None-Match, which compares weakly.
        headers.popall("ETag")
        for etag in etags:
            headers.add("ETag", "W/" + etag if etag.startswith('"') else etag)


# --- the middleware -------------------------------------------------------------------


def make_compression(site: Site, ctx: FeatureContext) -> Middleware:
    """Compress `site`'s responses per `site.compression` for clients that accept it."""
    settings = site.compression
    algorithms = tuple(dict.fromkeys(a for a in settings.algorithms if a in ENCODERS))
    min_bytes = settings.min_bytes
    compressible = type_matcher(settings.types)

    async def compression(ex: Exchange, nxt: Handler) -> Reply:
        reply = await nxt(ex)
        headers = reply.headers
        status = reply.status
        if (
            not algorithms
            or reply.sent
            or status < 200
            or status in _SKIP_STATUS
            or _encoded(headers)
            or not compressible(media_type(headers))
            or _no_transform(headers)
        ):
            return reply
        body = reply.body
        if isinstance(body, bytes):
            # HEAD answers carry no body: judge them by their Content-Length like a stream.
            size = _declared_length(headers) if ex.request.method == "HEAD" else len(body)
        else:
            size = _declared_length(headers)
        if size is not None and (size < min_bytes or size == 0):
            return reply
        # Another client's request would be compressed: caches must keep variants apart.
        add_vary(headers)
        if ex.request.method == "HEAD":
            return reply
        coding = choose_coding(ex.request.headers.getall("Accept-Encoding", ()), algorithms)
        if coding is None:
            return reply
        if isinstance(body, bytes):
            compressed = await _run(ONE_SHOT[coding], body)
            if len(compressed) >= len(body):  # incompressible after all: the original is smaller
                return reply
            _mark_encoded(headers, coding)
            reply.body = compressed
            return reply
        flush_each = size is None or media_type(headers) == "text/event-stream"
        _mark_encoded(headers, coding)
        reply.body = compress_stream(body, ENCODERS[coding](), flush_each=flush_each)
        return reply

    return compression


__all__ = [
    "BROTLI_QUALITY",
    "BROTLI_WINDOW",
    "ENCODERS",
    "GZIP_LEVEL",
    "MAX_CODINGS",
    "ONE_SHOT",
    "THREAD_MIN",
    "ZSTD_LEVEL",
    "Encoder",
    "add_vary",
    "choose_coding",
    "compress_stream",
    "make_compression",
    "media_type",
    "negotiate",
    "parse_accept_encoding",
    "type_matcher",
]
