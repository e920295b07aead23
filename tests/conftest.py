"""Shared fixtures. Every test runs with platformdirs pointed into its own tmp_path."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

#: Tests that share something of the whole machine, so that under pytest-xdist (`--dist loadgroup`,
#: pyproject's addopts) they all run in one worker, one after another: real mDNS on loopback (one UDP
#: port 5353 for every process: one test's adverts and probes are another's "other machine"),
#: avahi-daemon (one per machine), and the `homeproxy` processes started by the CLI and tmux tests
#: (they browse mDNS).
MACHINE_PATHS = ("tests/discovery/", "tests/e2e/", "tests/test_cli.py", "tests/test_demo.py")
MACHINE_TESTS = ("tests/tui/test_discovery.py::test_a_service_found_by_real_mdns_becomes_a_site_that_serves",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give the tests that must not overlap one `xdist_group`, and the TUI tests another.

    The TUI tests are bound by the CPU (Textual lays out and renders every change), most of the
    others by waiting on sockets and processes: the TUI's group keeps one worker busy with them
    while the other runs the rest, instead of both workers fighting over the cores for the TUI
    at the end. xdist hands out the biggest groups first. Without -n the marks change nothing.
    """
    for item in items:
        nodeid = item.nodeid
        if nodeid.startswith(MACHINE_PATHS) or nodeid.startswith(MACHINE_TESTS):
            item.add_marker(pytest.mark.xdist_group("machine"))
        elif nodeid.startswith("tests/tui/"):
            item.add_marker(pytest.mark.xdist_group("tui"))


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's machine: XDG dirs (platformdirs' source on Linux) go under tmp_path."""
    home = tmp_path / "home"
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("HOME", str(home))
    # The network rule: mDNS in tests (and in the homeproxy processes they start) stays on loopback.
    monkeypatch.setenv("HOMEPROXY_MDNS_INTERFACES", "127.0.0.1")
    # A Runtime sets the "homeproxy" logger's level from its config; don't let it leak into later tests.
    logger = logging.getLogger("homeproxy")
    level = logger.level
    yield
    logger.setLevel(level)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (for subprocesses that need a fixed one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[int]:
    """A real aiohttp backend on 127.0.0.1 answering every method and path with `handler`; yields its port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site.port
    finally:
        await runner.cleanup()
