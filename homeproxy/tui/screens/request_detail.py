"""`RequestDetailModal`: everything the proxy saw of one request.

Every field of the `RequestCompleted` event, and the request and response
headers as they passed through homeproxy. All of it came from the network, so
it is built as `rich.text.Text` (control characters escaped), never markup.
"""

from __future__ import annotations

import time
from http import HTTPStatus

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from homeproxy.engine import RequestCompleted
from homeproxy.tui.format import duration, safe_text, size
from homeproxy.tui.widgets.request_log import status_class

_STATUS_STYLE = {0: "bold red", 1: "dim", 2: "green", 3: "cyan", 4: "yellow", 5: "bold red"}


def wall_time(t: float) -> str:
    """Local date and time with milliseconds and the zone."""
    lt = time.localtime(t)
    return time.strftime("%Y-%m-%d %H:%M:%S", lt) + f".{int(t * 1000) % 1000:03d} " + time.strftime("%Z", lt)


def status_text(status: int) -> Text:
    if not status:
        return Text("no response", style=_STATUS_STYLE[0])
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return Text(f"{status} {phrase}".rstrip(), style=_STATUS_STYLE[status_class(status)])


def fields(ev: RequestCompleted) -> Table:
    """The event's fields, one per row."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    dash = Text("-", style="dim")

    def row(name: str, value: Text | str) -> None:
        table.add_row(Text(name), value if isinstance(value, Text) else (Text(safe_text(value)) if value else dash))

    row("Method", ev.method)
    row("Host", ev.host)
    row("Path", ev.path)
    row("Status", status_text(ev.status))
    row("Site", ev.site)
    row("Client", ev.client)
    row("Started", wall_time(ev.time))
    row("Finished", wall_time(ev.time + ev.duration))
    row("Duration", duration(ev.duration))
    row("Upstream", ev.upstream)
    row("Cache", ev.cache)
    row("Request body", size(ev.bytes_in))
    row("Response body", size(ev.bytes_out))
    if ev.error:
        row("Error", Text(safe_text(ev.error), style="red"))
    return table


def headers(pairs: tuple[tuple[str, str], ...]) -> RenderableType:
    """Header names and values, in the order they were sent."""
    if not pairs:
        return Text("(none)", style="dim")
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True, max_width=32, overflow="fold")
    table.add_column(overflow="fold")
    for name, value in pairs:
        table.add_row(Text(safe_text(name)), Text(safe_text(value)))
    return table


class RequestDetailModal(ModalScreen[None]):
    """One request: its fields, request headers and response headers."""

    CSS_PATH = "request_detail.tcss"

    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="request-detail.close", tooltip="Back to the traffic log"),
    ]

    def __init__(self, request: RequestCompleted) -> None:
        super().__init__()
        self.request = request

    def compose(self) -> ComposeResult:
        ev = self.request
        with Vertical(id="request-detail") as box:
            box.border_title = "Request"
            line = Text.assemble(
                (safe_text(ev.method) or "-", "bold"),
                " ",
                safe_text(ev.host + ev.path) or "-",
                "  ",
                status_text(ev.status),
            )
            line.overflow = "fold"
            yield Static(line, id="detail-line")
            with VerticalScroll(id="detail-body"):
                yield Static(fields(ev), id="detail-fields")
                yield Static(Text(f"Request headers ({len(ev.request_headers)})"), classes="detail-heading")
                yield Static(headers(ev.request_headers), id="detail-request-headers")
                yield Static(Text(f"Response headers ({len(ev.response_headers)})"), classes="detail-heading")
                yield Static(headers(ev.response_headers), id="detail-response-headers")
            yield Button(Text("Close (esc)"), id="detail-close", compact=True)

    def on_mount(self) -> None:
        self.query_one("#detail-body", VerticalScroll).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)
