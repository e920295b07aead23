"""homeproxy's mDNS against avahi-daemon, an independent implementation, in a private network namespace.

The test (in the root namespace) makes a namespace with only `lo`, starts a private
D-Bus and avahi-daemon in it (`allow-interfaces=lo`), publishes with avahi's own
tools, and runs homeproxy's side (`avahi_child.py`) inside it. Nothing leaves the
namespace (the network rule). Checks:

(a) `avahi-publish-service NAS _http._tcp 5000 path=/ui` is found by homeproxy's `Browser`;
(b) a name the `Publisher` announces resolves with `avahi-resolve -4 -n`;
(c) a name avahi already holds (`avahi-publish-address`) ends in "conflict" with avahi's address;
(d) after `Publisher.close()`, avahi no longer resolves the name (it heard the goodbye).

It skips when the machine cannot: not root, `ip netns` not permitted, avahi not installed,
or an avahi-daemon already running (only one per machine: fixed pid file and socket).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("ip", "dbus-daemon", "avahi-daemon", "avahi-publish-service", "avahi-publish-address", "avahi-resolve")
AVAHI_PID_FILE = Path("/run/avahi-daemon/pid")
HOLDER = "192.0.2.7"
"""The address avahi gives the name it holds (TEST-NET-1: nothing answers there, and it stays in the namespace)."""

AVAHI_CONF = """\
[server]
host-name=avahipeer
use-ipv6=no
allow-interfaces=lo
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces are Linux only")


#: What turns this test on, for the skip message: the packages `.ci/run` installs, as root.
ENABLE = (
    "to run it, as root: apt-get install -y --no-install-recommends avahi-daemon avahi-utils dbus iproute2 "
    "(what .ci/run does), then .venv/bin/python -m pytest tests/discovery/test_avahi_peer.py"
)


def _prerequisites() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}"
    with contextlib.suppress(OSError, ValueError):
        pid = int(AVAHI_PID_FILE.read_text().strip())
        os.kill(pid, 0)
        return f"an avahi-daemon already runs on this machine (pid {pid}); only one can run at a time"
    return None


class Lines:
    """A process's stdout, line by line, with a timeout (read by a thread)."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        """The first line (from now on) that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; output: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the process ended while waiting for {what}; output: {self.seen}")
            self.seen.append(line)
            if predicate(line):
                return line


class Namespace:
    """A network namespace with `lo` up, and the processes started in it (stopped by pid on close)."""

    def __init__(self, work: Path) -> None:
        self.name = f"hpt-avahi-{os.getpid()}-{secrets.token_hex(3)}"
        self.work = work
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={work / 'system_bus'}"}
        self.procs: list[subprocess.Popen[str]] = []
        self.created = False

    def create(self) -> str | None:
        """Make the namespace; the reason if this machine does not allow it."""
        made = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if made.returncode != 0:
            return f"ip netns not permitted here: {made.stderr.strip() or made.returncode}"
        self.created = True
        self.ip("link", "set", "lo", "up")
        # Multicast needs a route to leave a socket bound to lo; without a default route there is none.
        self.ip("route", "add", "224.0.0.0/4", "dev", "lo")
        return None

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True, text=True)

    def start(
        self, *cmd: str, stdin: int | None = subprocess.DEVNULL, env: dict[str, str] | None = None, **kwargs: Any
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *cmd],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env or self.env,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def run(self, *cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Namespace]:
    reason = _prerequisites()
    if reason:
        pytest.skip(f"avahi peer test skipped: {reason}; {ENABLE}")
    ns = Namespace(tmp_path)
    try:
        reason = ns.create()
        if reason:
            pytest.skip(f"avahi peer test skipped: {reason}")
        yield ns
    finally:
        ns.close()


