"""The access log: one line per request, JSON or the combined log format, rotated by size.

A bus subscriber (run by a `Consumer` thread, never on the proxy's loop).
`access.log` rolls to `access.log.1` ... `access.log.N` when it passes
`max_bytes`; the oldest is removed. The file is `access.log` in the user log
dir unless the config names another. Sites with `access_log = false` are left out.
"""

from __future__ import annotations

import contextlib
import json
import json.encoder
import logging
import math
import os
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
#: Characters a quoted combined-format field cannot hold as they are: `"`, `\` and control characters
#: (nginx writes them as \xHH too, so one request cannot forge a second log line or field).
_ESCAPES = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x22, 0x5C, 0x7F)}


def json_line(ev: RequestCompleted) -> str:
    """One event as a JSON object (headers left out: they are the TUI's, not the log's).

    Written field by field with the json module's own string encoder (the same escaping as
    `json.dumps(..., ensure_ascii=False)`) and the time's seconds formatted once a second:
    about 20 times cheaper than `json.dumps(asdict(ev))`, and this runs once per request."""
    q = _quote
    return (
        f'{{"time":"{_iso_ms(ev.time)}","client":{q(ev.client)},"site":{q(ev.site)},"host":{q(ev.host)},'
        f'"method":{q(ev.method)},"path":{q(ev.path)},"status":{ev.status},"bytes_in":{ev.bytes_in},'
        f'"bytes_out":{ev.bytes_out},"upstream":{q(ev.upstream)},"cache":{q(ev.cache)},"error":{q(ev.error)},'
        f'"duration_ms":{ev.duration * 1000:.3f}}}'  # the same number as round(ms, 3), a third of the cost
    )


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
    come from the request's headers when the event has them, else "-". Time is UTC."""
    t = datetime.fromtimestamp(ev.time, UTC)
    when = f"{t.day:02d}/{_MONTHS[t.month - 1]}/{t.year}:{t:%H:%M:%S} +0000"
    request = f"{ev.method} {ev.path} -" if ev.method else "-"  # a malformed request has no method
    referer = user_agent = "-"
    for name, value in ev.request_headers:
        lower = name.lower()
        if lower == "referer":
            referer = value
        elif lower == "user-agent":
            user_agent = value
    return (
        f'{ev.client or "-"} - - [{when}] "{_quoted(request)}" {ev.status} {ev.bytes_out} '
        f'"{_quoted(referer)}" "{_quoted(user_agent)}"'
    )


def _quoted(text: str) -> str:
    return text.translate(_ESCAPES) or "-"


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
