"""A raw-socket upstream that records the exact bytes it receives, and a strict HTTP/1.1 parser.

`RecordingUpstream` keeps each connection's bytes apart and answers every request it can frame
with a fixed `200 OK`. `parse_requests(raw)` frames a byte stream the way RFC 9112 says and no
other way (CRLF only, one Content-Length or `Transfer-Encoding: chunked`, token header names,
no obs-fold); it raises `Unframed` for anything else. A test that proves "the upstream saw
exactly one request, framed as homeproxy framed it" parses every recorded connection with it
and finds one request and no byte left over: a smuggled second request would be either a
second parsed request or bytes after the first.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/1\.1$")
_HEX = re.compile(rb"^[0-9a-fA-F]{1,16}$")

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
"""What `RecordingUpstream` answers to every request."""


class Unframed(Exception):
    """The bytes are not one or more well-framed HTTP/1.1 requests."""


@dataclass
class Parsed:
    """One request as a strict parser framed it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str
    """`"length"`, `"chunked"` or `"none"`."""

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(b"\r\n", pos)
    if end < 0:
        raise EOFError
    line = data[pos:end]
    if b"\r" in line or b"\n" in line:
        raise Unframed(f"bare CR or LF in {line!r}")
    return line, end + 2


def parse_one(data: bytes, pos: int = 0) -> tuple[Parsed, int]:
    """The request starting at `pos` and where the next one starts; EOFError when it is incomplete."""
    line, pos = _line(data, pos)
    m = _REQUEST_LINE.match(line)
    if m is None:
        raise Unframed(f"bad request line {line!r}")
    headers: list[tuple[str, str]] = []
    while True:
        line, pos = _line(data, pos)
        if not line:
            break
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise Unframed(f"bad header line {line!r}")
        if b"\x00" in value:
            raise Unframed(f"NUL in {line!r}")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    lowered = [(k.lower(), v) for k, v in headers]
    te = [v for k, v in lowered if k == "transfer-encoding"]
    cl = [v for k, v in lowered if k == "content-length"]
    if te and cl:
        raise Unframed("Content-Length and Transfer-Encoding")
    if len(te) > 1 or len(cl) > 1:
        raise Unframed("a framing header twice")
    if te:
        if te[0] != "chunked":
            raise Unframed(f"Transfer-Encoding {te[0]!r}")
        body = b""
        while True:
            line, pos = _line(data, pos)
            size_text = line.partition(b";")[0]
            if not _HEX.match(size_text):
                raise Unframed(f"bad chunk size {line!r}")
            size = int(size_text, 16)
            if size == 0:
                while True:  # trailer fields, then the blank line
                    line, pos = _line(data, pos)
                    if not line:
                        break
                framing = "chunked"
                break
            if len(data) < pos + size + 2:
                raise EOFError
            body += data[pos : pos + size]
            if data[pos + size : pos + size + 2] != b"\r\n":
                raise Unframed("chunk data not followed by CRLF")
            pos += size + 2
    elif cl:
        if not cl[0].isdigit():
            raise Unframed(f"Content-Length {cl[0]!r}")
        n = int(cl[0])
        if len(data) < pos + n:
            raise EOFError
        body, framing = data[pos : pos + n], "length"
        pos += n
    else:
        body, framing = b"", "none"
    method, target = (g.decode("latin-1") for g in m.groups())
    return Parsed(method, target, headers, body, framing), pos


def parse_requests(data: bytes) -> list[Parsed]:
    """Every request in `data`, which must end exactly where the last one does."""
    out: list[Parsed] = []
    pos = 0
    while pos < len(data):
        try:
            request, pos = parse_one(data, pos)
        except EOFError:
            raise Unframed(
                f"{len(data) - pos} bytes left that are no whole request: {data[pos : pos + 80]!r}"
            ) from None
        out.append(request)
    return out


@dataclass
class RecordingUpstream:
    """A bare TCP upstream: every connection's bytes, kept apart; `OK` for each framed request."""

    connections: list[bytearray] = field(default_factory=list)
    closed: int = 0
    """Connections that ended (either side closed)."""
    errors: list[str] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = bytearray()
        self.connections.append(raw)
        pos = 0
        try:
            while data := await reader.read(65536):
                raw += data
                while True:
                    try:
                        _, pos = parse_one(bytes(raw), pos)
                    except EOFError:
                        break
                    writer.write(OK)
                await writer.drain()
        except Unframed as e:
            self.errors.append(str(e))
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()

    @property
    def raw(self) -> bytes:
        return b"".join(self.connections)

    def complete(self) -> list[Parsed]:
        """The whole requests received so far (an unfinished one at a connection's end left out)."""
        out: list[Parsed] = []
        for raw in self.connections:
            data, pos = bytes(raw), 0
            while pos < len(data):
                try:
                    request, pos = parse_one(data, pos)
                except EOFError:
                    break
                out.append(request)
        return out

    def requests(self) -> list[Parsed]:
        """Every request received, each connection parsed strictly on its own (`Unframed` if any
        connection holds anything but whole, well-framed requests)."""
        return [r for raw in self.connections for r in parse_requests(bytes(raw))]
