"""`UpstreamList`: a site's upstreams in the site form, a row each (URL, weight, backup, max_conns).

The list reads back as the loader takes it (`values()`): a plain URL string for an
upstream with every option at its default, a table otherwise, so that saving never
drops a weight, a backup flag or a connection limit. A row whose URL input holds
several URLs (pasted, or typed with commas as the old single input took them) counts
as that many upstreams with the row's options, and is split into rows when the input
is left or Enter is pressed. Rows are added, removed and moved with keys (while the
focus is in the list) or with the buttons beside each row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label

from homeproxy.config.model import Upstream
from homeproxy.tui.widgets.form_parts import number
from homeproxy.tui.widgets.site_form_rows import ListRow, RowList, focus_first, split_upstreams


def upstream_value(url: str, weight: str = "", backup: bool = False, max_conns: str = "") -> str | dict[str, Any]:
    """One upstream as TOML data: the URL alone when the options are their defaults
    (weight 1, not a backup, no connection limit), else `{ url = ..., weight = ..., ... }`."""
    weight, max_conns = weight.strip(), max_conns.strip()
    options: dict[str, Any] = {}
    if weight not in ("", "1"):
        options["weight"] = number(weight)
    if backup:
        options["backup"] = True
    if max_conns not in ("", "0"):
        options["max_conns"] = number(max_conns)
    return {"url": url, **options} if options else url


class _RowButton(Button, can_focus=False):
    """A button for the mouse; the keyboard has the list's keys (so Tab skips it)."""


class UpstreamRow(ListRow):
    """One upstream: its URL, weight, backup switch and connection limit."""

    DEFAULT_CSS = """
    UpstreamRow .upstream-url {
        width: 1fr;
        margin-right: 1;
    }
    UpstreamRow .upstream-weight {
        width: 6;
        margin-right: 1;
    }
    UpstreamRow .upstream-backup {
        width: 7;
        margin-right: 1;
    }
    UpstreamRow .upstream-max-conns {
        width: 5;
    }
    UpstreamRow .move-row, UpstreamRow .remove-row {
        /* Narrow buttons side by side, so that the URL takes the width they leave (a two-column
           form at 120 columns gives a row about 56); their line-pad is 0 (see UpstreamRow). */
        min-width: 2;
        width: 2;
        margin-left: 0;
    }
    UpstreamRow .move-up {
        margin-left: 1;
    }
    UpstreamRow.-invalid .upstream-url {
        background: $error 20%;
    }
    """

    def __init__(self, upstream: Upstream | None = None) -> None:
        super().__init__()
        u = upstream or Upstream("")
        self.url = Input(
            u.url,
            placeholder="http://192.168.1.20:32400",
            compact=True,
            classes="upstream-url",
            tooltip="http(s) URL of a server behind this site, or mdns://Name._type._tcp for a service "
            "found on the LAN (its address is looked up per request)",
        )
        self.weight = Input(
            str(u.weight) if u.weight != 1 else "",
            placeholder="1",
            compact=True,
            classes="upstream-weight",
            tooltip='With balance "weighted": its share of the requests (1 to 1000; 3 gets three times those of 1)',
        )
        self.backup = Checkbox(
            "",
            u.backup,
            compact=True,
            classes="upstream-backup",
            tooltip="A backup: used only while every upstream that is not one is down",
        )
        self.max_conns = Input(
            str(u.max_conns) if u.max_conns else "",
            placeholder="∞",
            compact=True,
            classes="upstream-max-conns",
            tooltip="At most this many requests to it at once (blank or 0: no limit); over it, the next upstream",
        )
        self.up_button = _RowButton("↑", compact=True, classes="move-row move-up", tooltip="Move up (alt+↑)")
        self.down_button = _RowButton("↓", compact=True, classes="move-row move-down", tooltip="Move down (alt+↓)")
        self.remove_button.tooltip = "Remove this upstream (ctrl+delete)"
        for button in (self.up_button, self.down_button, self.remove_button):
            # Button pads its label with a cell each side, which draws past a width of 2 (and
            # shifts the rest of the screen line); TCSS refuses `line-pad: 0`, the style takes it.
            button.styles.line_pad = 0

    def controls(self) -> ComposeResult:
        yield self.url
        yield self.weight
        yield self.backup
        yield self.max_conns
        yield self.up_button
        yield self.down_button

    @property
    def urls(self) -> list[str]:
        """The URLs typed in the row (usually one)."""
        return split_upstreams(self.url.value)

    def values(self) -> list[str | dict[str, Any]]:
        """The row's upstreams as the loader reads them (none for a blank row)."""
        return [upstream_value(url, self.weight.value, self.backup.value, self.max_conns.value) for url in self.urls]


