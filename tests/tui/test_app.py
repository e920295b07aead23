"""The small TUI, driven through Pilot against a real engine and backend."""

from __future__ import annotations

import aiohttp
from rich.cells import cell_len
from textual.widgets import DataTable, Static

from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.dashboard import COLUMNS, PADDING, SPARK_SECONDS, table_layout
from tests.waiting import wait_for


def _cell(app: HomeproxyApp, row: str, column: str) -> str:
    return str(app.screen.query_one("#sites", DataTable).get_cell(row, column))


def _text(app: HomeproxyApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def test_shows_sites_and_counts_real_requests(runtime: Runtime) -> None:
    assert runtime.engine is not None
    port = runtime.engine.addresses[0][1]
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 30)) as pilot:
        assert _cell(app, "files", "hosts") == "files.home.arpa"
        assert f"http://127.0.0.1:{port}" in _text(app, "#engine-status")
        assert "https://" not in _text(app, "#engine-status")  # no TLS site, no HTTPS listener
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.get(f"http://127.0.0.1:{port}/x", headers={"Host": "files.home.arpa"}) as r:
                    assert r.status == 200
                    assert await r.text() == "hello from backend /x"
        await wait_for(lambda: app.requests.total == 3, description="3 requests in the TUI")
        await wait_for(lambda: "3 requests" in _text(app, "#engine-status"), description="the status shows 3")
        assert [ev.path for ev in app.requests] == ["/x", "/x", "/x"]
        await pilot.pause()


async def test_hand_edit_appears_and_bad_edit_shows_banner(runtime: Runtime, backend: int) -> None:
    app = HomeproxyApp(runtime)
    path = runtime.config_path
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one("#sites", DataTable)
        path.write_text(
            path.read_text()
            + f'\n[[sites]]\nname = "media"\nhosts = ["media.home.arpa"]\nupstreams = ["http://127.0.0.1:{backend}"]\n'
        )
        await wait_for(lambda: table.row_count == 2, description="the new site in the table")
        assert _cell(app, "media", "upstreams") == f"● 127.0.0.1:{backend}"

        path.write_text(path.read_text().replace('name = "media"', 'name = "media"\nwebsokets = true'))
        banner = app.screen.query_one("#banner", Static)
        await wait_for(lambda: banner.has_class("-visible"), description="the error banner")
        assert "websokets" in _text(app, "#banner") and 'did you mean "websockets"' in _text(app, "#banner")
        assert ":17:" in _text(app, "#banner")  # the line of the bad key
        assert table.row_count == 2  # still the last good config
        await pilot.pause()


async def test_network_text_is_not_markup(runtime: Runtime) -> None:
    """A site name that looks like markup is shown literally (it could come from mDNS later)."""
    site = runtime.store.config.sites[0]
    from dataclasses import replace

    runtime.store.update_site(site.name, replace(site, name="[red]x[/red] [@click=app.quit]"))
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 30)) as pilot:
        assert _cell(app, "[red]x[/red] [@click=app.quit]", "name") == "[red]x[/red] [@click=app.quit]"
        await pilot.click("#sites")
        assert app.is_running


async def test_q_quits_and_runtime_stops(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("q")
        await wait_for(lambda: not app.is_running, description="the app to exit")
    runtime.stop()
    assert runtime.engine is not None and not runtime.engine.running


async def test_r_reloads_without_blocking_and_says_when_nothing_changed(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(
            lambda: any("has not changed" in str(n.message) for n in app._notifications),
            description="the 'not changed' toast",
        )


# --- the dashboard's width ---------------------------------------------------------------


def test_table_layout_fits_any_width_dropping_the_optional_columns_in_order() -> None:
    natural = {"name": 13, "hosts": 15, "upstreams": 17}
    everything = tuple(key for key, _ in COLUMNS)
    wide = table_layout(200, natural)
    assert wide.columns == everything and wide.spark == SPARK_SECONDS
    assert table_layout(117, natural).columns == everything  # 120 columns (less the scrollbar and margin)
    assert "upstreams" not in table_layout(100, natural).columns
    narrow = table_layout(77, natural)  # 80 columns
    assert "hosts" not in narrow.columns and "upstreams" not in narrow.columns and "p50" in narrow.columns
    assert "p50" not in table_layout(62, natural).columns
    for width in range(56, 220):
        plan = table_layout(width, natural)
        assert sum(plan.widths) + PADDING * len(plan.widths) <= width, width
        assert plan.spark % 5 == 0 and 10 <= plan.spark <= SPARK_SECONDS
    # Long hosts and upstreams are cut (with "…") before a column is given up.
    demo = table_layout(117, {"name": 13, "hosts": 27, "upstreams": 24})
    assert demo.columns == everything
    widths = dict(zip(demo.columns, demo.widths, strict=True))
    assert 16 <= widths["hosts"] < 27 and 16 <= widths["upstreams"] < 24 and demo.spark >= 10
    long_names = table_layout(80, {"name": 60, "hosts": 40, "upstreams": 40})
    assert long_names.columns[0] == "name" and sum(long_names.widths) + PADDING * len(long_names.widths) <= 80


async def test_dashboard_fits_80_columns_and_follows_resizes(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one("#sites", DataTable)

        def columns() -> list[str]:
            return [str(key.value) for key in table.columns]

        await wait_for(lambda: "upstreams" in columns(), description="every column at 120")
        await pilot.resize_terminal(80, 24)
        await wait_for(lambda: "hosts" not in columns(), description="Hosts and Upstreams gone at 80")
        await pilot.pause()
        assert "upstreams" not in columns() and columns()[0] == "name"
        assert table.virtual_size.width <= table.size.width and not table.show_horizontal_scrollbar
        assert cell_len(_text(app, "#engine-status")) <= 78  # nothing cut off
        assert "serving" in _text(app, "#engine-status")

        await pilot.resize_terminal(120, 30)
        await wait_for(lambda: "upstreams" in columns(), description="the columns back at 120")
        assert _cell(app, "files", "hosts") == "files.home.arpa"


async def test_status_line_names_the_https_listener_once_a_site_has_tls(runtime: Runtime) -> None:
    assert runtime.engine is not None and runtime.engine.https_addresses == ()
    path = runtime.config_path
    path.write_text(path.read_text().replace("http_port = 0\n", "http_port = 0\nhttps_port = 0\n") + "tls = true\n")
    assert runtime.store.reload()
    await wait_for(lambda: bool(runtime.engine and runtime.engine.https_addresses), description="the HTTPS listener")
    port = runtime.engine.https_addresses[0][1]
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(
            lambda: f"https://127.0.0.1:{port}" in _text(app, "#engine-status"), description="the https address"
        )
        assert f"http://127.0.0.1:{runtime.engine.addresses[0][1]}" in _text(app, "#engine-status")
        await pilot.pause()
