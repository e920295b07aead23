"""The access log: one JSON object per request, one per line, rotated by size.

A bus subscriber (run by a `Consumer` thread, never on the proxy's loop).
`access.log` rolls to `access.log.1` ... `access.log.N` when it passes
`max_bytes`; the oldest is removed. The file is `access.log` in the user log
dir unless the config names another.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from homeproxy.engine.events import RequestCompleted


class AccessLog:
    """Writes `RequestCompleted` batches as JSON lines to `path`."""

    def __init__(self, path: Path, *, max_bytes: int = 10 * 1024 * 1024, keep_files: int = 7) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.enabled = True
        self._file: IO[str] | None = None
        self._reopen = False

    def configure(self, *, enabled: bool, max_bytes: int, keep_files: int, path: Path | None = None) -> None:
        """Take new settings (from a config change); applied at the next batch."""
        self.enabled, self.max_bytes, self.keep_files = enabled, max_bytes, keep_files
        if path is not None and Path(path) != self.path:
            self.path = Path(path)
            self._reopen = True

    def write(self, batch: Sequence[RequestCompleted]) -> None:
        """Append a batch; rotate first if the file is full."""
        if not self.enabled:
            self.close()
            return
        if self._reopen:
            self.close()
            self._reopen = False
        f = self._open()
        lines = []
        for ev in batch:
            record = asdict(ev)
            del record["request_headers"], record["response_headers"]  # the TUI's, not the log's
            record["time"] = datetime.fromtimestamp(ev.time, UTC).isoformat(timespec="milliseconds")
            record["duration_ms"] = round(record.pop("duration") * 1000, 3)
            lines.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        f.write("\n".join(lines) + "\n")
        f.flush()
        if f.tell() >= self.max_bytes:
            self._rotate()

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
