"""Text from the network in the TUI (issue 14): shown literally, never as markup, and with every
control character escaped, so that nothing a client, an upstream or a device on the LAN sends
reaches the terminal as an escape sequence.

Requests go through a real engine (raw sockets for the bytes aiohttp will not send; the engine
refuses ESC and DEL in a request, so events that carry them are canned, as an upstream's words
or a future parser could); discovery and health events are published on the runtime's real bus.
Every test reads what the widgets draw, and checks that no line of the composed screen, the
text Textual writes to the terminal, holds a raw control character.

`[ @click=app.quit]` is the markup that matters: `rich.markup.escape`, `Text(...).markup` and
`textual.markup.escape` all leave it alone, and Textual's markup runs it when it is clicked.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.text import Text
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Button, DataTable, Static
from textual.widgets._toast import Toast

from homeproxy.certs.status import CertStatus
from homeproxy.config.model import DiscoverySettings
from homeproxy.discovery.events import NameConflict
from homeproxy.engine import ProblemReported, RequestCompleted, UpstreamHealthChanged, UpstreamStatus
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.bridge import RequestsArrived
from homeproxy.tui.format import safe_text
from homeproxy.tui.screens.certificates import detail_text as cert_detail
from homeproxy.tui.screens.discovery import DiscoveryScreen, names_text, status_text
from homeproxy.tui.screens.request_detail import RequestDetailModal
from homeproxy.tui.screens.traffic import METHODS, TrafficScreen
from homeproxy.tui.screens.upstreams import UpstreamsScreen
from homeproxy.tui.widgets.request_log import RequestLog
from tests.tui.conftest import make_service, write_config
from tests.tui.test_discovery import found
from tests.waiting import wait_for

HOST = "files.home.arpa"
CLICK = "[ @click=app.quit]"
"""Markup that the usual escapes let through, and that quits the app when clicked if read as markup."""
#: What the screen must never hold raw: C0 and C1 controls, DEL, line and paragraph separators,
#: bidi overrides and isolates, surrogates.
RAW_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


# --- helpers ------------------------------------------------------------------------------


def drawn(widget: Widget) -> str:
    """What a widget draws, as text."""
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, *widget.size)))


def screen_lines(app: HomeproxyApp) -> list[str]:
    """Every line of the screen as composed (toasts included): the text the terminal is sent."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def assert_nothing_raw(app: HomeproxyApp) -> None:
    for y, line in enumerate(screen_lines(app)):
        assert RAW_UNSAFE.search(line) is None, f"line {y}: {line!r}"


def toast_texts(app: HomeproxyApp) -> list[str]:
    """What each toast shows (title and message, before wrapping)."""
    return [toast.render().plain for toast in app.screen.query(Toast)]


