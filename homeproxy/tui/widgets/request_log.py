"""`RequestLog`: the live request log, a line-API `ScrollView` over the app's `RequestBuffer`.

Built like Toolong's log view: a `ScrollView` that renders only the rows on
screen (`render_line`), with an LRU cache of rendered strips keyed by each
request's sequence number (the drawing is `RequestLines`, in
`request_lines.py`, the base of `RequestLog`). The filtered view (`RequestRows`, in
`request_rows.py`) is a bounded pair of deques that `sync()` extends from the
buffer, reading only what arrived since the last call (the screen calls it once
per `RequestsArrived` batch, about ten times a second); it is rebuilt from the
buffer only when the filter (`RequestFilter`, in `request_filter.py`) changes.
The view holds the events themselves, so a paused or scrolled-back view keeps
what it shows while the buffer moves on.

Following, the view sticks to the newest request. While whole screens of rows
arrive between two paints (a busy proxy), repaints are coalesced to at most
one per `follow_interval`: the UI runs in the proxy's process, and each frame
costs the proxy CPU. Scrolling away or moving the cursor stops following; rows
still arrive below, counted by an "N new requests" marker on the last line
(click it, or press `end` or `f`, to follow again). Pausing stops taking rows
in; resuming takes in what arrived meanwhile.

Everything in a row came from the network: it is drawn as plain `Segment`s
with control characters escaped, never parsed as markup (`request_columns.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import var
from textual.timer import Timer

from homeproxy.engine import RequestCompleted
from homeproxy.tui.bridge import RequestBuffer
from homeproxy.tui.widgets.request_columns import Column, fit, layout, local_time, short_size
from homeproxy.tui.widgets.request_filter import RequestFilter, status_class
from homeproxy.tui.widgets.request_lines import RequestLines
from homeproxy.tui.widgets.request_rows import RequestRows, Row

__all__ = [
    "Column",
    "RequestFilter",
    "RequestLog",
    "RequestRows",
    "Row",
    "fit",
    "layout",
    "local_time",
    "short_size",
    "status_class",
]


class RequestLog(RequestLines, can_focus=True, inherit_bindings=False):
    """The requests in a `RequestBuffer`, one line each, newest at the bottom."""

    BINDINGS = [
        Binding("enter", "select", "Details", id="request-log.details", tooltip="Show everything about this request"),
        Binding("up,k", "cursor(-1)", "Up", id="request-log.up", tooltip="Previous request", show=False),
        Binding("down,j", "cursor(1)", "Down", id="request-log.down", tooltip="Next request", show=False),
        Binding("pageup", "page(-1)", "Page up", id="request-log.page-up", tooltip="One screen back", show=False),
        Binding("pagedown", "page(1)", "Page down", id="request-log.page-down", tooltip="One screen on", show=False),
        Binding("home,g", "first", "Oldest", id="request-log.first", tooltip="Go to the oldest request", show=False),
        Binding(
            "end,G", "last", "Newest", id="request-log.last", tooltip="Go to the newest request and follow", show=False
        ),
    ]

    COMPONENT_CLASSES = {
        "request-log--header",
        "request-log--cursor",
        "request-log--muted",
        "request-log--marker",
        "request-log--error",
        "request-log--status-0",
        "request-log--status-1",
        "request-log--status-2",
        "request-log--status-3",
        "request-log--status-4",
        "request-log--status-5",
        "request-log--cache-hit",
    }

    DEFAULT_CSS = """
    RequestLog {
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-gutter: stable;
        scrollbar-size-vertical: 1;
        & > .request-log--header { background: $panel; color: $text-muted; text-style: bold; }
        & > .request-log--cursor { background: $foreground 12%; }
        &:focus > .request-log--cursor { background: $primary 45%; }
        & > .request-log--muted { color: $text-muted; }
        & > .request-log--marker { background: $accent; color: $text; text-style: bold; }
        & > .request-log--error { color: $text-error; }
        & > .request-log--status-0 { color: $text-error; text-style: bold; }
        & > .request-log--status-1 { color: $text-muted; }
        & > .request-log--status-2 { color: $text-success; }
        & > .request-log--status-3 { color: $text-accent; }
        & > .request-log--status-4 { color: $text-warning; }
        & > .request-log--status-5 { color: $text-error; text-style: bold; }
        & > .request-log--cache-hit { color: $text-success; }
    }
    """

    paused: var[bool] = var(False)
    """Take no new rows in (they wait in the buffer)."""
    filter: var[RequestFilter] = var(RequestFilter)
    """Which requests to show."""

    @dataclass
    class ViewChanged(Message):
        """What the view shows changed: counts, following, paused (coalesced)."""

        request_log: RequestLog
        shown: int
        new: int
        """Rows added since following stopped."""
        waiting: int
        """Requests that arrived while paused."""
        missed: int
        """Requests that left the buffer before the view took them in."""
        follow: bool
        paused: bool

        @property
        def control(self) -> RequestLog:
            return self.request_log

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, RequestLog.ViewChanged) and message.request_log is self.request_log

    @dataclass
    class RequestSelected(Message):
        """The user chose a request (enter, or a click on the highlighted row)."""

        request_log: RequestLog
        seq: int
        request: RequestCompleted

        @property
        def control(self) -> RequestLog:
            return self.request_log

    def __init__(
        self,
        source: RequestBuffer,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(source, name=name, id=id, classes=classes)
        self.missed = 0
        """Requests that left the buffer before the view took them in (paused, or the screen hidden)."""
        self._adjusting = False
        self._painted = 0.0
        self._paint_timer: Timer | None = None
        self._unpainted = 0
        self.follow_interval = 0.5
        """Seconds between repaints while following a busy proxy (arrivals in between are shown together)."""

    # --- taking rows in ------------------------------------------------------------------

    def sync(self) -> None:
        """Take in the requests that arrived in the buffer since the last call."""
        if not self.paused:
            seqs, missed = self._view.take(self.filter.matches)
            self.missed += missed
            if seqs:
                self._append(seqs)
        self._post_view()

    def _append(self, seqs: list[int]) -> None:
        dropped = self._view.extend(seqs)
        if self._cursor is not None:
            self._cursor = max(0, self._cursor - dropped)
        if self.follow:
            self._paint_following(len(seqs))
        else:
            self._set_height()
            self.new += len(seqs)
            if dropped:
                # Keep the same requests on screen while older ones fall off the front.
                self._scroll(self.scroll_offset.y - dropped)
            self._refresh_marker()

    def _paint_following(self, arrived: int) -> None:
        """Show the newest rows: at once while they trickle in; while whole screens of
        them arrive between paints, at most once per `follow_interval` (coalesced).

        Following a busy proxy repaints every row on screen each time; a couple
        of frames a second is all anyone can read, and every frame costs the
        proxy (the same process) CPU.
        """
        self._unpainted += arrived
        if self._paint_timer is not None:
            return
        busy = self._unpainted >= self.page_rows
        wait = self._painted + (self.follow_interval if busy else 0.0) - time.monotonic()
        if wait > 0:
            self._paint_timer = self.set_timer(wait, self._paint_now, name="request-log-paint")
        else:
            self._paint_now()

    def _paint_now(self) -> None:
        self._paint_timer = None
        self._painted = time.monotonic()
        self._unpainted = 0
        self._set_height()
        if self.follow:
            self._scroll_to_end()
        self.refresh()

    def _rebuild(self) -> None:
        """Rebuild the view from the buffer (the filter changed)."""
        keep = self.cursor_row
        self._view.rebuild(self.filter.matches, self.paused)
        self.new = 0
        self._cursor = None
        if keep is not None and not self.follow:
            self._cursor = self._view.index(keep[0])
        self._set_height()
        if self._cursor is None:
            self.follow = True
            self._scroll_to_end()
        else:
            self._show_cursor()
        self.refresh()
        self._post_view()

    def clear(self) -> None:
        """Forget the rows shown (the app's buffer keeps them); newer requests still appear."""
        self._view.clear(self.paused)
        self._cursor = None
        self.new = 0
        self.missed = 0
        self._set_height()
        self.follow = True
        self._scroll_to_end()
        self.refresh()
        self._post_view()

    # --- state changes -------------------------------------------------------------------

    def watch_follow(self, follow: bool) -> None:
        self._set_height()  # a coalesced repaint may be pending
        if follow:
            self._cursor = None
            self.new = 0
            self._scroll_to_end()
        self.refresh()
        self._post_view()

    def watch_paused(self, paused: bool) -> None:
        if not paused:
            self.sync()
        else:
            self._post_view()

    def watch_filter(self, old: RequestFilter, new: RequestFilter) -> None:
        if old != new:
            self._rebuild()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._adjusting or not self.is_mounted:
            return
        # The user scrolled (wheel, scrollbar): following is being at the end.
        at_end = round(new_value) >= self.max_scroll_y
        if at_end != self.follow and (at_end or round(new_value) < round(old_value)):
            self.follow = at_end

    def _scroll(self, y: int) -> None:
        self._adjusting = True
        try:
            self.scroll_to(y=y, animate=False, immediate=True)
        finally:
            self._adjusting = False

    def _scroll_to_end(self) -> None:
        self._scroll(self.max_scroll_y)

    def _post_view(self) -> None:
        self.post_message(
            self.ViewChanged(
                self,
                shown=len(self._view),
                new=self.new,
                waiting=self.waiting if self.paused else 0,
                missed=self.missed,
                follow=self.follow,
                paused=self.paused,
            )
        )

    # --- the cursor ----------------------------------------------------------------------

    def move_cursor(self, index: int) -> None:
        """Highlight the row at `index` (clamped); this stops following."""
        if not self._view:
            return
        self._cursor = max(0, min(index, len(self._view) - 1))
        if self.follow:
            self.follow = False
        self._show_cursor()
        self.refresh()

    def _show_cursor(self) -> None:
        if self._cursor is None:
            return
        top, rows = self.scroll_offset.y, self.page_rows
        if self._cursor < top:
            self._scroll(self._cursor)
        elif self._cursor >= top + rows:
            self._scroll(self._cursor - rows + 1)

    def _start_cursor(self) -> int:
        """Where the cursor starts when there is none: the newest row on screen."""
        return min(len(self._view), self.scroll_offset.y + self.page_rows) - 1

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self._start_cursor() if self._cursor is None else self._cursor + delta)

    def action_page(self, delta: int) -> None:
        start = self._start_cursor() if self._cursor is None else self._cursor
        self.move_cursor(start + delta * self.page_rows)

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.follow = True

    def action_select(self) -> None:
        """Open the highlighted request (following: the newest, which then stays highlighted)."""
        if not self._view:
            return
        if self._cursor is None:
            self.move_cursor(len(self._view) - 1)
        row = self.cursor_row
        assert row is not None
        self.post_message(self.RequestSelected(self, row[0], row[1]))

    def on_click(self, event: events.Click) -> None:
        y = event.y
        if y <= 0:
            return
        if self._marker_shown() and y == self.scrollable_content_region.height - 1:
            self.follow = True
            return
        index = self.scroll_offset.y + y - 1
        if index >= len(self._view):
            return
        if index == self._cursor or event.chain > 1:
            self.move_cursor(index)
            self.action_select()
        else:
            self.move_cursor(index)
