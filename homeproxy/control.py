"""The control socket: how `homeproxy certs` talks to the homeproxy that is running.

A running homeproxy (TUI or `serve`) listens on a Unix socket in its data directory
(`control.sock`, mode 0600 in a 0700 directory: only its user may connect). A client sends one
JSON line and reads JSON lines back:

    {"cmd": "certs"}                 -> {"certs": [status, ...]}
    {"cmd": "renew", "site": "ha"}   -> {"step": "order"} ... then {"done": status}
    anything else, or an unknown site -> {"error": "our own sentence"}

The server runs in its own thread and reads the engine only through its thread-safe
`certificates()` and `renew()`; it knows nothing of the TUI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import socketserver
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from homeproxy.certs.status import CertStatus, Renewal

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
RENEW_TIMEOUT = 300.0
"""Seconds a client waits for one renewal (an ACME order polls for up to 90 s per attempt)."""
_MAX_PATH = 86  # sun_path holds 108 bytes on Linux, and start() binds in a subdirectory first


class CertSource(Protocol):
    def certificates(self) -> tuple[CertStatus, ...]: ...

    def renew(self, site: str, follow: Renewal | None = None) -> None: ...


def socket_path(data_dir: Path) -> Path:
    """Where the homeproxy using `data_dir` listens: in it, or (a path too long for a Unix
    socket) in the temp dir under a name derived from it."""
    path = data_dir / SOCKET_NAME
    if len(os.fsencode(path)) <= _MAX_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(data_dir.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"homeproxy-{os.getuid()}-{digest}.sock"


def status_to_json(s: CertStatus) -> dict[str, Any]:
    out = asdict(s)
    for key in ("not_after", "next_renewal"):
        out[key] = out[key].isoformat() if out[key] is not None else None
    out["names"] = list(s.names)
    return out


def status_from_json(d: dict[str, Any]) -> CertStatus:
    d = dict(d)
    for key in ("not_after", "next_renewal"):
        d[key] = datetime.fromisoformat(d[key]) if d.get(key) else None
    d["names"] = tuple(d.get("names", ()))
    return CertStatus(**d)


class ControlServer:
    """The socket server of one running homeproxy; `start()` and `stop()` from any thread."""

    def __init__(self, source: Callable[[], CertSource | None], path: Path) -> None:
        self._source = source
        self.path = path
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Listen; False (and a warning) when another homeproxy already answers on the path."""
        if self.path.exists():
            if _answers(self.path):
                log.warning("another homeproxy uses %s; `homeproxy certs` talks to that one", self.path)
                return False
            self.path.unlink()  # left by a homeproxy that did not stop cleanly
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Bound in a fresh 0700 directory, made 0600, then moved into place: at no moment may
        # another user connect (a process-wide umask would race the other threads).
        private = Path(tempfile.mkdtemp(prefix=".control.", dir=self.path.parent))
        try:
            self._server = socketserver.ThreadingUnixStreamServer(
                str(private / SOCKET_NAME), _handler_for(self._source)
            )
            os.chmod(private / SOCKET_NAME, 0o600)
            os.replace(private / SOCKET_NAME, self.path)
        except OSError:
            if self._server is not None:
                self._server.server_close()
                self._server = None
            raise
        finally:
            with contextlib.suppress(OSError):
                (private / SOCKET_NAME).unlink()
            private.rmdir()
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="homeproxy-control", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = None


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _handler_for(source: Callable[[], CertSource | None]) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            def send(obj: dict[str, Any]) -> None:
                self.wfile.write(json.dumps(obj).encode() + b"\n")
                self.wfile.flush()

            line = self.rfile.readline(4096)
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError
            except ValueError:
                send({"error": "the request is not one JSON object on one line"})
                return
            engine = source()
            if engine is None:
                send({"error": "the engine is not running"})
                return
            for answer in serve_request(engine, request):
                send(answer)

    return Handler


def serve_request(engine: CertSource, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The answers to one request, in order."""
    cmd = request.get("cmd")
    if cmd == "certs":
        yield {"certs": [status_to_json(s) for s in engine.certificates()]}
        return
    if cmd == "renew":
        site = str(request.get("site", ""))
        follow = Renewal()
        try:
            engine.renew(site, follow)
        except KeyError:
            names = ", ".join(s.site for s in engine.certificates()) or "none"
            yield {"error": f'no TLS site named "{site}" (TLS sites: {names})'}
            return
        try:
            for _kind, value in follow.events(RENEW_TIMEOUT):
                if isinstance(value, CertStatus):
                    yield {"done": status_to_json(value)}
                else:
                    yield {"step": value}
        except TimeoutError:
            yield {"error": f"no outcome after {RENEW_TIMEOUT:.0f} s; the renewal may still finish"}
        return
    yield {"error": f"unknown command {cmd!r} (known: certs, renew)"}


def request(path: Path, obj: dict[str, Any], timeout: float = RENEW_TIMEOUT + 10) -> Iterator[dict[str, Any]]:
    """Send one request to the homeproxy on `path`; yields its answers. OSError if none listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(obj).encode() + b"\n")
        with s.makefile("rb") as f:
            for line in f:
                yield json.loads(line)