async def click_every_toast(app: HomeproxyApp, pilot: Pilot[None]) -> None:
    """Click the middle of each toast's message (where markup's @click would act); the app stays."""
    for toast in list(app.screen.query(Toast)):
        region = toast.region
        await pilot.click(offset=(region.x + region.width // 2, region.y + region.height - 2))
        await pilot.pause()
        assert app.is_running


def proxy_port(runtime: Runtime) -> int:
    assert runtime.engine is not None
    return runtime.engine.addresses[0][1]


async def raw_request(runtime: Runtime, head: bytes) -> None:
    """Send `head` (request line and headers, no blank line) as bytes, exactly; read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(runtime))
    writer.write(head + b"\r\nConnection: close\r\n\r\n")
    await writer.drain()
    await reader.read()
    writer.close()
    await writer.wait_closed()


def push(app: HomeproxyApp, events: list[RequestCompleted]) -> None:
    """Canned events, handed to the app the way its pump does."""
    app.requests.extend(events)
    app.screen.post_message(RequestsArrived(events, 0))


async def open_traffic(app: HomeproxyApp, pilot: Pilot[None]) -> RequestLog:
    await pilot.press("3")
    await wait_for(lambda: isinstance(app.screen, TrafficScreen), description="the Traffic screen")
    return app.screen.query_one("#requests", RequestLog)


def log_lines(log: RequestLog) -> list[str]:
    return [log.render_line(y).text for y in range(log.scrollable_content_region.height)]


#: A request a real engine would refuse, as an event: ESC, OSC, BEL, CR, backspace, C1 and bidi.
CANNED = RequestCompleted(
    time=1_800_000_000.0,
    client="10.0.0.\x1b7",
    site="",
    host="evil\x1b]0;pwned\x07",
    method="G\x1bT",
    path="/\x1b[2J\x9b31m\u202e\r\x08x",
    status=502,
    bytes_in=0,
    bytes_out=0,
    duration=0.004,
    upstream="",
    error="upstream said \x1b[31mred " + CLICK,
    request_headers=(("X-Evil\x1b", "v\x1b[1m\nInjected: yes\u2028"),),
    response_headers=(("X-Back", "\x9b2J\udc9b"),),
)


# --- safe_text -----------------------------------------------------------------------------


def test_safe_text_escapes_controls_and_leaves_text_alone() -> None:
    assert safe_text("\x1b[2J\x07\x08\r\n\t\x00\x7f") == "\\x1b[2J\\x07\\x08\\x0d\\x0a\\x09\\x00\\x7f"
    assert safe_text("\x85\x9b\x9f") == "\\x85\\x9b\\x9f"  # C1: U+009B is CSI to some terminals
    assert safe_text("a\u202eb\u2066c\u2028d\u2029") == "a\\u202eb\\u2066c\\u2028d\\u2029"
    assert safe_text("caf\udce9\udc9b \ud800") == "caf\\xe9\\x9b \\ud800"  # surrogateescape's bytes as bytes
    text = "[bold red]x[/] " + CLICK + " bücher 😀 \u00a0\u200d"
    assert safe_text(text) is text  # text, markup and all, is left as it is


# --- the request log and the request detail --------------------------------------------------


async def test_hostile_requests_in_the_log_and_the_detail(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(200, 40)) as pilot:  # wide: every row's path in full
        log = await open_traffic(app, pilot)
        # An unknown Host with bytes that are not UTF-8 (a 404 from no site), C1 controls raw
        # (0x9B) and in UTF-8 (C2 9B), a bidi override, markup in the path and in a header.
        await raw_request(
            runtime,
            b"GET /[@click=app.quit]x HTTP/1.1\r\nHost: caf\xe9\x9b.lan\r\n"
            b"User-Agent: a\xc2\x9b2J\xe2\x80\xaeb\r\nX-Raw: \x9b[31m " + CLICK.encode(),
        )
        await wait_for(lambda: log.row_count == 1, description="the real request")
        push(app, [CANNED])
        await wait_for(lambda: log.row_count == 2, description="the canned one")
        await pilot.pause()

        real, canned = log_lines(log)[1:3]
        assert "caf\\xe9\\x9b.lan/[@click=app.quit]x" in real and "404" in real
        assert "evil\\x1b]0;pwned\\x07/\\x1b[2J\\x9b31m\\u202e\\x0d\\x08x" in canned
        assert "G\\x1bT" in canned and "10.0.0.\\x1b7" in canned
        assert_nothing_raw(app)

        # The newest (canned) request's detail: every field and header escaped.
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RequestDetailModal), description="the detail")
        await pilot.pause()
        line = drawn(app.screen.query_one("#detail-line", Static))
        assert "G\\x1bT evil\\x1b]0;pwned\\x07/\\x1b[2J\\x9b31m\\u202e\\x0d\\x08x" in line
        fields = drawn(app.screen.query_one("#detail-fields", Static))
        assert "upstream said \\x1b[31mred " + CLICK in fields
        sent = drawn(app.screen.query_one("#detail-request-headers", Static))
        assert "X-Evil\\x1b" in sent and "v\\x1b[1m\\x0aInjected: yes\\u2028" in sent
        assert "\\x9b2J\\x9b" in drawn(app.screen.query_one("#detail-response-headers", Static))
        assert_nothing_raw(app)
        await pilot.click("#detail-fields", offset=(30, 12))  # on the error's markup
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, TrafficScreen), description="back")

        # The real request's detail: what the engine decoded, as sent.
        await pilot.press("up", "enter")
        await wait_for(lambda: isinstance(app.screen, RequestDetailModal), description="the other detail")
        await pilot.pause()
        line = drawn(app.screen.query_one("#detail-line", Static))
        assert "caf\\xe9\\x9b.lan/[@click=app.quit]x" in line
        sent = drawn(app.screen.query_one("#detail-request-headers", Static))
        assert "a\\x9b2J\\u202eb" in sent and "\\x9b[31m " + CLICK in sent
        assert_nothing_raw(app)
        await pilot.click("#detail-line", offset=(30, 0))
        await pilot.pause()
        assert app.is_running


async def test_a_method_from_the_network_in_the_filter_button(runtime: Runtime) -> None:
    """`m` cycles through the methods the log has seen: the button shows the hostile one escaped."""
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        log = await open_traffic(app, pilot)
        push(app, [replace(CANNED, method="PURGE\x1b[2J\x9b")])
        await wait_for(lambda: log.row_count == 1, description="the row")
        await pilot.press(*["m"] * (len(METHODS) + 1))
        await wait_for(lambda: log.filter.method == "PURGE\x1b[2J\x9b", description="the hostile method")
        await pilot.pause()
        assert "method: PURGE\\x1b[2J\\x9b" in drawn(app.screen.query_one("#filter-method", Button))
        assert_nothing_raw(app)


# --- toasts ---------------------------------------------------------------------------------


async def test_toasts_with_network_text_are_plain_and_escaped(runtime: Runtime) -> None:
    """An upstream's reason, another machine's name for a .local host and a problem's words, all
    with markup that escapes do not catch: shown as sent (controls escaped); a click does nothing."""
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.pause()
        bus, url = runtime.bus, runtime.store.config.sites[0].upstream_urls[0]
        bus.publish(UpstreamHealthChanged(time.time(), "files", url, False, CLICK + "down \x1b[2J\x9b2J"))
        bus.publish(NameConflict("files.local", (CLICK + "nas\x1b]0;x\x07",)))
        bus.publish(ProblemReported(time.time(), "access log", CLICK + "disk \x1b[31mfull"))
        await wait_for(lambda: len(app.screen.query(Toast)) == 3, description="three toasts")
        await pilot.pause()

        said = "\n".join(toast_texts(app))
        assert f"files: {url} is down: {CLICK}down \\x1b[2J\\x9b2J" in said
        assert f"files.local is already answered by {CLICK}nas\\x1b]0;x\\x07 on the LAN" in said
        assert f"{CLICK}disk \\x1b[31mfull" in said
        assert_nothing_raw(app)
        await click_every_toast(app, pilot)


# --- discovery ------------------------------------------------------------------------------

EVIL_NAME = CLICK + "NAS\x1b[31m\u202e"


async def test_hostile_services_on_the_discovery_screen(runtime: Runtime) -> None:
    """Services as a device on the LAN could announce them (put in the directory as they are,
    not cleaned by the browser first): names, host, path and TXT records escaped on screen."""
    evil = make_service(
        EVIL_NAME,
        host="nas\x9b.local.",
        path="/ui\x1b[2J",
        properties=(("path", "/ui\x1b[2J"), ("note\x07", "a\nb\x85c"), ("flag\u2066", None)),
    )
    unresolved = make_service(CLICK + "Printer\x1b]0;x\x07", addresses=(), port=0)
    found(runtime, evil, unresolved)
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("5")
        await wait_for(lambda: isinstance(app.screen, DiscoveryScreen), description="the Discovery screen")
        screen = app.screen
        assert isinstance(screen, DiscoveryScreen)
        table = screen.query_one("#services", DataTable)
        await wait_for(lambda: table.row_count == 2, description="both rows")
        await pilot.pause()

        cells = [str(cell) for cell in table.get_row(evil.key)]
        assert (cells[0], cells[3]) == (CLICK + "NAS\\x1b[31m\\u202e", "/ui\\x1b[2J")
        table.move_cursor(row=table.get_row_index(evil.key))
        await pilot.pause()
        detail = str(screen.query_one("#service-detail", Static).render())  # (its second line is cut on screen)
        assert f"{CLICK}NAS\\x1b[31m\\u202e" in detail and "host nas\\x9b.local." in detail
        assert "path=/ui\\x1b[2J note\\x07=a\\x0ab\\x85c flag\\u2066" in detail
        assert_nothing_raw(app)
        await pilot.click("#service-detail", offset=(5, 0))  # on the name's markup

        # Adding the unresolved one says why not, in a toast: plain text, escaped.
        table.move_cursor(row=table.get_row_index(unresolved.key))
        await pilot.press("a")
        await wait_for(lambda: len(app.screen.query(Toast)) == 1, description="the toast")
        await pilot.pause()
        said = "\n".join(toast_texts(app))
        assert f"{CLICK}Printer\\x1b]0;x\\x07 has not told its address" in said
        assert_nothing_raw(app)
        await click_every_toast(app, pilot)


@dataclass(frozen=True)
class Name:
    host: str
    status: str
    holders: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Interface:
    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Discovery:
    error: str
    running: bool = True
    interfaces: tuple[Interface, ...] = ()
    names: Mapping[str, Name] = field(default_factory=dict)


def test_discovery_status_lines_escape_what_other_machines_said() -> None:
    names = {
        "a.local": Name("a.local", "conflict", holders=("nas\x1b[2J",)),
        "b.local": Name("b.local", "error", detail="said \x9b31m"),
    }
    line = names_text(names, DiscoverySettings()).plain
    assert "held by nas\\x1b[2J" in line and "said \\x9b31m" in line
    failed = status_text(Discovery(error="bind: \x1b]0;x\x07"), DiscoverySettings()).plain
    assert failed.endswith("bind: \\x1b]0;x\\x07")


# --- upstream health ------------------------------------------------------------------------


@pytest.fixture
async def health_runtime(tmp_path: Path, backend: int) -> AsyncIterator[Runtime]:
    """The usual runtime, its site with active checks (each hour: the test tells the health)."""
    path = tmp_path / "config.toml"
    write_config(path, backend)
    with path.open("a", encoding="utf-8") as f:
        f.write('health = { path = "/", interval = "1h" }\n')
    rt = Runtime(path, log_dir=tmp_path / "log", discovery=False)
    await asyncio.to_thread(rt.start)
    yield rt
    await asyncio.to_thread(rt.stop)


async def test_an_upstreams_reason_and_check_are_escaped(
    health_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's words for an upstream's state may quote the upstream: the Upstreams screen's
    table and detail show them escaped (the engine tells them through `upstream_health()`)."""
    runtime = health_runtime
    engine = runtime.engine
    assert engine is not None
    url = runtime.store.config.sites[0].upstream_urls[0]
    now = time.time()
    status = UpstreamStatus(
        site="files",
        upstream=url,
        route="",
        backup=False,
        weight=1,
        max_conns=0,
        up=False,
        state="down",
        reason=CLICK + "2 failed checks: \x1b[2J\u202e",
        since=now - 5,
        until=0.0,
        checked=now - 1,
        check_ok=False,
        check_detail="upstream said \x9b31m\x07",
        check_latency=0.003,
        failures=2,
        in_flight=0,
    )
    monkeypatch.setattr(engine, "upstream_health", lambda: (status,))
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("u")
        await wait_for(lambda: isinstance(app.screen, UpstreamsScreen), description="the Upstreams screen")
        detail = app.screen.query_one("#upstream-detail", Static)
        await wait_for(lambda: "failed checks" in drawn(detail), description="the detail")
        await pilot.pause()
        shown = drawn(detail)
        assert f"{CLICK}2 failed checks: \\x1b[2J\\u202e" in shown
        assert "upstream said \\x9b31m\\x07" in shown
        check = app.screen.query_one("#upstreams-table", DataTable).get_cell(url, "check")
        assert isinstance(check, Text) and "upstream said \\x9b31m\\x07" in check.plain
        assert_nothing_raw(app)
        await pilot.click("#upstream-detail", offset=(20, 1))
        await pilot.pause()
        assert app.is_running


# --- certificates ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["error", "temporary", "missing"])
def test_an_acme_servers_words_are_escaped(state: str) -> None:
    """A failed order quotes the ACME server's problem detail ("the server said: ...")."""
    now = datetime(2027, 1, 15, tzinfo=UTC)
    status = CertStatus("nas", ("nas.example",), "acme", state, last_error="the server said: \x1b[2J\x9b" + CLICK)
    assert "the server said: \\x1b[2J\\x9b" + CLICK in cert_detail(status, now).plain
