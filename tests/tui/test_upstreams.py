"""Upstream health in the TUI, from the real engine: dots, toasts and the upstreams screen (`u`).

Two real backends on loopback behind one site with fast active checks; one is stopped (its
port then refuses) and started again on the same port, and the TUI follows what the engine
decides (its `UpstreamHealthChanged` events and `Engine.upstream_health()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from homeproxy.engine import UpstreamHealthChanged
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.dashboard import DashboardScreen
from homeproxy.tui.screens.sites import SitesScreen
from homeproxy.tui.screens.upstreams import UpstreamsScreen
from tests.waiting import wait_for


class Backend:
    """A real aiohttp backend on 127.0.0.1 that can stop and start again on the same port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(text=f"{self.name} {request.path}")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def backends() -> AsyncIterator[tuple[Backend, Backend]]:
    a, b = Backend("a"), Backend("b")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
async def web_runtime(tmp_path: Path, backends: tuple[Backend, Backend]) -> AsyncIterator[Runtime]:
    """A started Runtime with one site, "web", over both backends, checked every 200 ms."""
    a, b = backends
    path = tmp_path / "config.toml"
    path.write_text(
        '[server]\nlisten = ["127.0.0.1"]\nhttp_port = 0\n\n[logging]\naccess_log = false\n\n'
        f'[[sites]]\nname = "web"\nhosts = ["web.home.arpa"]\nupstreams = ["{a.url}", "{b.url}"]\n'
        'health = { path = "/", interval = "200ms", timeout = "1s", passes = 1, fails = 2 }\n',
        encoding="utf-8",
    )
    rt = Runtime(path, log_dir=tmp_path / "log", discovery=False)
    await asyncio.to_thread(rt.start)
    yield rt
    await asyncio.to_thread(rt.stop)


def dot_style(cell: object, url: str) -> str:
    """The style of the dot in front of `url` (with or without its scheme) in a table cell."""
    assert isinstance(cell, Text), cell
    at = cell.plain.find(url.removeprefix("http://")) - 2  # "● " before it
    assert at >= 0 and cell.plain[at] in "●◐○", (cell.plain, url)
    return " ".join(str(span.style) for span in cell.spans if span.start <= at < span.end)


def toasts(app: HomeproxyApp, title: str) -> list[tuple[str, str]]:
    """The message and severity of each toast with `title`."""
    return [(str(n.message), n.severity) for n in app._notifications if n.title == title]


async def requests(runtime: Runtime, count: int) -> list[str]:
    assert runtime.engine is not None
    base = f"http://127.0.0.1:{runtime.engine.addresses[0][1]}"
    async with aiohttp.ClientSession() as http:
        out = []
        for i in range(count):
            async with http.get(f"{base}/{i}", headers={"Host": "web.home.arpa"}) as r:
                out.append(await r.text())
        return out


async def test_a_stopped_upstream_turns_red_with_a_toast_and_green_again(
    web_runtime: Runtime, backends: tuple[Backend, Backend]
) -> None:
    a, b = backends
    app = HomeproxyApp(web_runtime)
    async with app.run_test(size=(120, 40)):
        await wait_for(lambda: isinstance(app.screen, DashboardScreen), description="the dashboard")
        table = app.screen.query_one("#sites", DataTable)
        # Each upstream has its own checker: a's first check may land a moment after b's.
        for url in (a.url, b.url):
            await wait_for(
                lambda url=url: "green" in dot_style(table.get_cell("web", "upstreams"), url),  # type: ignore[misc]
                description=f"{url} checked and up",
            )

        await b.stop()
        await wait_for(lambda: toasts(app, "Upstream down"), description="the down toast")
        [(message, severity)] = toasts(app, "Upstream down")
        assert message.startswith(f"web: {b.url} is down: 2 failed checks in a row")
        assert severity == "warning"
        await wait_for(lambda: "red" in dot_style(table.get_cell("web", "upstreams"), b.url), description="red dot")
        assert "green" in dot_style(table.get_cell("web", "upstreams"), a.url)
        assert app.health.up == {("web", a.url): True, ("web", b.url): False}

        await b.start()
        await wait_for(lambda: toasts(app, "Upstream back"), description="the back toast")
        [(message, severity)] = toasts(app, "Upstream back")
        assert message.startswith(f"web: {b.url} is back: 1 passing check")
        assert severity == "information"
        await wait_for(lambda: "green" in dot_style(table.get_cell("web", "upstreams"), b.url), description="green")


async def _open_upstreams(pilot: Pilot[None]) -> UpstreamsScreen:
    await pilot.press("u")
    await wait_for(lambda: isinstance(pilot.app.screen, UpstreamsScreen), description="the upstreams screen")
    screen = pilot.app.screen
    assert isinstance(screen, UpstreamsScreen)
    return screen


