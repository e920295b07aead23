"""`RequestLines`: the request log's drawing, a line-API `ScrollView` with an LRU of rendered strips."""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip

from homeproxy.engine import RequestCompleted
from homeproxy.tui.bridge import RequestBuffer
from homeproxy.tui.widgets.request_columns import Column, fit, header_strip, layout, row_strip
from homeproxy.tui.widgets.request_rows import RequestRows, Row


class RequestLines(ScrollView):
    """The rows of a `RequestRows` view, one line each under a header, newest at the bottom.

    Renders only the rows on screen (`render_line`); a rendered row is kept in
    an LRU keyed by its sequence number, the width and whether it is
    highlighted. `RequestLog` adds the behaviour: taking rows in, following,
    the cursor.
    """

    follow: var[bool] = var(True)
    """Stick to the newest request."""

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
        self._view = RequestRows(source)
        self._cursor: int | None = None
        """Index in the view of the highlighted row (None while following)."""
        self.new = 0
        """Rows added since following stopped (the marker's count)."""
        self._strips: LRUCache[tuple[int, int, bool], Strip] = LRUCache(256)
        self._styles: dict[str, Style] = {}
        self._columns: tuple[Column, ...] = ()
        self._columns_width = -1
        self._header_strip: Strip | None = None

    # --- reading the view ----------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._view)

    @property
    def rows(self) -> list[Row]:
        """The rows shown (a copy), oldest first."""
        return self._view.rows

    @property
    def waiting(self) -> int:
        """Requests in the buffer that the view has not taken in (while paused)."""
        return self._view.waiting

    @property
    def cursor_row(self) -> Row | None:
        """The highlighted row, if any."""
        return self._view[self._cursor] if self._cursor is not None else None

    @property
    def page_rows(self) -> int:
        """Rows that fit on screen under the header."""
        return max(1, self.scrollable_content_region.height - 1)

    def _set_height(self) -> None:
        self.virtual_size = Size(0, len(self._view) + 1)  # + the header line

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
        if index >= len(self._view):
            return Strip.blank(width, base)
        seq = self._view.seqs[index]
        cursor = index == self._cursor
        key = (seq, width, cursor)
        strip = self._strips.get(key)
        if strip is None:
            style = base + self._style("cursor") if cursor else base
            strip = self._strips[key] = self._row(self._view.events[index], width, style)
        return strip

    def _header(self, width: int, base: Style) -> Strip:
        if self._header_strip is None:
            self._header_strip = header_strip(self._columns, width, base + self._style("header"))
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
        return row_strip(ev, self._columns, width, base, self._style)
