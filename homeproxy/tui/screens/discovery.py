"""`DiscoveryScreen`: the services mDNS finds on the LAN, and adding one as a site.

The rows come from the runtime's `ServiceDirectory` (discovery writes it from
its own thread); the screen reads it again whenever a `DiscoveryEventsArrived`
batch or a config change arrives, and when it comes back into view, so
nothing is missed while another screen shows. Adding a service opens the site
editor filled in: a name and host names from the instance name, and the
`mdns://` upstream that follows the device when its address changes.

homeproxy's own adverts (`DiscoveredService.own`: the browser knows them by
the instance id in their TXT, or by homeproxy's addresses and port) are shown
dimmed, labelled "this homeproxy", and cannot be added: the site would forward
every request back to homeproxy.

Every string here came from the network: it is shown as `Text`, never markup, with
control characters escaped (`safe_text`: discovery cleans names and TXT records on the
way in, but what reaches the terminal is the TUI's to guard). That text is built in
`discovery_view.py`, which has no Textual.
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.widgets.data_table import CellDoesNotExist

from homeproxy.config import Config, Site
from homeproxy.config.model import Upstream
from homeproxy.discovery.service import DiscoveredService, slugify
from homeproxy.tui.bridge import ConfigEventArrived, DiscoveryEventsArrived
from homeproxy.tui.format import safe_text
from homeproxy.tui.screens.discovery_view import (
    OWN_STYLE,
    THIS_HOMEPROXY,
    DiscoveryView,
    InterfaceView,
    NameView,
    detail_text,
    interfaces_text,
    mapped_sites,
    names_text,
    status_text,
    suggestion_note,
)
from homeproxy.tui.screens.site_editor import SiteEditorModal, new_site
from homeproxy.tui.services import Services
from homeproxy.tui.widgets.service_table import COLUMNS, ServiceTable, matches, row_cells

__all__ = [
    "OWN_STYLE",
    "THIS_HOMEPROXY",
    "DiscoveryScreen",
    "DiscoveryView",
    "InterfaceView",
    "NameView",
    "detail_text",
    "interfaces_text",
    "mapped_sites",
    "names_text",
    "status_text",
    "suggest_site",
    "suggestion_note",
]

# --- the site a service suggests -------------------------------------------------------


def suggest_site(service: DiscoveredService, config: Config) -> Site:
    """A new site for `service`: named after its instance (made unique), answering `<name>.local` and
    `<name>.<discovery.domain>`, forwarding to its `mdns://` name, with the `[defaults]`."""
    slug = slugify(service.instance)
    taken_hosts = {h.lower() for s in config.sites for h in s.hosts}
    domain = config.discovery.domain
    name, n = slug, 2
    while True:
        hosts = tuple(dict.fromkeys((f"{name}.local", f"{name}.{domain}")))
        if config.site(name) is None and not taken_hosts.intersection(hosts):
            break
        name, n = f"{slug}-{n}", n + 1
    return replace(
        new_site(config.defaults),
        name=name,
        hosts=hosts,
        upstreams=(Upstream(str(service.ref)),),
        verify_upstream=service.scheme != "https",
    )


# --- the screen ------------------------------------------------------------------------


class DiscoveryScreen(Screen[None]):
    """Services found on the LAN over mDNS; add one as a site."""

    TITLE = "Discovery"
    HELP = (
        "The web UIs and devices that announce themselves on the LAN over mDNS (Bonjour/Avahi): each with its "
        "type, address, path and the site that already points at it. The top lines say what is browsed, on "
        "which interfaces, and which `.local` names homeproxy answers for. Type to filter "
        "(**{key:discovery.filter}**); **Enter** or **{key:discovery.add}** opens the site editor filled in "
        "from the selected service: its upstream is the service's `mdns://` name, so the site follows the "
        "device when its address changes. homeproxy's own adverts are dimmed and marked *this homeproxy*; "
        "they cannot be added, since they loop back."
    )
    BINDINGS = [
        Binding(
            "a",
            "add",
            "Add as site",
            id="discovery.add",
            tooltip="Open the site editor filled in from the selected service",
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            id="discovery.filter",
            tooltip="Filter by name, type, address or host",
        ),
        Binding(
            "escape",
            "clear_filter",
            "Clear filter",
            id="discovery.clear-filter",
            tooltip="Show every service again",
            show=False,
        ),
    ]

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.query_text = ""
        """The filter, lower case."""
        self._shown: list[DiscoveredService] = []
        self._status: Text | None = None
        self._dimmed: set[str] = set()
        """Rows shown dimmed (homeproxy's own adverts)."""
        self._sites: dict[str, str] = {}
        """The Site column's text by service key, as last shown."""

    @property
    def table(self) -> ServiceTable:
        return self.query_one("#services", ServiceTable)

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        yield Static(id="discovery-status")
        yield Input(placeholder="/ filter by name, type, address or host", compact=True, id="discovery-filter")
        yield ServiceTable(id="services")
        yield Static(id="discovery-empty")
        yield Static(id="service-detail")
        yield Static(id="discovery-count")
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()
        self.sync()
        self.set_interval(1.0, self._tick)

    def on_screen_resume(self) -> None:
        # Batches go to the visible screen only: catch up with the directory.
        self.sync()

    def _tick(self) -> None:
        # Discovery's state (running, interfaces, an error) changes without an event.
        if self.is_current:
            self._show_status()
            self._dim_own_rows()  # the table re-renders cells when it is resized

    @on(DiscoveryEventsArrived)
    def _discovered(self, _message: DiscoveryEventsArrived) -> None:
        self.sync()

    @on(ConfigEventArrived)
    def _config_changed(self, _message: ConfigEventArrived) -> None:
        self.sync()

    # --- rendering -----------------------------------------------------------------------

    def sync(self) -> None:
        """Show the directory as it is now (the row under the cursor stays there)."""
        runtime = self.services
        config = runtime.store.config
        every = runtime.directory.snapshot()
        sites = mapped_sites(runtime.directory, every, config)
        self._shown = [s for s in every if matches(s, self.query_text)]
        self.table.show(self._shown, sites)
        self._sites = sites
        self._dim_own_rows()
        self._show_status()
        self._show_detail()
        own = sum(1 for s in every if s.own)
        count = Text(f"{len(every)} service{'s' if len(every) != 1 else ''} · {len(sites) - own} mapped")
        if self.query_text:
            count.append(f" · {len(self._shown)} match the filter")
        if own:
            count.append(f" · {own} {THIS_HOMEPROXY}", style=OWN_STYLE)
        resolving = sum(1 for s in every if not s.resolved)
        if resolving:
            count.append(f" · {resolving} resolving", style="dim")
        if runtime.directory.refused:
            count.append(
                f" · {runtime.directory.refused} more ignored: the table is full ({runtime.directory.max_services})",
                style="yellow",
            )
        self.query_one("#discovery-count", Static).update(count)
        empty = self.query_one("#discovery-empty", Static)
        if not every:
            empty.update(Text("No services found yet. Devices answer within a few seconds of a browse."))
        elif not self._shown:
            empty.update(Text.assemble("No service matches ", ('"' + self.query_text + '"', "bold"), "."))
        was_empty = self.has_class("-empty")
        self.set_class(not self._shown, "-empty")
        if self._shown:
            # The table cannot keep the focus while it is hidden (nothing found, or nothing matched);
            # Textual moves it on to the filter. Take it back when rows return, unless someone is typing.
            filter_ = self.query_one("#discovery-filter", Input)
            idle_filter = self.focused is filter_ and was_empty and not filter_.value
            if self.focused is None or idle_filter:
                self.table.focus()

    def _dim_own_rows(self) -> None:
        """Dim the rows of homeproxy's own adverts, and undim rows that are no longer (the table
        updates only the cells whose text or style it changed)."""
        table = self.table
        own = {s.key: s for s in self._shown if s.own}
        for key in own.keys() | self._dimmed:
            service = own.get(key)
            restore = None if service is not None else self.services.directory.get(key)
            for i, (column, _heading) in enumerate(COLUMNS):
                try:
                    cell = table.get_cell(key, column)
                except CellDoesNotExist:
                    break  # not shown (filtered out, or gone)
                dimmed = isinstance(cell, Text) and str(cell.style) == OWN_STYLE and not cell.spans
                if service is not None and not dimmed:
                    plain = cell.plain if isinstance(cell, Text) else str(cell)
                    table.update_cell(key, column, Text(plain, style=OWN_STYLE, no_wrap=True, overflow="ellipsis"))
                elif service is None and dimmed and restore is not None:
                    # As the table draws it, cut to the width it had (the table cut it so).
                    fresh = row_cells(restore, self._sites.get(key, ""))[i]
                    if fresh.cell_len > cell.cell_len:
                        fresh.truncate(cell.cell_len, overflow="ellipsis")
                    table.update_cell(key, column, fresh)
        self._dimmed = set(own)

    def _show_status(self) -> None:
        runtime = self.services
        view = cast("DiscoveryView | None", runtime.discovery)
        text = status_text(view, runtime.store.config.discovery)
        if text != self._status:  # the timer mostly finds it unchanged
            self._status = text
            self.query_one("#discovery-status", Static).update(text)

    def _show_detail(self) -> None:
        service = self.selected
        self.query_one("#service-detail", Static).update(detail_text(service) if service else "")

    @property
    def selected(self) -> DiscoveredService | None:
        """The service under the cursor."""
        key = self.table.selected_key
        return self.services.directory.get(key) if key is not None else None

    @on(DataTable.RowHighlighted, "#services")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    # --- filter --------------------------------------------------------------------------

    @on(Input.Changed, "#discovery-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value.strip().lower()
        self.sync()

    @on(Input.Submitted, "#discovery-filter")
    def _filter_submitted(self) -> None:
        self.table.focus()

    def action_filter(self) -> None:
        """Put the focus in the filter."""
        self.query_one("#discovery-filter", Input).focus()

    def action_clear_filter(self) -> None:
        """Empty the filter and go back to the table."""
        self.query_one("#discovery-filter", Input).value = ""
        self.table.focus()

    # --- adding --------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#services")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_add()

    def action_add(self) -> None:
        """Open the site editor filled in from the selected service."""
        service = self.selected
        if service is None:
            self.notify("Select a service first.", title="Discovery", markup=False)
            return
        if service.own:
            # The instance name came from the LAN: plain text (markup=False), never markup.
            self.notify(
                f"{service.instance}: this is homeproxy itself: adding it would loop back (every request "
                "would come back to homeproxy). It is homeproxy's own advert for one of its sites.",
                title=THIS_HOMEPROXY.capitalize(),
                severity="warning",
                markup=False,
            )
            return
        if not service.resolved:
            self.notify(
                safe_text(service.instance) + " has not told its address and port yet, so there is nothing to "
                "forward to. It can be added once it resolves (its row then shows an address).",
                title="Not resolved yet",
                severity="warning",
                markup=False,  # the name came from the LAN
            )
            return
        store = self.services.store
        site = suggest_site(service, store.config)
        self.app.push_screen(SiteEditorModal(self.services, start=site, note=suggestion_note(service)))