def cell(screen: UpstreamsScreen, url: str, column: str) -> str:
    value = screen.query_one("#upstreams-table", DataTable).get_cell(url, column)
    return value.plain if isinstance(value, Text) else str(value)


async def test_u_shows_each_upstreams_health_and_traffic(
    web_runtime: Runtime, backends: tuple[Backend, Backend]
) -> None:
    a, b = backends
    app = HomeproxyApp(web_runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await wait_for(lambda: isinstance(app.screen, SitesScreen), description="the Sites screen")
        sites = app.screen
        screen = await _open_upstreams(pilot)
        assert screen.site_name == "web"
        assert "checks GET / every 200ms" in str(screen.query_one("#upstreams-summary", Static).render())
        await wait_for(lambda: cell(screen, b.url, "state") == "● up", description="both checked: up")
        assert cell(screen, a.url, "state") == "● up"

        answers = await requests(web_runtime, 4)
        assert sorted(answer.split()[0] for answer in answers) == ["a", "a", "b", "b"]  # in turn
        await wait_for(lambda: cell(screen, a.url, "requests") == "2", description="the requests counted")
        assert [cell(screen, url, col) for url in (a.url, b.url) for col in ("errors", "share")] == [
            "0",
            "50%",
            "0",
            "50%",
        ]
        assert cell(screen, a.url, "p50").endswith(("ms", "µs"))
        assert "✓ 200" in cell(screen, a.url, "check")

        await b.stop()
        await wait_for(lambda: cell(screen, b.url, "state") == "● down", description="b down in the table")
        table = screen.query_one("#upstreams-table", DataTable)
        table.move_cursor(row=1)
        await wait_for(
            lambda: "2 failed checks in a row" in str(screen.query_one("#upstream-detail", Static).render()),
            description="the reason in the detail",
        )
        assert "✗" in cell(screen, b.url, "check")
        assert await requests(web_runtime, 2) == ["a /0", "a /1"]  # the down one is skipped

        await pilot.press("escape")
        await wait_for(lambda: app.screen is sites, description="back on the Sites screen")
        table = sites.query_one("#sites-table", DataTable)
        await wait_for(lambda: "red" in dot_style(table.get_cell("web", "upstreams"), b.url), description="red")

        await pilot.press("1")  # the dashboard's u opens the same screen for its selected site
        await wait_for(lambda: isinstance(app.screen, DashboardScreen), description="the dashboard")
        screen = await _open_upstreams(pilot)
        assert screen.site_name == "web" and cell(screen, b.url, "state") == "● down"


async def test_many_changes_at_once_make_three_toasts_and_a_count(web_runtime: Runtime) -> None:
    """A switch that loses every server at once must not bury the screen in toasts."""
    app = HomeproxyApp(web_runtime)
    async with app.run_test(size=(120, 40)):
        await wait_for(lambda: isinstance(app.screen, DashboardScreen), description="the dashboard")
        now = web_runtime.clock()
        for n in range(5):  # canned events, on the real bus, as the engine would publish them
            web_runtime.bus.publish(UpstreamHealthChanged(now, "web", f"http://10.9.9.{n}:80", False, "refused"))
        web_runtime.bus.publish(UpstreamHealthChanged(now, "web", "http://10.9.9.0:80", True, "cool-down over"))
        await wait_for(lambda: toasts(app, "Upstreams"), description="the count")
        assert len(toasts(app, "Upstream down")) == 3
        assert toasts(app, "Upstreams") == [
            ("and 2 more down, 1 more back (press u on a site for its upstreams)", "warning")
        ]


async def test_an_access_log_that_cannot_be_written_is_one_toast_not_one_per_request(
    tmp_path: Path, backends: tuple[Backend, Backend]
) -> None:
    """The access log on a full disk (/dev/full fails every write as a full disk does)."""
    a, _ = backends
    path = tmp_path / "config.toml"
    path.write_text(
        '[server]\nlisten = ["127.0.0.1"]\nhttp_port = 0\n\n[logging]\naccess_log = "/dev/full"\n\n'
        f'[[sites]]\nname = "web"\nhosts = ["web.home.arpa"]\nupstreams = ["{a.url}"]\n',
        encoding="utf-8",
    )
    rt = Runtime(path, log_dir=tmp_path / "log", discovery=False)
    await asyncio.to_thread(rt.start)
    try:
        app = HomeproxyApp(rt)
        async with app.run_test(size=(120, 40)):
            for _ in range(3):
                assert await requests(rt, 2) == ["a /0", "a /1"]  # served all the same
                await asyncio.sleep(0.3)  # a few of the log's batches
            await wait_for(lambda: toasts(app, "Access log problem"), description="the toast")
            [(message, severity)] = toasts(app, "Access log problem")
            assert message.startswith("access log /dev/full cannot be written: ")
            assert severity == "error"
    finally:
        await asyncio.to_thread(rt.stop)