class UpstreamList(RowList[UpstreamRow]):
    """A site's upstreams, in order (the order matters to `balance = "first"` and to failover)."""

    DEFAULT_CSS = """
    UpstreamList > .upstream-header {
        height: 1;
    }
    UpstreamList > .upstream-header > Label {
        color: $text-muted;
        margin-right: 1;
    }
    UpstreamList > .upstream-header > .header-url {
        width: 1fr;
    }
    UpstreamList > .upstream-header > .header-weight {
        width: 6;
    }
    UpstreamList > .upstream-header > .header-backup {
        width: 7;
    }
    UpstreamList > .upstream-header > .header-max {
        width: 12;
        margin-right: 0;
    }
    """

    ADD_LABEL = "+ Add upstream"
    BINDINGS = [
        Binding("ctrl+n", "add_upstream", "Add", id="upstreams.add", tooltip="Add an upstream below this one"),
        Binding(
            "ctrl+delete",
            "remove_upstream",
            "Remove",
            id="upstreams.remove",
            tooltip="Remove the upstream the cursor is in",
        ),
        Binding("alt+up", "move(-1)", "Move up", id="upstreams.up", tooltip="Move this upstream up (tried earlier)"),
        Binding(
            "alt+down", "move(1)", "Move down", id="upstreams.down", tooltip="Move this upstream down (tried later)"
        ),
    ]

    def __init__(self, upstreams: Iterable[Upstream], *, id: str | None = None) -> None:
        rows = [UpstreamRow(u) for u in upstreams] or [UpstreamRow()]  # somewhere to type the first one
        super().__init__(rows, id=id)

    def compose(self) -> ComposeResult:
        # Headings as wide as the controls under them (the max column spans the three buttons).
        with Horizontal(classes="upstream-header"):
            yield Label("Upstream URL", classes="header-url")
            yield Label("weight", classes="header-weight")
            yield Label("backup", classes="header-backup")
            yield Label("max conns", classes="header-max")
        yield from super().compose()

    def new_row(self) -> UpstreamRow:
        return UpstreamRow()

    # --- reading -------------------------------------------------------------------------

    def values(self) -> list[str | dict[str, Any]]:
        """Every upstream as the loader reads it, in order; blank rows are left out."""
        return [value for row in self._rows for value in row.values()]

    def urls(self) -> list[str]:
        return [url for row in self._rows for url in row.urls]

    # --- editing -------------------------------------------------------------------------

    @property
    def current(self) -> UpstreamRow | None:
        """The row that holds the focus, if one does."""
        node: Widget | None = self.screen.focused
        while node is not None and node is not self:
            if isinstance(node, UpstreamRow):
                return node
            node = node.parent if isinstance(node.parent, Widget) else None
        return None

    async def insert_row(self, index: int, row: UpstreamRow | None = None, *, focus: bool = True) -> UpstreamRow:
        """Put `row` (or an empty one) at `index` and focus its URL."""
        row = row or self.new_row()
        index = max(0, min(index, len(self._rows)))
        container = self.query_one(".rows")
        if index < len(self._rows):
            await container.mount(row, before=self._rows[index])
        else:
            await container.mount(row)
        self._rows.insert(index, row)
        if focus:
            row.url.focus()
        self.post_message(self.Changed(self))
        return row

    async def action_add_upstream(self) -> None:
        """Add an empty row below the current one (at the end when none has the focus)."""
        row = self.current
        await self.insert_row(self._rows.index(row) + 1 if row is not None else len(self._rows))

    def action_remove_upstream(self) -> None:
        row = self.current
        if row is not None:
            self.remove_row(row)

    def remove_row(self, row: UpstreamRow) -> None:
        """Remove `row`; the focus goes to the row that takes its place (or the add button)."""
        index = self._rows.index(row)
        self._rows.remove(row)
        row.remove()
        if self._rows:
            self._rows[min(index, len(self._rows) - 1)].url.focus()
        else:
            self.query_one(".add-row", Button).focus()
        self.post_message(self.Changed(self))

    def action_move(self, delta: int) -> None:
        row = self.current
        if row is not None:
            self.move_row(row, delta)

    def move_row(self, row: UpstreamRow, delta: int) -> None:
        """Move `row` up (-1) or down (+1); the focus stays in it."""
        index = self._rows.index(row)
        to = index + delta
        if not 0 <= to < len(self._rows) or to == index:
            return
        focused = self.screen.focused
        other = self._rows[to]
        container = self.query_one(".rows")
        if delta < 0:
            container.move_child(row, before=other)
        else:
            container.move_child(row, after=other)
        self._rows[index], self._rows[to] = other, row
        if focused is not None:
            focused.focus()
        row.scroll_visible()
        self.post_message(self.Changed(self))

    @on(Button.Pressed, ".move-up")
    @on(Button.Pressed, ".move-down")
    def _move_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        row = next((r for r in self._rows if event.button in (r.up_button, r.down_button)), None)
        if row is not None:
            self.move_row(row, -1 if event.button is row.up_button else 1)

    @on(Input.Submitted, ".upstream-url")
    @on(Input.Blurred, ".upstream-url")
    async def _url_left(self, event: Input.Submitted | Input.Blurred) -> None:
        """Several URLs in one row become a row each (with the row's options)."""
        row = next((r for r in self._rows if r.url is event.input), None)
        if row is None:
            return
        if isinstance(event, Input.Submitted):
            event.stop()
        urls = row.urls
        if len(urls) < 2:
            return
        row.url.value = urls[0]
        index = self._rows.index(row)
        for i, url in enumerate(urls[1:], start=1):
            new = UpstreamRow(Upstream(url))
            new.weight.value, new.backup.value, new.max_conns.value = (
                row.weight.value,
                row.backup.value,
                row.max_conns.value,
            )
            await self.insert_row(index + i, new, focus=False)

    # --- errors --------------------------------------------------------------------------

    def show_problems(self, messages: Sequence[str]) -> None:
        """Mark the rows that the loader's messages name ("item 2: ..."); the messages
        themselves are shown under the list by its field."""
        named: set[int] = set()
        for message in messages:
            if m := re.match(r"item (\d+):", message):
                named.add(int(m.group(1)) - 1)
            elif m := re.search(r'"([^"]+)" is listed twice', message):
                named.update(i for i, url in enumerate(self.urls()) if url == m.group(1))
        # "item N" counts upstreams, not rows: a row may hold several (until it is left).
        by_row: dict[int, Sequence[str]] = {}
        n = 0
        for r, row in enumerate(self._rows):
            count = len(row.urls)
            if any(n <= i < n + count for i in named):
                by_row[r] = ("",)
            n += count
        for r, row in enumerate(self._rows):
            row.set_class(r in by_row, "-invalid")

    def focus_invalid(self) -> bool:
        """Focus the first row marked invalid (or the first row)."""
        for row in self._rows:
            if row.has_class("-invalid"):
                row.url.focus()
                return True
        return focus_first(self)
