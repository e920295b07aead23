"""Access log lines from hostile text (issue 14): whatever a request carries (newlines, ESC, C1
controls such as U+009B, which some terminals take for CSI, DEL, quotes, backslashes, line
separators, bidi overrides, bytes that are not UTF-8) gives exactly one line, with nothing a
terminal would act on, that reads back to the same text: JSON by `json.loads`, the combined
format by undoing its nginx-style `\\xHH` escapes. Seeded random events, then a real `Runtime`
fed by raw sockets with the bytes a client can get through the proxy."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tomlkit

from homeproxy.engine import AccessLog
from homeproxy.engine.accesslog import combined_line, json_line
from homeproxy.engine.events import RequestCompleted
from homeproxy.runtime import Runtime
from tests.engine.conftest import Backend, raw_request
from tests.engine.test_accesslog import event
from tests.engine.test_accesslog_formats import COMBINED
from tests.waiting import wait_for

#: What no line may hold raw: C0 and C1 controls, DEL, the line and paragraph separators, the bidi
#: overrides and isolates, and surrogates (which could not even be written as UTF-8).
RAW_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
#: Hostile characters a request's text may hold (U+DC80-U+DCFF: a byte that is not UTF-8, as
#: surrogateescape keeps it), and some harmless ones around them.
HOSTILE = (
    '"\\\x00\x07\x08\t\n\r\x0b\x0c\x1b\x1c\x1d\x1e\x7f\x80\x85\x9b\x9d\x9f\u2028\u2029\u202e\u2066\udc80\udc9b\udcff'
)
HARMLESS = "ab /?=&[]{}:,;-é€\u00a0\u200d\U0001f600"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
"""The combined format's month names, whatever the locale."""
STRINGS = ("client", "site", "host", "method", "path", "upstream", "cache", "error")


def hostile_texts(seed: int) -> Callable[[], str]:
    rng = random.Random(seed)
    alphabet = HOSTILE + HARMLESS

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))

    return text


def hostile_event(text: Callable[[], str], **changes: object) -> RequestCompleted:
    fields: dict[str, object] = {name: text() for name in STRINGS}
    fields["request_headers"] = (("User-Agent", text()), ("Referer", text()), ("X-Other", text()))
    fields.update(changes)
    return event(0, **fields)


def one_safe_line(line: str) -> None:
    """`line` is one line for every reader (Python's splitlines() breaks at more than \\n and \\r)
    and holds nothing a terminal would act on."""
    assert len(line.splitlines()) == 1, repr(line)
    assert RAW_UNSAFE.search(line) is None, repr(line)


def unescape_combined(field: str) -> str:
    """A quoted combined-format field back to the text it was made from: its `\\xHH` escapes
    are bytes, the rest UTF-8; bytes that are not UTF-8 come back as surrogateescape has them."""
    out = bytearray()
    for piece in re.split(r"(\\x[0-9A-F]{2})", field):
        if re.fullmatch(r"\\x[0-9A-F]{2}", piece):
            out.append(int(piece[2:], 16))
        else:
            assert "\\" not in piece, field  # a backslash is always escaped itself
            out += piece.encode("utf-8")
    return out.decode("utf-8", "surrogateescape")


# --- the lines ---------------------------------------------------------------------------


def test_json_lines_escape_esc_c1_and_separators_and_parse_back() -> None:
    text = hostile_texts(14)
    for _ in range(2000):
        ev = hostile_event(text)
        line = json_line(ev)
        one_safe_line(line)
        record = json.loads(line)
        assert {k: record[k] for k in STRINGS} == {k: getattr(ev, k) for k in STRINGS}


def test_json_line_escapes_what_the_json_encoder_leaves_alone() -> None:
    """json's encoder escapes only C0, `"` and `\\`: DEL, C1, U+2028, bidi controls and lone
    surrogates are escaped too, as \\uXXXX; UTF-8 text stays as it is."""
    ev = event(0, host="bücher.lan\x1b[31m", path="/\x9b2J\x85\x7f\u2028\u202e\udcff", error="é€")
    line = json_line(ev)
    assert '"host":"bücher.lan\\u001b[31m"' in line
    assert '"path":"/\\u009b2J\\u0085\\u007f\\u2028\\u202e\\udcff"' in line
    assert '"error":"é€"' in line
    # DEL alone on an ASCII line (the fast path's only check).
    assert '"path":"/a\\u007fb"' in json_line(event(0, path="/a\x7fb"))


def test_combined_lines_escape_everything_and_read_back() -> None:
    text = hostile_texts(15)
    for n in range(2000):
        ev = hostile_event(text, client=text().replace(" ", "").replace("\u00a0", ""), method=text() if n % 10 else "")
        line = combined_line(ev)
        one_safe_line(line)
        m = COMBINED.match(line)
        assert m, repr(line)
        ua, referer = ev.request_headers[0][1], ev.request_headers[1][1]
        request = f"{ev.method} {ev.path} -" if ev.method else "-"
        assert unescape_combined(m.group("request")) == request
        assert unescape_combined(m.group("agent")) == (ua or "-")
        assert unescape_combined(m.group("referer")) == (referer or "-")
        assert unescape_combined(m.group("client")) == (ev.client or "-")


def test_combined_time_is_the_events_second_in_utc() -> None:
    """The time is formatted once a second (cached): always the second datetime gives, rounding included."""
    rng = random.Random(17)
    times = [rng.uniform(1e9, 2e9) for _ in range(500)] + [1_700_000_000.9999996, 1_700_000_001.0, 1_699_999_999.5]
    for t in sorted(times) + times:
        m = COMBINED.match(combined_line(event(0, time=t)))
        assert m, t
        d = datetime.fromtimestamp(t, UTC)
        month = MONTHS[d.month - 1]
        assert m.group("time") == f"{d:%d}/{month}/{d.year}:{d:%H:%M:%S} +0000", t


