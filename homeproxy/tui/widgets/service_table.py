"""`ServiceTable`: the services discovery found, one row each, updated in place.

The table is given the whole list every time (`show`) and changes only what
differs: a service that changed gets its cells updated, a new one is added, a
lost one removed, and the row under the cursor stays under the cursor (rows
are keyed by the service's mDNS name). Every cell is a `Text` built from the
network strings with control characters escaped (`safe_text`), so a name such
as `[red]x[/]` shows as typed and an ESC in one reaches no terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from homeproxy.discovery.service import DiscoveredService
from homeproxy.tui.format import safe_text

#: Column key, heading.
COLUMNS = (("name", "Name"), ("type", "Type"), ("address", "Address:Port"), ("path", "Path"), ("site", "Site"))

NO_SITE = "—"

#: The widest each column but Name may grow; Name gets what is left (at least `MIN_NAME`).
CAPS = {"type": 18, "address": 24, "path": 12, "site": 16}
MIN_NAME = 12


def address_text(service: DiscoveredService) -> str:
    """`"192.168.1.20:32400"` (`"[fe80::1%eth0]:80"` for IPv6), or "" while unresolved."""
    if not service.resolved:
        return ""
    addr = service.addresses[0]
    return f"[{addr}]:{service.port}" if ":" in addr else f"{addr}:{service.port}"


def matches(service: DiscoveredService, query: str) -> bool:
    """Whether `query` (lower case) is in the service's name, type, an address or its host."""
    if not query:
        return True
    return any(
        query in part.lower()
        for part in (service.instance, service.label, service.type, service.host, *service.addresses)
    )


def row_cells(service: DiscoveredService, site: str) -> tuple[Text, ...]:
    """One row: name, type, address, path, site (all `Text`: these strings came from the LAN)."""
    address = safe_text(address_text(service))
    return (
        Text(safe_text(service.instance), style="bold" if site else "", no_wrap=True, overflow="ellipsis"),
        Text(safe_text(service.label), no_wrap=True, overflow="ellipsis"),
        Text(address) if address else Text("resolving…", style="dim italic"),
        Text(safe_text(service.path) or "/", style="" if service.path else "dim"),
        Text(safe_text(site), style="green") if site else Text(NO_SITE, style="dim"),
    )


def _sort_key(values: tuple[Any, ...]) -> tuple[str, str]:
    """(type, name), as the directory sorts, from a row's Type and Name cells."""
    label, name = values
    return (str(label).lower(), str(name).lower())


class ServiceTable(DataTable[Text]):
    """Discovered services; `show()` them, read `selected_key`."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._shown: dict[str, tuple[str, ...]] = {}
        """Row key -> the plain text of its cells, to tell what changed."""
        self._last: tuple[list[DiscoveredService], Mapping[str, str]] = ([], {})

    def on_mount(self) -> None:
        for key, heading in COLUMNS:
            self.add_column(heading, key=key)

    @property
    def selected_key(self) -> str | None:
        """The key (lower-case mDNS name) of the service under the cursor, or None."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:
            return None
        return key

    def show(self, services: Iterable[DiscoveredService], sites: Mapping[str, str]) -> None:
        """Make the rows `services` (already filtered), in order of type then name; `sites` maps a
        service's key to the site(s) that point at it. The row under the cursor stays under it."""
        services = list(services)
        self._last = (services, sites)
        selected = self.selected_key
        wanted: dict[str, tuple[Text, ...]] = {}
        for service in services:
            wanted[service.key] = row_cells(service, sites.get(service.key, ""))
        self._fit(wanted)
        for key in [k for k in self._shown if k not in wanted]:
            self.remove_row(key)
            del self._shown[key]
        added = False
        for key, cells in wanted.items():
            plain = tuple(c.plain + "\0" + str(c.style) for c in cells)
            old = self._shown.get(key)
            if old == plain:
                continue
            if old is None:
                self.add_row(*cells, key=key)
                added = True
            else:
                for (column, _), cell, before, after in zip(COLUMNS, cells, old, plain, strict=True):
                    if before != after:
                        self.update_cell(key, column, cell, update_width=True)
            self._shown[key] = plain
        if added:
            self.sort("type", "name", key=_sort_key)
        if selected is not None and selected in self._shown:
            index = self.get_row_index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index)

    def _fit(self, rows: Mapping[str, tuple[Text, ...]]) -> None:
        """Cut cells to their column's share of the width (in place), so that a long name or
        address cannot push the Site column off a narrow terminal."""
        widths = {key: len(heading) for key, heading in COLUMNS}
        for cells in rows.values():
            for (key, _), cell in zip(COLUMNS, cells, strict=True):
                widths[key] = max(widths[key], cell.cell_len)
        limits = {key: min(widths[key], cap) for key, cap in CAPS.items()}
        # Each column has a cell of padding on either side; one more for the scrollbar.
        room = (self.size.width or 120) - 2 * len(COLUMNS) - 1
        limits["name"] = max(MIN_NAME, room - sum(limits.values()))
        for cells in rows.values():
            for (key, _), cell in zip(COLUMNS, cells, strict=True):
                if cell.cell_len > limits[key]:
                    cell.truncate(limits[key], overflow="ellipsis")

    def on_resize(self) -> None:
        services, sites = self._last
        if services:
            self.show(services, sites)
