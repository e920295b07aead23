"""`homeproxy demo`: real backends, a real proxy and real traffic, all on loopback, and nothing left after."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from textual.widgets import DataTable

from homeproxy import paths
from homeproxy.cli import build_parser, main
from homeproxy.demo import CLIENTS, PASSWORD, SITES, USER, Demo, DemoApp, host_of
from homeproxy.engine import RequestCompleted
from tests.waiting import wait_for, wait_for_sync

#: Fast enough that the waits below are short, still far from a load test.
RATE = 40.0


def refused(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` any more."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def in_thread(fn: Callable[[], object], description: str) -> None:
    """Run a blocking call in a thread of its own (not the loop's executor, whose threads
    would stay and blur the count of threads left behind)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, name=f"test-{description}")
    thread.start()
    await wait_for(lambda: not thread.is_alive(), timeout=60, description=description)
    if errors:
        raise errors[0]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def fetch(port: int, site: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host_of(site), **(headers or {})}) as r,
    ):
        await r.read()
        return r.status, dict(r.headers)


async def test_the_demo_serves_its_sites_with_live_traffic_and_leaves_nothing_behind() -> None:
    threads_before = set(threading.enumerate())
    demo = Demo(rate=RATE, seed=1)
    await in_thread(demo.start, "demo start")
    try:
        runtime = demo.runtime
        assert runtime is not None and runtime.engine is not None and demo.directory is not None
        directory = demo.directory
        config = runtime.store.config
        # Everything on loopback: the proxy, and the backends behind every site.
        assert config.server.listen == ("127.0.0.1",)
        assert all(host == "127.0.0.1" for host, _ in runtime.engine.addresses)
        assert [s.name for s in config.sites] == list(SITES)
        assert all(u.startswith("http://127.0.0.1:") for s in config.sites for u in s.upstream_urls)
        port = runtime.engine.addresses[0][1]

        # The generator's requests arrive on the bus by themselves.
        sub = runtime.bus.subscribe("test", maxlen=10_000)
        seen: list[RequestCompleted] = []

        def enough() -> bool:
            seen.extend(sub.drain())
            return len({e.site for e in seen if e.status < 400}) >= 3

        await wait_for(enough, timeout=20, description="the generator's traffic on the bus")
        assert {e.client for e in seen} <= set(CLIENTS)  # LAN clients, by trusted X-Forwarded-For

        # Each site answers through the proxy.
        status, _ = await fetch(port, "homeassistant", "/api/states")
        assert status == 200
        status, _ = await fetch(port, "plex", "/library/sections")
        assert status == 200
        status, headers = await fetch(port, "nextcloud", "/core/css/server.css")
        assert status == 200 and "Cache-Control" in headers
        status, _ = await fetch(port, "grafana", "/api/health", basic(USER, PASSWORD))
        assert status == 200
        status, headers = await fetch(port, "grafana", "/api/health")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        status, _ = await fetch(port, "grafana", "/api/health", basic(USER, "wrong"))
        assert status == 401
        # The demo's config is its own, in its temporary directory; the user's is not created.
        assert runtime.config_path == directory / "config.toml"
        assert not paths.default_config_path().exists()
        backend_ports = list(demo.backend_ports.values())
    finally:
        await in_thread(demo.stop, "demo stop")

    assert not directory.exists()
    assert demo.runtime is None
    assert all(refused(p) for p in [port, *backend_ports])
    # Executor threads wind down on their own once their loop closed; give them a moment.
    await wait_for(lambda: set(threading.enumerate()) <= threads_before, description="the demo's threads to end")


async def test_the_tui_sees_the_demo_traffic() -> None:
    demo = Demo(rate=RATE, seed=2)
    await in_thread(demo.start, "demo start")
    try:
        app = DemoApp(demo)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(lambda: app.requests.total >= 5, timeout=20, description="requests in the TUI")
            assert {ev.site for ev in app.requests} <= {*SITES, ""}
            assert app.screen.query_one("#sites", DataTable).row_count == len(SITES)
            welcome = [str(n.message) for n in app._notifications if n.title == "Welcome to the demo"]
            assert welcome and f"password {PASSWORD}" in welcome[0] and "grafana.localhost" in welcome[0]
            await pilot.press("q")
            await wait_for(lambda: not app.is_running, description="the app to quit")
    finally:
        await in_thread(demo.stop, "demo stop")


def test_the_demo_command_runs_the_app_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`homeproxy demo` as the CLI runs it, with the terminal UI replaced by a wait for traffic."""
    seen: dict[str, Path] = {}

    def run(self: DemoApp) -> None:
        sub = self.runtime.bus.subscribe("test")
        wait_for_sync(lambda: len(sub.drain()) > 0, timeout=20, description="demo traffic")
        assert self.demo.directory is not None
        seen["directory"] = self.demo.directory

    monkeypatch.setattr(DemoApp, "run", run)
    assert main(["demo", "--rate", "50"]) == 0
    assert not seen["directory"].exists()
    out = capsys.readouterr().out
    assert "grafana.localhost" in out and f"password {PASSWORD}" in out and "removed" in out


def test_the_demo_rate_is_checked() -> None:
    assert build_parser().parse_args(["demo"]).rate == 3.0
    assert build_parser().parse_args(["demo", "--rate", "0.5"]).rate == 0.5
    for bad in ("0", "-1", "many"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["demo", "--rate", bad])
    with pytest.raises(ValueError):
        Demo(rate=0)
