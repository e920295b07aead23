"""`RequestLog`: the live request log, a line-API view over the app's `RequestBuffer`.

Built like Toolong's log view: a `ScrollView` that renders only the rows on
screen (`render_line`), with an LRU cache of rendered strips keyed by each
request's sequence number. The filtered view is a bounded pair of deques
(sequence numbers, events) that `sync()` extends from the buffer, reading only
what arrived since the last call (the screen calls it once per
`RequestsArrived` batch, about ten times a second); it is rebuilt from the
buffer only when the filter changes. The view holds the events themselves, so
a paused or scrolled-back view keeps what it shows while the buffer moves on.

Following, the view sticks to the newest request. While whole screens of rows
arrive between two paints (a busy proxy), repaints are coalesced to at most
one per `follow_interval`: the UI runs in the proxy's process, and each frame
costs the proxy CPU. Scrolling away or moving the cursor stops following; rows
still arrive below, counted by an "N new requests" marker on the last line
(click it, or press `end` or `f`, to follow again). Pausing stops taking rows
in; resuming takes in what arrived meanwhile.

Everything in a row came from the network: it is drawn as plain `Segment`s
with control characters escaped, never parsed as markup.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

from homeproxy.engine import RequestCompleted
from homeproxy.tui.bridge import RequestBuffer
from homeproxy.tui.format import duration, safe_text

Row = tuple[int, RequestCompleted]
"""A request in the view: its sequence number in the buffer, and the event."""


def local_time(t: float) -> str:
    """HH:MM:SS.mmm in local time."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def short_size(n: int) -> str:
    """Bytes in at most 6 cells: 512 B, 9.5K, 120K, 3.2M."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("K", "M", "G"):
        value /= 1024
        if value < 1024 or unit == "G":
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{value:.0f}G"  # pragma: no cover


def status_class(status: int) -> int:
    """1 to 5 for 1xx to 5xx; 0 when there was no response."""
    return status // 100 if 100 <= status < 600 else 0


_CACHE_SHORT = {"REVALIDATED": "REVAL"}


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """Which requests the log shows. The default shows all."""

    site: str | None = None
    """Only this site ("" for requests that matched no site)."""
    status_class: int | None = None
    """Only 2xx (2), 3xx (3), 4xx (4) or 5xx (5)."""
    method: str | None = None
    text: str = ""
    """A case-insensitive substring of host+path, client, site, method, status, upstream, cache or error."""
    _needle: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "_needle", self.text.strip().lower())

    @property
    def active(self) -> bool:
        return self != RequestFilter()

    def matches(self, ev: RequestCompleted) -> bool:
        if self.site is not None and ev.site != self.site:
            return False
        if self.status_class is not None and status_class(ev.status) != self.status_class:
            return False
        if self.method is not None and ev.method != self.method:
            return False
        if self._needle:
            haystack = (
                f"{ev.host}{ev.path}\n{ev.client}\n{ev.site}\n{ev.method}\n{ev.status}\n"
                f"{ev.upstream}\n{ev.cache}\n{ev.error}"
            )
            return self._needle in haystack.lower()
        return True


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int
    right: bool = False


def layout(width: int) -> tuple[Column, ...]:
    """The columns for a view `width` cells wide; the path column takes what is left."""
    wide = width >= 100
    head = [Column("time", "TIME", 12)]
    if wide:
        head.append(Column("client", "CLIENT", 15))
    head += [
        Column("site", "SITE", 14 if wide else 9),
        Column("method", "METHOD", 7 if wide else 6),
        Column("status", "ST", 3),
    ]
    tail = [
        Column("duration", "DURATION" if wide else "DUR", 8 if wide else 6, right=True),
        Column("bytes", "BYTES", 7 if wide else 6, right=True),
        Column("cache", "CACHE", 6),
    ]
    used = 1 + sum(c.width for c in head + tail) + len(head) + len(tail) + 1  # a left margin, a gap after each column
    return (*head, Column("path", "HOST+PATH", max(8, width - used)), *tail)


def _exact(segments: list[Segment], width: int, style: Style) -> Strip:
    """A strip of exactly `width` cells (the columns add up to it unless the view is very narrow)."""
    strip = Strip(segments)
    return strip if strip.cell_length == width else strip.crop_extend(0, width, style)


def fit(text: str, width: int, right: bool = False) -> str:
    """`text` padded or cut (with an ellipsis) to exactly `width` cells."""
    if text.isascii():
        if len(text) > width:
            return text[: width - 1] + "…"
        return text.rjust(width) if right else text.ljust(width)
    cells = cell_len(text)
    if cells > width:
        return set_cell_size(text, width - 1) + "…"
    pad = " " * (width - cells)
    return pad + text if right else text + pad


class RequestLog(ScrollView, can_focus=True, inherit_bindings=False):
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

    follow: var[bool] = var(True)
    """Stick to the newest request."""
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
        super().__init__(name=name, id=id, classes=classes)
        self.source = source
        # Two parallel deques rather than one of (seq, event) tuples: ints are not
        # tracked by the garbage collector, and ten thousand short-lived tuples
        # that live long enough to reach the oldest generation make its (slow,
        # GIL-holding) collections frequent.
        self._seqs: deque[int] = deque(maxlen=source.maxlen)
        self._events: deque[RequestCompleted] = deque(maxlen=source.maxlen)
        self._next = source.first
        """Sequence number of the first request not looked at yet."""
        self._floor = 0
        """Requests before this sequence number were cleared."""
        self._cursor: int | None = None
        """Index in the view of the highlighted row (None while following)."""
        self.new = 0
        """Rows added since following stopped (the marker's count)."""
        self.missed = 0
        """Requests that left the buffer before the view took them in (paused, or the screen hidden)."""
        self._adjusting = False
        self._strips: LRUCache[tuple[int, int, bool], Strip] = LRUCache(256)
        self._styles: dict[str, Style] = {}
        self._columns: tuple[Column, ...] = ()
        self._columns_width = -1
        self._header_strip: Strip | None = None
        self._painted = 0.0
        self._paint_timer: Timer | None = None
        self._unpainted = 0
        self.follow_interval = 0.5
        """Seconds between repaints while following a busy proxy (arrivals in between are shown together)."""

    # --- reading the view ----------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._seqs)

    @property
    def rows(self) -> list[Row]:
        """The rows shown (a copy), oldest first."""
        return list(zip(self._seqs, self._events, strict=True))

    @property
    def waiting(self) -> int:
        """Requests in the buffer that the view has not taken in (while paused)."""
        return max(0, self.source.total - max(self._next, self._floor))

    @property
    def cursor_row(self) -> Row | None:
        """The highlighted row, if any."""
        return (self._seqs[self._cursor], self._events[self._cursor]) if self._cursor is not None else None

    @property
    def page_rows(self) -> int:
        """Rows that fit on screen under the header."""
        return max(1, self.scrollable_content_region.height - 1)

    # --- taking rows in ------------------------------------------------------------------

    def sync(self) -> None:
        """Take in the requests that arrived in the buffer since the last call."""
        if not self.paused:
            src = self.source
            start = max(self._next, self._floor)
            if start < src.first:
                self.missed += src.first - start
                start = src.first
            end = src.total
            if start < end:
                first, matches = src.first, self.filter.matches
                seqs = [seq for seq in range(start, end) if matches(src[seq - first])]
                self._next = end
                if seqs:
                    self._append(seqs, [src[seq - first] for seq in seqs])
        self._post_view()

    def _append(self, seqs: list[int], events: list[RequestCompleted]) -> None:
        maxlen = self._seqs.maxlen
        assert maxlen is not None
        dropped = max(0, len(self._seqs) + len(seqs) - maxlen)
        self._seqs.extend(seqs)
        self._events.extend(events)
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
        src = self.source
        keep = self.cursor_row
        start = max(src.first, self._floor)
        end = self._next if self.paused else src.total
        first, matches = src.first, self.filter.matches
        seqs = [seq for seq in range(start, end) if matches(src[seq - first])]
        self._seqs = deque(seqs, maxlen=src.maxlen)
        self._events = deque((src[seq - first] for seq in seqs), maxlen=src.maxlen)
        self._next = max(self._next, end)
        self.new = 0
        self._cursor = None
        if keep is not None and not self.follow:
            index = bisect_left(self._seqs, keep[0])
            if index < len(self._seqs) and self._seqs[index] == keep[0]:
                self._cursor = index
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
        self._floor = self._next if self.paused else self.source.total
        self._seqs.clear()
        self._events.clear()
        self._cursor = None
        self.new = 0
        self.missed = 0
        self._set_height()
        self.follow = True
        self._scroll_to_end()
        self.refresh()
        self._post_view()

    def _set_height(self) -> None:
        self.virtual_size = Size(0, len(self._seqs) + 1)  # + the header line

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
                shown=len(self._seqs),
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
        if not self._seqs:
            return
        self._cursor = max(0, min(index, len(self._seqs) - 1))
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
        return min(len(self._seqs), self.scroll_offset.y + self.page_rows) - 1

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
        if not self._seqs:
            return
        if self._cursor is None:
            self.move_cursor(len(self._seqs) - 1)
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
        if index >= len(self._seqs):
            return
        if index == self._cursor or event.chain > 1:
            self.move_cursor(index)
            self.action_select()
        else:
            self.move_cursor(index)

    # --- rendering -----------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()
        self._header_strip = None

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(f"request-log--{name}", partial=True)
        return style

    def _marker_shown(self) -> bool:
        return not self.follow and self.new > 0 and self.max_scroll_y > self.scroll_offset.y

    def _refresh_marker(self) -> None:
        height = self.scrollable_content_region.height
        self.refresh(Region(0, height - 1, self.size.width, 1))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if width != self._columns_width:
            self._columns, self._columns_width = layout(width), width
            self._strips.clear()
            self._header_strip = None
        base = self._styles.get("")
        if base is None:
            base = self._styles[""] = self.rich_style
        if y == 0:
            return self._header(width, base)
        if y == self.scrollable_content_region.height - 1 and self._marker_shown():
            return self._marker(width, base)
        index = self.scroll_offset.y + y - 1
        if index >= len(self._seqs):
            return Strip.blank(width, base)
        seq = self._seqs[index]
        cursor = index == self._cursor
        key = (seq, width, cursor)
        strip = self._strips.get(key)
        if strip is None:
            style = base + self._style("cursor") if cursor else base
            strip = self._strips[key] = self._row(self._events[index], width, style)
        return strip

    def _header(self, width: int, base: Style) -> Strip:
        if self._header_strip is None:
            style = base + self._style("header")
            segments = [Segment(" ", style)]
            for column in self._columns:
                segments.append(Segment(fit(column.title, column.width, column.right), style))
                segments.append(Segment(" ", style))
            self._header_strip = _exact(segments, width, style)
        return self._header_strip

    def _marker(self, width: int, base: Style) -> Strip:
        n = self.new
        label = f" ↓ {n:,} new request{'s' if n != 1 else ''}  ·  end or f to follow "
        style = base + self._style("marker")
        text = fit(label, min(width, cell_len(label)))
        pad = max(0, width - cell_len(text))
        left, right = " " * (pad // 2), " " * (pad - pad // 2)
        return Strip([Segment(left, base), Segment(text, style), Segment(right, base)], width)

    def _row(self, ev: RequestCompleted, width: int, base: Style) -> Strip:
        muted = base + self._style("muted")
        segments = [Segment(" ", base)]
        add = segments.append
        for column in self._columns:
            w, key = column.width, column.key
            if key == "time":
                add(Segment(fit(local_time(ev.time), w), muted))
            elif key == "client":
                add(Segment(fit(safe_text(ev.client), w), muted))
            elif key == "site":
                add(Segment(fit(safe_text(ev.site) or "-", w), base if ev.site else muted))
            elif key == "method":
                add(Segment(fit(safe_text(ev.method) or "-", w), base))
            elif key == "status":
                style = base + self._style(f"status-{status_class(ev.status)}")
                add(Segment(fit(str(ev.status) if ev.status else "---", w), style))
            elif key == "path":
                target = safe_text(ev.host + ev.path)
                error = f"  {safe_text(ev.error)}" if ev.error else ""
                if cell_len(target) >= w or not error:
                    add(Segment(fit(target, w), base))
                else:
                    add(Segment(target, base))
                    add(Segment(fit(error, w - cell_len(target)), base + self._style("error")))
            elif key == "duration":
                add(Segment(fit(duration(ev.duration), w, right=True), base))
            elif key == "bytes":
                add(Segment(fit(short_size(ev.bytes_out), w, right=True), muted))
            elif key == "cache":
                cache = _CACHE_SHORT.get(ev.cache, ev.cache)
                hit = ev.cache in ("HIT", "REVALIDATED", "STALE")
                add(Segment(fit(safe_text(cache), w), base + self._style("cache-hit") if hit else muted))
            add(Segment(" ", base))
        return _exact(segments, width, base)
