"""The access log: one line per request, JSON or the combined log format, rotated by size.

A bus subscriber (run by a `Consumer` thread, never on the proxy's loop).
`access.log` rolls to `access.log.1` ... `access.log.N` when it passes
`max_bytes`; the oldest is removed. The file is `access.log` in the user log
dir unless the config names another. Sites with `access_log = false` are left out.
Whatever a request carries, it is one line, and nothing in it reaches the terminal of
whoever tails the log as a control sequence (see `_BEYOND_C0`).
"""

from __future__ import annotations

import contextlib
import json
import json.encoder
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from homeproxy.engine.events import RequestCompleted

log = logging.getLogger(__name__)

RETRY_AFTER = 5.0
"""Seconds between two tries to write after the log could not be written (a full disk)."""
Report = Callable[[str, bool], None]
"""Told `(message, failing)` once when writing starts failing and once when it works again."""

#: English month abbreviations of the combined format's time, whatever the process locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# SECURITY: text from the network must not forge a line or move the terminal of whoever runs
# `tail -f` on the log. Beyond the C0 controls (which JSON escapes anyway) that means DEL, the
# C1 controls (U+009B is CSI to some terminals, U+0085 a newline to some readers), the line and
# paragraph separators (Python's str.splitlines() breaks lines there), the bidi overrides and
# isolates (they reorder what a terminal shows), and lone surrogates: header bytes that are not
# UTF-8 arrive as U+DC80-U+DCFF (surrogateescape) and could not even be written as UTF-8.
_BEYOND_C0 = (0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_SURROGATES = range(0xD800, 0xE000)
#: What json_line escapes beyond what the json module's encoder does (it escapes only C0, `"` and `\`).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _utf8_escape(code: int) -> str:
    """A character as nginx writes an unsafe byte, `\\xHH` for each of its UTF-8 bytes; a byte that
    was not UTF-8 (surrogateescape's U+DCxx) as itself, so the escapes spell the bytes received."""
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02X}"
    return "".join(f"\\x{b:02X}" for b in chr(code).encode("utf-8", "surrogatepass"))


#: Characters a quoted combined-format field cannot hold as they are: `"`, `\`, the C0 controls
#: and the characters above (nginx writes them as \xHH too, so one request cannot forge a second
#: log line or field, nor reach the terminal of whoever reads the log).
_ESCAPES = {c: _utf8_escape(c) for c in (*range(0x20), 0x22, 0x5C, *_BEYOND_C0, *_SURROGATES)}


def json_line(ev: RequestCompleted) -> str:
    """One event as a JSON object (headers left out: they are the TUI's, not the log's).

    Written field by field with the json module's own string encoder (the same escaping as
    `json.dumps(..., ensure_ascii=False)`, UTF-8 kept as it is) and the time's seconds formatted
    once a second: about 20 times cheaper than `json.dumps(asdict(ev))`, and this runs once per
    request. DEL, C1 controls, line separators, bidi controls and lone surrogates are escaped too
    (`\\u009b`), so a line parses back to the event's text and shows as one line in a terminal."""
    q = _quote
    line = (
        f'{{"time":"{_iso_ms(ev.time)}","client":{q(ev.client)},"site":{q(ev.site)},"host":{q(ev.host)},'
        f'"method":{q(ev.method)},"path":{q(ev.path)},"status":{ev.status},"bytes_in":{ev.bytes_in},'
        f'"bytes_out":{ev.bytes_out},"upstream":{q(ev.upstream)},"cache":{q(ev.cache)},"error":{q(ev.error)},'
        f'"duration_ms":{ev.duration * 1000:.3f}}}'  # the same number as round(ms, 3), a third of the cost
    )
    # isascii() costs nothing (CPython knows it): only the rare line with text beyond ASCII has
    # its strings scanned (they are shorter than the line). Only a string can hold a character to
    # escape (the rest of the line is ours), so escaping them in the line escapes them in the strings.
    if line.isascii():
        if "\x7f" not in line:
            return line
    elif "".join((ev.client, ev.site, ev.host, ev.method, ev.path, ev.upstream, ev.cache, ev.error)).isprintable():
        return line
    return _JSON_UNSAFE.sub(_json_escape, line)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


_quote: Callable[[str], str] = json.encoder.encode_basestring
_second = -1
_second_text = ""


