"""The Traffic screen, driven through Pilot against a real engine and backend."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Button, Input, Static

from homeproxy.engine import RequestCompleted
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.bridge import RequestsArrived
from homeproxy.tui.screens.request_detail import RequestDetailModal
from homeproxy.tui.screens.traffic import TrafficScreen
from homeproxy.tui.widgets.request_log import RequestLog
from tests.conftest import serving
from tests.waiting import wait_for

HOST = "files.home.arpa"


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    """Overrides conftest's backend: answers with the status in `?status=` and a header of its own."""

    async def handle(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "200"))
        return web.Response(status=status, text=f"hello {request.path}", headers={"X-Backend": "traffic-test"})

    async with serving(handle) as port:
        yield port


# --- helpers ------------------------------------------------------------------------------


def proxy_port(runtime: Runtime) -> int:
    assert runtime.engine is not None
    return runtime.engine.addresses[0][1]


async def request(
    runtime: Runtime, path: str, *, method: str = "GET", host: str = HOST, headers: dict[str, str] | None = None
) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"http://127.0.0.1:{proxy_port(runtime)}{path}", headers={"Host": host, **(headers or {})}
        ) as r,
    ):
        await r.read()
        return r.status


async def raw_request(runtime: Runtime, head: bytes) -> bytes:
    """Send `head` (a request line and headers, without the blank line) as bytes, exactly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(runtime))
    writer.write(head + b"\r\nConnection: close\r\n\r\n")
    await writer.drain()
    reply = await reader.read()
    writer.close()
    await writer.wait_closed()
    return reply


async def open_traffic(app: HomeproxyApp, pilot: Pilot[None]) -> RequestLog:
    await pilot.press("3")
    await wait_for(lambda: isinstance(app.screen, TrafficScreen), description="the Traffic screen")
    return app.screen.query_one("#requests", RequestLog)


def paths(log: RequestLog) -> list[str]:
    return [ev.path for _seq, ev in log.rows]


def lines(log: RequestLog) -> list[str]:
    """The lines the log draws now (header first)."""
    return [log.render_line(y).text for y in range(log.scrollable_content_region.height)]


def text_of(widget: Widget) -> str:
    """What a widget draws, as text."""
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, *widget.size)))


def focused(app: HomeproxyApp) -> Widget | None:
    return app.focused


def status_line(app: HomeproxyApp) -> str:
    return text_of(app.screen.query_one("#traffic-status", Static))


def push(app: HomeproxyApp, events: Sequence[RequestCompleted]) -> None:
    """Hand canned events to the app the way its pump does."""
    app.requests.extend(events)
    app.screen.post_message(RequestsArrived(events, 0))


def canned(start: int, count: int, *, status: int = 200) -> list[RequestCompleted]:
    return [
        RequestCompleted(
            time=1_800_000_000.0 + i,
            client="192.168.1.5",
            site="files",
            host=HOST,
            method="GET",
            path=f"/canned/{i}",
            status=status,
            bytes_in=0,
            bytes_out=100,
            duration=0.001,
            upstream="http://192.0.2.1:80",
        )
        for i in range(start, start + count)
    ]


# --- tests --------------------------------------------------------------------------------


async def test_real_requests_appear_newest_at_the_bottom(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        log = await open_traffic(app, pilot)
        for path in ("/one", "/two", "/three"):
            assert await request(runtime, path) == 200
        await wait_for(lambda: paths(log) == ["/one", "/two", "/three"], description="3 rows")
        await wait_for(lambda: "3 shown" in status_line(app), description="the count")
        shown = lines(log)
        assert "HOST+PATH" in shown[0]
        assert f"{HOST}/one" in shown[1] and f"{HOST}/three" in shown[3]
        assert " 200 " in shown[3] and " files " in shown[3] and "127.0.0.1" in shown[3]
        assert "following" in status_line(app)


async def test_requests_that_arrive_elsewhere_show_when_traffic_opens(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        assert await request(runtime, "/before") == 200
        await wait_for(lambda: app.requests.total == 1, description="the request in the app's buffer")
        log = await open_traffic(app, pilot)
        await wait_for(lambda: paths(log) == ["/before"], description="the earlier request")
        await pilot.press("1")
        assert await request(runtime, "/while-away") == 200
        await wait_for(lambda: app.requests.total == 2, description="the second request in the buffer")
        log = await open_traffic(app, pilot)
        await wait_for(lambda: paths(log) == ["/before", "/while-away"], description="caught up")


async def test_filters_by_site_status_method_and_text(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        log = await open_traffic(app, pilot)
        assert await request(runtime, "/ok") == 200
        assert await request(runtime, "/form", method="POST") == 200
        assert await request(runtime, "/moved?status=301") == 301
        assert await request(runtime, "/missing?status=404") == 404
        assert await request(runtime, "/gone?status=500", method="DELETE") == 500
        assert await request(runtime, "/elsewhere", host="unknown.example") == 404
        everything = ["/ok", "/form", "/moved?status=301", "/missing?status=404", "/gone?status=500", "/elsewhere"]
        await wait_for(lambda: paths(log) == everything, description="all 6 rows")

        site = app.screen.query_one("#filter-site", Button)
        await pilot.press("s")
        assert paths(log) == everything[:5] and "site: files" in str(site.label)
        await pilot.press("s")
        assert paths(log) == ["/elsewhere"] and "(no site)" in str(site.label)
        await pilot.press("s")
        assert paths(log) == everything and "site: all" in str(site.label)

        for expected in (
            ["/ok", "/form"],
            ["/moved?status=301"],
            ["/missing?status=404", "/elsewhere"],
            ["/gone?status=500"],
            everything,
        ):
            await pilot.press("x")
            assert paths(log) == expected

        await pilot.press("m")  # GET
        assert paths(log) == ["/ok", "/moved?status=301", "/missing?status=404", "/elsewhere"]
        await pilot.press("m", "m")  # HEAD, then POST
        assert paths(log) == ["/form"]
        await pilot.press("escape")
        assert paths(log) == everything

        await pilot.press("slash")
        assert focused(app) is app.screen.query_one("#filter-text", Input)
        await pilot.press(*"GONE")
        assert paths(log) == ["/gone?status=500"]
        await pilot.press("enter")
        assert focused(app) is log
        await pilot.press("escape")
        assert paths(log) == everything and app.screen.query_one("#filter-text", Input).value == ""

        # A filter applies to requests that arrive later too.
        await pilot.press("x", "x", "x", "x")  # 5xx
        assert await request(runtime, "/later-ok") == 200
        assert await request(runtime, "/later-error?status=503") == 503
        await wait_for(lambda: "/later-error?status=503" in paths(log), description="the new 5xx")
        assert paths(log) == ["/gone?status=500", "/later-error?status=503"]
        # The mouse works too: a click on a filter button cycles it.
        await pilot.click("#filter-status")
        await wait_for(lambda: len(paths(log)) == 8, description="all rows after a click on the status filter")


async def test_pause_holds_new_rows_and_resume_shows_them(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        log = await open_traffic(app, pilot)
        assert await request(runtime, "/first") == 200
        await wait_for(lambda: paths(log) == ["/first"], description="the first row")
        await pilot.press("space")
        await wait_for(lambda: "paused" in status_line(app), description="paused")
        assert await request(runtime, "/during-pause") == 200
        await wait_for(lambda: "1 waiting" in status_line(app), description="the paused screen to count it")
        assert paths(log) == ["/first"]
        await pilot.press("p")
        await wait_for(lambda: paths(log) == ["/first", "/during-pause"], description="the held row")
        assert "following" in status_line(app)


async def test_clear_empties_the_log_but_not_the_buffer(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        log = await open_traffic(app, pilot)
        assert await request(runtime, "/old") == 200
        await wait_for(lambda: paths(log) == ["/old"], description="a row")
        await pilot.press("c")
        assert paths(log) == [] and len(app.requests) == 1
        await pilot.press("x")  # a filter change rebuilds from the buffer: still without what was cleared
        await pilot.press("escape")
        assert paths(log) == []
        assert await request(runtime, "/new") == 200
        await wait_for(lambda: paths(log) == ["/new"], description="only the new row")


async def test_enter_opens_the_detail_with_the_real_headers(runtime: Runtime, backend: int) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        log = await open_traffic(app, pilot)
        status = await request(runtime, "/detail?status=404", headers={"X-Test-Header": "hello [b]world[/b]"})
        assert status == 404
        await wait_for(lambda: paths(log) == ["/detail?status=404"], description="the row")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RequestDetailModal), description="the detail")
        await pilot.pause()
        sent = text_of(app.screen.query_one("#detail-request-headers", Static))
        assert "X-Test-Header" in sent and "hello [b]world[/b]" in sent and re.search(rf"Host +{HOST}", sent)
        received = text_of(app.screen.query_one("#detail-response-headers", Static))
        assert "X-Backend" in received and "traffic-test" in received
        fields = text_of(app.screen.query_one("#detail-fields", Static))
        assert f"http://127.0.0.1:{backend}" in fields and "404 Not Found" in fields and "127.0.0.1" in fields
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, TrafficScreen), description="back to Traffic")
        # Enter opened the newest row and left the cursor there.
        assert log.cursor_row is not None and log.cursor_row[1].path == "/detail?status=404"
        # The mouse: a click highlights a row, a second click on it opens it; the Close button closes.
        await pilot.click("#requests", offset=(30, 1))
        await wait_for(lambda: isinstance(app.screen, RequestDetailModal), description="the detail, by mouse")
        await pilot.click("#detail-close")
        await wait_for(lambda: isinstance(app.screen, TrafficScreen), description="closed by mouse")


async def test_text_from_the_network_is_never_markup(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        log = await open_traffic(app, pilot)
        await raw_request(runtime, f"GET /[red]x HTTP/1.1\r\nHost: {HOST}".encode())
        # A header with a C1 control (U+009B, CSI) and a byte that is not UTF-8.
        await raw_request(
            runtime, f"GET /[@click=app.quit] HTTP/1.1\r\nHost: {HOST}\r\nX-Evil: a".encode() + b"\xc2\x9b2Jb\x9bc"
        )
        await wait_for(lambda: paths(log) == ["/[red]x", "/[@click=app.quit]"], description="both rows")
        shown = lines(log)
        assert f"{HOST}/[red]x" in shown[1] and f"{HOST}/[@click=app.quit]" in shown[2]
        for y in (1, 2):
            assert not any(seg.style is not None and seg.style.meta for seg in log.render_line(y))
        # Clicks and keys on those rows do nothing but what they should.
        await pilot.click("#requests", offset=(60, 2))
        await pilot.click("#requests", offset=(60, 2))
        await wait_for(lambda: isinstance(app.screen, RequestDetailModal), description="the detail")
        await pilot.pause()
        assert "/[@click=app.quit]" in text_of(app.screen.query_one("#detail-line", Static))
        evil = text_of(app.screen.query_one("#detail-request-headers", Static))
        assert "a\\x9b2Jb\\x9bc" in evil
        await pilot.click("#detail-line", offset=(20, 0))
        await pilot.press("enter")
        await pilot.press("escape")
        await pilot.click("#requests", offset=(60, 1))
        await pilot.click("#requests", offset=(60, 1))
        await wait_for(lambda: isinstance(app.screen, RequestDetailModal), description="the other detail")
        assert "/[red]x" in text_of(app.screen.query_one("#detail-line", Static))
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running
        # Control characters a canned event could carry are shown as escapes.
        push(app, [replace(canned(0, 1)[0], path="/\x1b[2J\u202eevil")])
        await wait_for(lambda: len(log.rows) == 3, description="the canned row")
        assert "/\\x1b[2J\\u202eevil" in lines(log)[3]


async def test_follow_mode_and_the_new_requests_marker(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        log = await open_traffic(app, pilot)
        push(app, canned(0, 100))
        await wait_for(lambda: log.row_count == 100, description="100 rows")
        assert "/canned/99" in lines(log)[-1] and log.follow

        await pilot.press("up")  # highlights the newest row; following stops
        await wait_for(lambda: "scrolled back" in status_line(app), description="not following")
        await pilot.press("pageup")
        top = lines(log)[1]
        push(app, canned(100, 5))
        await wait_for(lambda: log.row_count == 105, description="105 rows")
        await wait_for(lambda: "5 new" in status_line(app), description="the count in the status line")
        shown = lines(log)
        assert shown[1] == top  # the view did not move
        assert "5 new requests" in shown[-1]

        await pilot.press("f")
        await wait_for(lambda: "following" in status_line(app), description="following again")
        assert "/canned/104" in lines(log)[-1] and "new request" not in lines(log)[-1]

        push(app, canned(105, 1))
        await wait_for(lambda: "/canned/105" in lines(log)[-1], description="the newest at the bottom")

        # The mouse: a click on a row stops following, a click on the marker follows again.
        await pilot.click("#requests", offset=(30, 2))
        assert not log.follow
        push(app, canned(106, 3))
        await wait_for(lambda: "3 new requests" in lines(log)[-1], description="the marker")
        await pilot.click("#requests", offset=(60, log.scrollable_content_region.height - 1))
        await wait_for(lambda: log.follow and "/canned/108" in lines(log)[-1], description="following by mouse")


async def test_scrolled_back_view_stays_put_as_old_rows_leave(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime, buffer_size=50)
    async with app.run_test(size=(120, 30)) as pilot:
        log = await open_traffic(app, pilot)
        push(app, canned(0, 50))
        await wait_for(lambda: log.row_count == 50, description="50 rows")
        await pilot.press("home", *["down"] * 40)
        assert log.cursor_row is not None and log.cursor_row[1].path == "/canned/40"
        top = lines(log)[1]
        assert "/canned/0 " not in top
        push(app, canned(50, 10))
        await wait_for(lambda: "10 new" in status_line(app), description="10 more")
        assert log.row_count == 50  # bounded like the buffer
        assert paths(log)[0] == "/canned/10"
        assert log.cursor_row is not None and log.cursor_row[1].path == "/canned/40"
        assert lines(log)[1] == top


async def test_a_burst_of_20000_stays_bounded_and_responsive(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        log = await open_traffic(app, pilot)
        events = canned(0, 20_000)
        for i in range(0, len(events), 500):
            push(app, events[i : i + 500])
        await wait_for(lambda: app.requests.total == 20_000, description="all pushed")
        await wait_for(lambda: "/canned/19999" in lines(log)[-1], description="the newest on screen", timeout=20)
        assert len(app.requests) == 10_000 and log.row_count == 10_000
        assert paths(log)[0] == "/canned/10000"
        await pilot.press("x", "x", "x", "x")  # 5xx: none of them
        await wait_for(lambda: log.row_count == 0, description="the filter applied promptly", timeout=5)
        await pilot.press("escape")
        await wait_for(lambda: log.row_count == 10_000, description="all back", timeout=5)
