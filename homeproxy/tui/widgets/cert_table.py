"""`CertTable`: one row per TLS site's certificate, coloured by how soon it ends; its cells' wording.

The table is given every `CertStatus` each time (`show`, about once a second)
and changes only the cells that differ, so the cursor stays put while a
renewal moves through its steps. Expiry colours: green while more than a third
of the lifetime is left (renewal not due yet) and more than 7 days; yellow once
renewal is due or within 7 days; red when expired or the last attempt failed.
Every cell is `Text` (names and errors may carry anything), never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from homeproxy.certs.status import CertStatus

#: Column key, heading.
COLUMNS = (
    ("site", "Site"),
    ("names", "Names"),
    ("issuer", "Issuer"),
    ("expires", "Expires"),
    ("state", "Renewal"),
    ("next", "Next"),
)
#: The widest each column may grow.
CAPS = {"site": 20, "names": 48, "issuer": 9, "expires": 17, "state": 26, "next": 12}
#: When the table is too narrow, these columns give way (ending in "…"), in this order, down to these widths.
SHRINK = (("names", 14), ("state", 10), ("site", 8), ("next", 9), ("names", 8), ("expires", 10))
#: Yellow from this close to the end, even when renewal is not due yet (a long-lived imported certificate).
SOON = timedelta(days=7)

ISSUERS = {"internal": "local CA", "acme": "ACME", "files": "own files"}


def span(delta: timedelta) -> str:
    """A length of time, short: "29d", "5h", "12m", "40s"."""
    secs = abs(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


def expiry_style(status: CertStatus, now: datetime) -> str:
    """ "green", "yellow" or "red" for the Expires cell (see the module docstring)."""
    if status.not_after is None or status.not_after <= now or status.state in ("error", "missing"):
        return "red"
    due = status.next_renewal is not None and status.next_renewal <= now
    return "yellow" if due or status.not_after - now <= SOON or status.state == "temporary" else "green"


def expires_cell(status: CertStatus, now: datetime) -> Text:
    """ "2027-02-14 · 30d" (or "· expired"), coloured; "none yet" without a certificate."""
    if status.not_after is None:
        return Text("none yet", style="red")
    left = status.not_after - now
    when = "expired" if left.total_seconds() <= 0 else span(left)
    return Text(f"{status.not_after:%Y-%m-%d} · {when}", style=expiry_style(status, now))


def state_cell(status: CertStatus) -> Text:
    """The last renewal's state, or the step of the one under way."""
    state = status.state
    if state in ("issuing", "renewing"):
        return Text(f"… {status.step or state}", style="cyan")
    if state == "ok":
        return Text("✓ ok", style="green")
    if state == "temporary":
        return Text(f"◐ temporary{' · ' + status.step if status.step else ''}", style="yellow")
    if state == "error":
        return Text("✗ failed", style="bold red")
    if state == "missing":
        return Text("○ missing", style="red")
    return Text(state)


def next_cell(status: CertStatus, now: datetime) -> Text:
    """When homeproxy tries next: "in 20d", "due now"; imported files are watched instead."""
    if status.state in ("issuing", "renewing"):
        return Text("now", style="cyan")
    if status.next_renewal is None:
        return Text("on change" if status.issuer == "files" else "—", style="dim")
    left = status.next_renewal - now
    if left.total_seconds() <= 0:
        return Text("due now", style="yellow")
    verb = "retry" if status.state == "error" else "in"
    return Text(f"{verb} {span(left)}")


def row_cells(status: CertStatus, now: datetime) -> tuple[Text, ...]:
    """One row, in `COLUMNS` order."""
    names = ", ".join(status.names) if status.names else "—"
    return (
        Text(status.site, style="bold"),
        Text(names, style="" if status.names else "dim"),
        Text(ISSUERS.get(status.issuer, status.issuer)),
        expires_cell(status, now),
        state_cell(status),
        next_cell(status, now),
    )


class CertTable(DataTable[Text]):
    """Certificates by site; `show()` them, read `selected_site`."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._shown: dict[str, tuple[str, ...]] = {}
        """Row key (the site) -> its cells' text and style, to tell what changed."""
        self._last: tuple[Sequence[CertStatus], datetime] | None = None

    def on_mount(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """No rows, and columns as narrow as their headings (DataTable's widths only ever grow)."""
        self.clear(columns=True)
        self._shown = {}
        for key, heading in COLUMNS:
            self.add_column(heading, key=key)

    @property
    def selected_site(self) -> str | None:
        """The site of the row under the cursor, or None."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None

    def show(self, statuses: Sequence[CertStatus], now: datetime) -> None:
        """Make the rows `statuses`, in their order; the row under the cursor stays under it."""
        self._last = (statuses, now)
        selected = self.selected_site
        wanted = {s.site: row_cells(s, now) for s in statuses}
        self._fit(wanted)
        order_changed = list(wanted) != [k for k in self._shown if k in wanted]
        if order_changed or any(k not in wanted for k in self._shown):
            self._reset()
        for key, cells in wanted.items():
            plain = tuple(c.plain + "\0" + str(c.style) for c in cells)
            old = self._shown.get(key)
            if old == plain:
                continue
            if old is None:
                self.add_row(*cells, key=key)
            else:
                for (column, _), cell, before, after in zip(COLUMNS, cells, old, plain, strict=True):
                    if before != after:
                        self.update_cell(key, column, cell, update_width=True)
            self._shown[key] = plain
        if selected is not None and selected in self._shown:
            index = self.get_row_index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index)

    def _fit(self, rows: dict[str, tuple[Text, ...]]) -> None:
        """Cut cells (in place, with "…") to their column's share of the width."""
        widths = {key: len(heading) for key, heading in COLUMNS}
        for cells in rows.values():
            for (key, _), cell in zip(COLUMNS, cells, strict=True):
                widths[key] = max(widths[key], cell.cell_len)
        limits = {key: min(widths[key], CAPS[key]) for key, _ in COLUMNS}
        # A cell of padding either side of each column, and one more for the scrollbar.
        excess = sum(limits.values()) - ((self.size.width or 120) - 2 * len(COLUMNS) - 1)
        for key, floor in SHRINK:
            if excess <= 0:
                break
            cut = min(excess, max(0, limits[key] - floor))
            limits[key] -= cut
            excess -= cut
        for cells in rows.values():
            for (key, _), cell in zip(COLUMNS, cells, strict=True):
                if cell.cell_len > limits[key]:
                    cell.truncate(limits[key], overflow="ellipsis")

    def on_resize(self) -> None:
        if self._last is not None:
            statuses, now = self._last
            self._reset()
            self.show(statuses, now)
