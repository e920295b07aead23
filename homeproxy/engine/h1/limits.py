"""What homeproxy's HTTP/1.1 server takes from a client, and how it says no.

The fixed limits (the configurable ones, with nginx's defaults, are `ServerSettings`'
`max_*` and `*_timeout` in the config's `[server]` table), `Refused` (raised in a parser
callback: the request gets `status` and the connection closes), `check_head()`, the
checks on a parsed head that llhttp does not make itself, and `refuse_connect()`, the 405
every CONNECT gets.
"""

from __future__ import annotations

from multidict import CIMultiDict

MAX_CHUNK_LINE = 16 * 1024
"""Bytes of chunk framing without progress (a chunk-size line with its extensions, or a trailer
field) a chunked request body may send: more is a 413 (Node's limit, CVE-2024-22019).
llhttp reads extensions without keeping them, but httptools keeps a trailer field being read."""
MAX_QUEUED = 8
"""Pipelined requests parsed ahead of the one being answered before reading pauses."""
LINGER_TIME = 10.0
LINGER_BYTES = 4 * 1024 * 1024
"""After an answer given before the request's body was in (a 413, a 401), the rest of the body is
read and dropped for up to this long and this much, so the client gets to read the answer
instead of a reset (aiohttp's and nginx's lingering close)."""
SWEEP_EVERY = 1.0
WRITE_HIGH_WATER = 512 * 1024
"""Bytes waiting for a client before a streamed response stops reading its upstream."""


ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
"""The `Allow` header of the 405 a CONNECT gets (RFC 9110 section 15.5.6 requires one): the methods
a site's upstream is commonly asked; homeproxy passes any other method on too, but never CONNECT."""


class Refused(Exception):
    """Raised in a parser callback: the request is refused with `status`, and `headers` on the page."""

    def __init__(self, status: int, why: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.headers = headers


def refuse_connect() -> Refused:
    """CONNECT asks for a tunnel to any host (RFC 9110 section 9.3.6): a forward proxy's job.
    homeproxy is a reverse proxy, so it is refused with a 405 before any routing: routed by its
    Host like another request, it would reach a site's upstream (or `default_site`'s)."""
    return Refused(405, "CONNECT (homeproxy is a reverse proxy, not a forward proxy)", (("Allow", ALLOW),))


def check_head(version: str, target: str, headers: CIMultiDict[str]) -> tuple[bool, int | None]:
    """(chunked, Content-Length) of a request head llhttp accepted, or `Refused`: a version other
    than HTTP/1.0 and 1.1 (505), two Host headers, HTTP/1.1 without one, Transfer-Encoding on
    HTTP/1.0 or other than `chunked`.
    An absolute-form target's authority becomes the Host header (RFC 9112 section 3.2.2), for
    the routing and for every header that quotes Host further on."""
    if version not in ("1.1", "1.0"):
        # llhttp reads `HTTP/2.0` or `HTTP/0.9` heads as it reads 1.x ones; they are not framed so.
        raise Refused(505, f"HTTP/{version} is not supported")
    hosts = headers.getall("Host", ())
    if len(hosts) > 1:
        raise Refused(400, "two Host headers")
    if target[:1] not in ("/", "*"):
        # absolute-form: the target's authority is the host (RFC 9112 section 3.2.2), for the
        # routing and for every header that quotes Host further on.
        authority = target.partition("//")[2].partition("/")[0].partition("?")[0].rpartition("@")[2]
        headers["Host"] = authority
    elif not hosts and version == "1.1":
        raise Refused(400, "no Host header")
    te = "Transfer-Encoding" in headers
    if te:
        if version != "1.1":
            raise Refused(400, "Transfer-Encoding on HTTP/1.0")
        if headers["Transfer-Encoding"].strip().lower() != "chunked":
            # llhttp has checked that chunked comes last; any other coding is not ours to undo
            raise Refused(400, "transfer coding other than chunked")
    length: int | None = None
    if not te:
        cl = headers.get("Content-Length")
        if cl is not None:
            length = int(cl)  # llhttp has checked it: digits only, one value
    return te, length


def reason(e: Exception) -> str:
    """Why llhttp refused a request, in homeproxy's words (first line only, bounded)."""
    name = type(e).__name__.removeprefix("HttpParser").removesuffix("Error")
    return f"unparsable request ({name or 'syntax'})"
