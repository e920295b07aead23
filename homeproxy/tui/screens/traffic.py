"""`TrafficScreen`: the live request log, with follow, pause, clear and filters.

The rows come from the app's bounded `RequestBuffer`; the screen only tells its
`RequestLog` to take in what arrived (once per `RequestsArrived` batch, and when
the screen comes back into view) and sets the log's filter from the filter bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Static

from homeproxy.tui.bridge import RequestsArrived
from homeproxy.tui.format import safe_text
from homeproxy.tui.screens.request_detail import RequestDetailModal
from homeproxy.tui.services import Services
from homeproxy.tui.widgets.request_log import RequestFilter, RequestLog

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""The methods `m` cycles through (plus any other the log has seen)."""
STATUS_CLASSES = (2, 3, 4, 5)

T = TypeVar("T")


def _next(options: Sequence[T | None], current: T | None) -> T | None:
    """The option after `current` (None, "all", comes first and after the last)."""
    choices = [None, *options]
    try:
        return choices[(choices.index(current) + 1) % len(choices)]
    except ValueError:
        return None


class TrafficScreen(Screen[None]):
    """Every request through the proxy, newest at the bottom."""

    TITLE = "Traffic"

    CSS_PATH = "traffic.tcss"

    BINDINGS = [
        Binding("f", "follow", "Follow", id="traffic.follow", tooltip="Follow the newest request (again: stop)"),
        Binding(
            "space,p",
            "pause",
            "Pause",
            id="traffic.pause",
            tooltip="Stop taking new rows in (again: resume and show what arrived)",
        ),
        Binding(
            "c", "clear", "Clear", id="traffic.clear", tooltip="Empty the log (new requests still appear)", show=False
        ),
        Binding("slash", "filter_text", "Filter", id="traffic.filter", tooltip="Filter by text in host, path, client…"),
        Binding("s", "cycle_site", "Site", id="traffic.site", tooltip="Show one site, the next, … or all", show=False),
        Binding(
            "x",
            "cycle_status",
            "Status",
            id="traffic.status",
            tooltip="Show only 2xx, 3xx, 4xx, 5xx, or all",
            show=False,
        ),
        Binding(
            "m",
            "cycle_method",
            "Method",
            id="traffic.method",
            tooltip="Show one method, the next, … or all",
            show=False,
        ),
        Binding(
            "escape",
            "clear_filters",
            "Clear filters",
            id="traffic.clear-filters",
            tooltip="Show all requests again",
            show=False,
        ),
    ]

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self._dropped = 0
        self._status: list[str | tuple[str, str]] = []

    @property
    def request_log(self) -> RequestLog:
        return self.query_one("#requests", RequestLog)

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        with Horizontal(id="traffic-filters"):
            yield Input(placeholder="/ filter text", compact=True, id="filter-text")
            for name in ("site", "status", "method"):
                button = Button("", id=f"filter-{name}", compact=True)
                button.can_focus = False  # keys s, x and m; the buttons are for the mouse
                yield button
        yield RequestLog(self.services.requests, id="requests")
        yield Static(id="traffic-status")
        yield Footer()

    def on_mount(self) -> None:
        self._show_filters(RequestFilter())
        self.request_log.focus()
        self.request_log.sync()

    def on_screen_resume(self) -> None:
        # Requests arrive only at the visible screen: catch up with the buffer.
        self.request_log.sync()

    # --- messages ------------------------------------------------------------------------

    @on(RequestsArrived)
    def _arrived(self, message: RequestsArrived) -> None:
        self._dropped = message.dropped
        self.request_log.sync()

    @on(RequestLog.ViewChanged)
    def _view_changed(self, message: RequestLog.ViewChanged) -> None:
        parts: list[str | tuple[str, str]] = []
        if message.paused:
            parts += [("❚❚ paused", "bold $text-warning"), (f"  {message.waiting:,} waiting", "bold")]
        elif message.follow:
            parts.append(("● following", "bold $text-success"))
        else:
            parts.append(("○ scrolled back", "bold"))
            if message.new:
                parts.append((f"  {message.new:,} new", "bold $text-accent"))
        requests = self.services.requests
        parts.append(f"  ·  {message.shown:,} shown")
        parts.append((f"  ·  {len(requests):,} of the last {requests.maxlen:,} kept", "dim"))
        if message.missed:
            parts.append((f"  ·  {message.missed:,} left the buffer unseen", "$text-warning"))
        if self._dropped:
            parts.append((f"  ·  the UI fell behind: {self._dropped:,} dropped", "$text-error"))
        if parts != self._status:  # following a busy proxy, the line mostly stays the same
            self._status = parts
            self.query_one("#traffic-status", Static).update(Content.assemble(*parts), layout=False)  # one line

    @on(RequestLog.RequestSelected)
    def _selected(self, message: RequestLog.RequestSelected) -> None:
        self.app.push_screen(RequestDetailModal(message.request))

    @on(Input.Changed, "#filter-text")
    def _text_changed(self, event: Input.Changed) -> None:
        self._set_filter(replace(self.request_log.filter, text=event.value))

    @on(Input.Submitted, "#filter-text")
    def _text_submitted(self) -> None:
        self.request_log.focus()

    @on(Button.Pressed, "#filter-site")
    def _site_pressed(self) -> None:
        self.action_cycle_site()

    @on(Button.Pressed, "#filter-status")
    def _status_pressed(self) -> None:
        self.action_cycle_status()

    @on(Button.Pressed, "#filter-method")
    def _method_pressed(self) -> None:
        self.action_cycle_method()

    # --- actions -------------------------------------------------------------------------

    def action_follow(self) -> None:
        log = self.request_log
        log.follow = not log.follow

    def action_pause(self) -> None:
        log = self.request_log
        log.paused = not log.paused

    def action_clear(self) -> None:
        self.request_log.clear()

    def action_filter_text(self) -> None:
        self.query_one("#filter-text", Input).focus()

    def action_cycle_site(self) -> None:
        sites = [site.name for site in self.services.store.config.sites]
        current = self.request_log.filter
        self._set_filter(replace(current, site=_next([*sites, ""], current.site)))

    def action_cycle_status(self) -> None:
        current = self.request_log.filter
        self._set_filter(replace(current, status_class=_next(STATUS_CLASSES, current.status_class)))

    def action_cycle_method(self) -> None:
        seen = {ev.method for _seq, ev in self.request_log.rows} | {ev.method for ev in self.services.requests}
        extra = sorted(m for m in seen if m and m not in METHODS)
        current = self.request_log.filter
        self._set_filter(replace(current, method=_next([*METHODS, *extra], current.method)))

    def action_clear_filters(self) -> None:
        self.query_one("#filter-text", Input).value = ""
        self._set_filter(RequestFilter())
        self.request_log.focus()

    # --- the filter bar ------------------------------------------------------------------

    def _set_filter(self, new: RequestFilter) -> None:
        self.request_log.filter = new
        self._show_filters(new)

    def _show_filters(self, f: RequestFilter) -> None:
        site = "all" if f.site is None else (f.site or "(no site)")
        status = "all" if f.status_class is None else f"{f.status_class}xx"
        method = f.method or "all"
        for name, key, value, active in (
            ("site", "s", site, f.site is not None),
            ("status", "x", status, f.status_class is not None),
            ("method", "m", method, f.method is not None),
        ):
            button = self.query_one(f"#filter-{name}", Button)
            # Methods come from the network (site names may come from mDNS): plain text, never markup.
            label = (safe_text(value), "bold" if active else "")
            button.label = Content.assemble((key, "bold underline"), f" {name}: ", label)
            button.set_class(active, "-filtering")
            button.refresh(layout=True)  # the label's width changed (Button.label does not relayout)