def test_combined_line_writes_the_bytes_received() -> None:
    """nginx's \\xHH: a character as its UTF-8 bytes (U+009B is \\xC2\\x9B), a byte that was not
    UTF-8 as itself (U+DC9B, surrogateescape's 0x9B, is \\x9B)."""
    ev = event(0, path="/\x1b[2J\x9b\u202e\udc9b", request_headers=(("User-Agent", 'a"\\\x85\u2028'),))
    line = combined_line(ev)
    assert '"GET /\\x1B[2J\\xC2\\x9B\\xE2\\x80\\xAE\\x9B -"' in line
    assert line.endswith('"-" "a\\x22\\x5C\\xC2\\x85\\xE2\\x80\\xA8"')
    # A surrogate that no decoder makes (not U+DC80-U+DCFF) is escaped too, as surrogatepass writes it.
    assert '"GET /\\xED\\xA0\\x80 -"' in combined_line(event(0, path="/\ud800"))


@pytest.mark.parametrize("fmt", ["json", "combined"])
def test_the_file_holds_one_line_per_request_in_strict_utf8(tmp_path: Path, fmt: str) -> None:
    """What reaches the disk: no escape byte, no C1 control, no surrogate left for the file's
    error handler to write, and one line per request however the file is split."""
    text = hostile_texts(16)
    log = AccessLog(tmp_path / "access.log")
    log.configure(enabled=True, max_bytes=10**8, keep_files=1, format=fmt)
    batch = [hostile_event(text) for _ in range(300)]
    log.write(batch)
    log.close()

    raw = log.path.read_bytes()
    assert raw.count(b"\n") == len(batch) and b"\r" not in raw and b"\x1b" not in raw
    written = raw.decode("utf-8")  # strict: every character was valid UTF-8 on its own
    assert len(written.splitlines()) == len(batch)
    assert RAW_UNSAFE.search(written.replace("\n", "")) is None
    if fmt == "json":
        assert [json.loads(line)["path"] for line in written.splitlines()] == [ev.path for ev in batch]


# --- through a real runtime ----------------------------------------------------------------

StartRuntime = Callable[[str], Awaitable[Runtime]]


@pytest.fixture
async def runtime(tmp_path: Path, echo: Backend) -> AsyncIterator[StartRuntime]:
    """Factory: a real `Runtime` on 127.0.0.1:0 (one site, app.lan) writing the access log in a format."""
    started: list[Runtime] = []

    async def start(fmt: str) -> Runtime:
        doc = {
            "server": {"listen": ["127.0.0.1"], "http_port": 0, "drain_timeout": "2s"},
            "logging": {"access_log_format": fmt},
            "sites": [{"name": "app", "hosts": ["app.lan"], "upstreams": [echo.url]}],
        }
        path = tmp_path / f"{fmt}.toml"
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
        rt = Runtime(path, log_dir=tmp_path / fmt, data_dir=tmp_path / "data", discovery=False)
        started.append(rt)
        await asyncio.to_thread(rt.start, watch=False)
        return rt

    yield start
    for rt in started:
        await asyncio.to_thread(rt.stop)


#: What a client gets through the proxy's parser (it refuses ESC, DEL and bytes above 0x7F in the
#: request target, and control characters in header values): C1 controls as raw bytes (0x9B) and
#: as UTF-8 (C2 9B), a bidi override, quotes and backslashes in headers; bytes that are not UTF-8 in Host.
REQUESTS = (
    b'GET /known HTTP/1.1\r\nHost: app.lan\r\nUser-Agent: a\x9bb\xc2\x9b2J\xe2\x80\xae"q" \\\r\n'
    b"Referer: http://x/\xc2\x85\xe2\x80\xa8y\r\n",
    b"GET /[@click=app.quit] HTTP/1.1\r\nHost: caf\xe9\x9b.lan\r\nUser-Agent: [bold red]x[/]\r\n",
)


@pytest.mark.parametrize("fmt", ["json", "combined"])
async def test_hostile_requests_through_a_real_runtime(runtime: StartRuntime, fmt: str) -> None:
    rt = await runtime(fmt)
    assert rt.engine is not None
    port = rt.engine.addresses[0][1]
    for head in REQUESTS:
        await raw_request(port, head + b"Connection: close\r\n\r\n")
    path = rt.access_log.path
    await wait_for(lambda: path.exists() and path.read_bytes().count(b"\n") == len(REQUESTS), description="two lines")

    raw = path.read_bytes()
    assert b"\x1b" not in raw and b"\x9b" not in raw and b"\xc2" not in raw and b"\xe2" not in raw
    known, unknown = raw.decode("utf-8").splitlines()
    one_safe_line(known)
    one_safe_line(unknown)
    if fmt == "json":
        assert json.loads(known)["path"] == "/known"
        assert json.loads(unknown)["host"] == "caf\udce9\udc9b.lan"  # as the engine decoded it
        assert '"host":"caf\\udce9\\udc9b.lan"' in unknown
    else:
        m = COMBINED.match(known)
        assert m, known
        assert m.group("agent") == "a\\x9Bb\\xC2\\x9B2J\\xE2\\x80\\xAE\\x22q\\x22 \\x5C"
        assert unescape_combined(m.group("agent")) == 'a\udc9bb\x9b2J\u202e"q" \\'
        assert m.group("referer") == "http://x/\\xC2\\x85\\xE2\\x80\\xA8y"
        m = COMBINED.match(unknown)
        assert m, unknown
        assert m.group("request", "agent") == ("GET /[@click=app.quit] -", "[bold red]x[/]")
