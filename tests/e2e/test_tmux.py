"""End to end, as a person would: the installed `homeproxy` console script in a real terminal
(tmux), a site added with keystrokes, and curl through the proxy to a real backend."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.waiting import wait_for_sync

pytestmark = pytest.mark.skipif(not shutil.which("tmux") or not shutil.which("curl"), reason="needs tmux and curl")

SCRIPT = Path(sys.executable).with_name("homeproxy")


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from the backend at {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class Terminal:
    """A tmux session running one command."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.name = f"hp-e2e-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
        line = f"env {exports} " + " ".join(_quote(c) for c in command)
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "120", "-y", "40", line], check=True)

    def screen(self) -> str:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *(["-l"] if literal else []), *keys], check=True)

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        try:
            wait_for_sync(lambda: text in self.screen(), timeout=timeout, description=repr(text))
        except AssertionError:
            raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}") from None

    def wait_until(self, predicate: Callable[[str], bool], description: str, timeout: float = 20.0) -> None:
        """Poll the screen until `predicate(screen)` holds."""
        try:
            wait_for_sync(lambda: predicate(self.screen()), timeout=timeout, description=description)
        except AssertionError:
            raise AssertionError(f"never: {description}; the screen:\n{self.screen()}") from None

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def _field_line(screen: str, label: str) -> str:
    """What the site form shows right of `label` (e.g. "closet    ...")."""
    for line in screen.splitlines():
        rest = line.strip("█ ").removeprefix(label)
        if rest != line.strip("█ ") and rest.startswith("  "):
            return rest.strip() + " "
    raise AssertionError(f"no {label!r} field on the screen:\n{screen}")


def _first_upstream(screen: str) -> str:
    """The first row of the site form's upstream list (the line under its "Upstream URL" header)."""
    lines = [line.strip("█ ") for line in screen.splitlines()]
    for i, line in enumerate(lines[:-1]):
        if line.startswith("Upstream URL"):
            return lines[i + 1] + " "
    raise AssertionError(f"no upstream list on the screen:\n{screen}")


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def test_add_a_site_with_keystrokes_and_curl_through_it(tmp_path: Path, backend: int) -> None:
    assert SCRIPT.exists(), f"the console script is not installed next to {sys.executable}"
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'# my proxy\n[server]\nlisten = ["127.0.0.1"]\nhttp_port = {port}\n\n[logging]\naccess_log = false\n',
        encoding="utf-8",
    )
    env = {k: os.environ[k] for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "HOME")}
    env["TERM"] = "xterm-256color"
    term = Terminal([str(SCRIPT), "--config", str(config)], env)
    try:
        term.wait_for("serving")
        term.keys("2")
        term.wait_for("Sites")
        term.keys("a")
        term.wait_for("esc Close")  # the editor is up and its name field has focus
        # Typed without pauses, Tabs included: each Tab must still move on to the next field.
        upstream = f"http://127.0.0.1:{backend}"
        term.keys("closet", literal=True)
        term.keys("Tab")
        term.keys("files.home.arpa", literal=True)
        term.keys("Tab")
        term.keys(upstream, literal=True)
        term.wait_until(
            lambda screen: _first_upstream(screen).startswith(upstream + " ") and "✓ Valid" in screen,
            "the upstream typed in its row, and the site valid",
        )
        screen = term.screen()
        assert _field_line(screen, "Name").startswith("closet "), screen
        assert _field_line(screen, "Hosts").startswith("files.home.arpa "), screen
        term.keys("C-s")
        try:
            wait_for_sync(lambda: "closet" in config.read_text(), timeout=20, description="the site in the file")
        except AssertionError:
            raise AssertionError(f"not saved; the screen:\n{term.screen()}") from None
        assert "# my proxy" in config.read_text()

        curl = subprocess.run(
            ["curl", "-s", "-H", "Host: files.home.arpa", f"http://127.0.0.1:{port}/from-curl"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert curl.stdout == "hello from the backend at /from-curl\n"

        term.keys("3")  # the request shows in Traffic
        term.wait_for("files.home.arpa/from")
        term.keys("q")
        wait_for_sync(lambda: not term.alive(), timeout=20, description="homeproxy to exit")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the port is released once the engine stopped
            if subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/"], capture_output=True).returncode != 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the proxy still answers after quitting")
    finally:
        term.kill()
