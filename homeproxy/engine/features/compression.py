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

import re
from collections.abc import Callable, Iterable

from multidict import CIMultiDict

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.features.compression_encoders import (
    BROTLI_QUALITY,
    BROTLI_WINDOW,
    ENCODERS,
    GZIP_LEVEL,
    ONE_SHOT,
    THREAD_MIN,
    ZSTD_LEVEL,
    Encoder,
    _run,
    compress_stream,
)
from homeproxy.engine.features.compression_negotiate import MAX_CODINGS, choose_coding, negotiate, parse_accept_encoding
from homeproxy.engine.reply import Reply

#: Statuses whose body is never compressed (206: a range of the identity body).
_SKIP_STATUS = frozenset({204, 205, 206, 304})
#: Headers that describe the identity body and are wrong for a compressed one.
_IDENTITY_ONLY = ("Content-Length", "Content-MD5", "Digest", "Content-Digest", "Repr-Digest", "Accept-Ranges")


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