def start_avahi(ns: Namespace) -> None:
    """A private system bus (avahi's clients find the daemon through it) and avahi-daemon on lo."""
    socket_path = ns.work / "system_bus"
    bus = subprocess.Popen(
        ["dbus-daemon", "--system", f"--address=unix:path={socket_path}", "--nopidfile", "--nofork"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ns.procs.append(bus)
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        assert bus.poll() is None, "dbus-daemon exited"
        assert time.monotonic() < deadline, "dbus-daemon did not create its socket"
        time.sleep(0.02)
    conf = ns.work / "avahi.conf"
    conf.write_text(AVAHI_CONF)
    avahi = ns.start("avahi-daemon", "-f", str(conf), "--no-chroot", "--no-drop-root", "--no-rlimits")
    assert avahi.stdout is not None
    Lines(avahi.stdout).wait_for(lambda line: "Server startup complete" in line, 15, "avahi-daemon's startup")


def test_homeproxy_and_avahi_see_each_other(netns: Namespace) -> None:
    start_avahi(netns)
    ns = netns
    plex, taken, nas = "plex.local", "taken.local", "NAS"

    service = ns.start("avahi-publish-service", nas, "_http._tcp", "5000", "path=/ui")
    address = ns.start("avahi-publish-address", "-R", taken, HOLDER)
    for proc, what in ((service, "the NAS service"), (address, taken)):
        assert proc.stdout is not None
        Lines(proc.stdout).wait_for(
            lambda line: line.startswith("Established under name"), 10, f"avahi to publish {what}"
        )

    child = ns.start(
        sys.executable,
        "-m",
        "tests.discovery.avahi_child",
        plex,
        taken,
        nas,
        stdin=subprocess.PIPE,
        cwd=ROOT,
        # The working tree's homeproxy, as pytest imports it (not an installed copy).
        env={**ns.env, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None and child.stdin is not None
    out = Lines(child.stdout)

    def step(name: str, timeout: float) -> dict[str, Any]:
        line = out.wait_for(lambda line: line.startswith("{") and json.loads(line)["step"] == name, timeout, name)
        result: dict[str, Any] = json.loads(line)
        return result

    # (a) avahi's service, found and resolved by homeproxy's Browser.
    browsed = step("browsed", 20)
    assert "error" not in browsed, browsed
    assert (browsed["port"], browsed["path"], browsed["properties"]) == (5000, "/ui", {"path": "/ui"})
    assert browsed["host"] == "avahipeer.local."
    assert "127.0.0.1" in browsed["addresses"]

    # (b) and (c): the publisher's view.
    applied = step("applied", 20)
    assert applied["states"][plex] == ["announced", ["127.0.0.1"], []]
    assert applied["states"][taken] == ["conflict", [], [HOLDER]]
    assert "NameConflict" in applied["events"] and "NameAnnounced" in applied["events"]

    # (b) avahi resolves what homeproxy announces.
    start = time.monotonic()
    resolved = ns.run("avahi-resolve", "-4", "-n", plex, timeout=10)
    resolve_seconds = time.monotonic() - start
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.split() == [plex, "127.0.0.1"]
    # (c) and homeproxy did not answer for avahi's name: avahi still resolves it to its own address only.
    held = ns.run("avahi-resolve", "-4", "-n", taken, timeout=10)
    assert held.stdout.split() == [taken, HOLDER]

    # (d) goodbyes: avahi keeps a record one second after its goodbye (RFC 6762 §10.1), then drops
    # it; without the goodbye it would answer from its cache for the record's whole TTL (120 s).
    child.stdin.write("close\n")
    child.stdin.flush()
    closed = step("closed", 10)
    time.sleep(1.2)
    gone = ns.run("timeout", "2", "avahi-resolve", "-4", "-n", plex, timeout=10)
    assert gone.returncode != 0 and not gone.stdout.strip(), gone.stdout
    print(
        f"\nbrowse found avahi's service in {browsed['seconds']:.3f} s; apply settled in {applied['seconds']:.3f} s;"
        f" avahi-resolve answered in {resolve_seconds:.3f} s; close took {closed['seconds']:.3f} s"
    )