def _iso_ms(t: float) -> str:
    """`t` (seconds since the epoch) as ISO 8601 in UTC with milliseconds, e.g. 2026-12-07T20:40:00.123+00:00."""
    global _second, _second_text
    frac, whole = math.modf(t)  # as datetime.fromtimestamp rounds, to the same microsecond
    us = round(frac * 1_000_000)
    sec = int(whole) + (us >= 1_000_000)
    us %= 1_000_000
    if sec != _second:
        _second, _second_text = sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second_text}.{us // 1000:03d}+00:00"


def combined_line(ev: RequestCompleted) -> str:
    """One event in the combined log format:
    `client - user [time] "METHOD target PROTOCOL" status bytes "referer" "user-agent"`.

    The event carries no user and no protocol version, so both are "-"; Referer and User-Agent
    come from the request's headers when the event has them, else "-". Time is UTC.
    Text from the network is escaped as nginx does (`\\x1B`, `\\x22`; see `_ESCAPES`)."""
    request = f"{ev.method} {ev.path} -" if ev.method else "-"  # a malformed request has no method
    referer = user_agent = "-"
    for name, value in ev.request_headers:
        lower = name.lower()
        if lower == "referer":
            referer = value
        elif lower == "user-agent":
            user_agent = value
    return (
        f'{_quoted(ev.client)} - - [{_clf_time(ev.time)}] "{_quoted(request)}" {ev.status} {ev.bytes_out} '
        f'"{_quoted(referer)}" "{_quoted(user_agent)}"'
    )


def _quoted(text: str) -> str:
    """`text` with `_ESCAPES` applied, or "-" if empty."""
    # translate() looks every character up in a dict (4 µs for a User-Agent); most text needs
    # nothing, and these checks (all in C) say so in a tenth of that.
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text or "-"
    return text.translate(_ESCAPES)


_clf_second = -1
_clf_second_text = ""


def _clf_time(t: float) -> str:
    """`t` as the combined format's time in UTC, e.g. 14/Nov/2023:22:13:20 +0000 (formatted once a second)."""
    global _clf_second, _clf_second_text
    frac, whole = math.modf(t)  # the second datetime.fromtimestamp(t) would give, rounding included
    sec = int(whole) + (round(frac * 1_000_000) >= 1_000_000)
    if sec != _clf_second:
        d = datetime.fromtimestamp(sec, UTC)
        _clf_second_text = f"{d.day:02d}/{_MONTHS[d.month - 1]}/{d.year}:{d:%H:%M:%S} +0000"
        _clf_second = sec
    return _clf_second_text


FORMATTERS = {"json": json_line, "combined": combined_line}


class AccessLog:
    """Writes `RequestCompleted` batches to `path`, one line each, as JSON or in the combined format."""

    def __init__(
        self, path: Path, *, max_bytes: int = 10 * 1024 * 1024, keep_files: int = 7, report: Report | None = None
    ) -> None:
        self.path = Path(path)
        self.report = report
        """Hears once when the file cannot be written (a full disk, a read-only folder) and once
        when it can again; meanwhile lines are dropped (and counted), never the proxy held up."""
        self.failing = ""
        """Why the log cannot be written now ("" while it can)."""
        self.lost = 0
        """Lines dropped since the log started failing."""
        self._retry_at = 0.0
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.enabled = True
        self.format = "json"
        """"json" or "combined" (`FORMATTERS`)."""
        self.skip_sites: frozenset[str] = frozenset()
        """Sites whose requests are not written (`access_log = false`)."""
        self._file: IO[str] | None = None
        self._reopen = False

    def configure(
        self,
        *,
        enabled: bool,
        max_bytes: int,
        keep_files: int,
        path: Path | None = None,
        format: str = "json",
        skip_sites: frozenset[str] = frozenset(),
    ) -> None:
        """Take new settings (from a config change); applied at the next batch."""
        if format not in FORMATTERS:
            raise ValueError(f"unknown access log format {format!r}")
        self.enabled, self.max_bytes, self.keep_files = enabled, max_bytes, keep_files
        self.format, self.skip_sites = format, skip_sites
        if path is not None and Path(path) != self.path:
            self.path = Path(path)
            self._reopen = True
            self._retry_at = 0.0  # a new place: try it at once

    def write(self, batch: Sequence[RequestCompleted]) -> None:
        """Append a batch; rotate first if the file is full."""
        if not self.enabled:
            self.close()
            return
        if self._reopen:
            self.close()
            self._reopen = False
        skip, line = self.skip_sites, FORMATTERS[self.format]
        lines = [line(ev) for ev in batch if not skip or ev.site not in skip]
        if not lines:
            return
        if self.failing and time.monotonic() < self._retry_at:
            self.lost += len(lines)
            return
        try:
            f = self._open()
            f.write("\n".join(lines) + "\n")
            f.flush()
            if f.tell() >= self.max_bytes:
                self._rotate()
        except OSError as e:
            self._failed(e, len(lines))
            return
        if self.failing:
            message = f"access log {self.path} is written again ({self.lost} request lines were lost)"
            self.failing, self.lost = "", 0
            log.warning("%s", message)
            if self.report is not None:
                self.report(message, False)

    def _failed(self, error: OSError, lines: int) -> None:
        """Drop the batch; say so once; try again in a while."""
        with contextlib.suppress(OSError):
            self.close()  # the buffered tail would fail again on close
        self._file = None
        self.lost += lines
        self._retry_at = time.monotonic() + RETRY_AFTER
        if self.failing:
            return
        self.failing = error.strerror or str(error)
        message = (
            f"access log {self.path} cannot be written: {self.failing}; the proxy goes on, requests are not logged"
        )
        log.error("%s", message)
        if self.report is not None:
            self.report(message, True)

    def _open(self) -> IO[str]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # backslashreplace: a header with bytes that are not UTF-8 must not stop the log.
            self._file = open(self.path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        return self._file

    def _rotate(self) -> None:
        self.close()
        if self.keep_files <= 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.keep_files - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        # keep_files may have been lowered: drop what is now beyond it.
        for old in self.path.parent.glob(f"{self.path.name}.*"):
            suffix = old.name[len(self.path.name) + 1 :]
            if suffix.isdigit() and int(suffix) > self.keep_files:
                old.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
