"""`SitesScreen`: the sites, with add, edit, duplicate, enable/disable, delete and cache purge.

Every change goes through `ConfigStore` (validated, applied live, saved with the
file's comments kept), in a worker thread because applying waits on the engine.
The table follows the store: it is redrawn on every config event and whenever
the screen comes back from the editor.

The table's columns and a site's row are built without Textual in `sites_table.py`.

Purging a site's cache is the one place the TUI calls the engine directly
(`Engine.purge`, in a thread worker): it is an operation on the running proxy,
not a change to the config, so there is nothing for the store to validate or save.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from homeproxy.config import Config, ConfigStore, Site
from homeproxy.tui.bridge import ConfigEventArrived, UpstreamHealthArrived
from homeproxy.tui.format import LEGEND, LEGEND_SHORT
from homeproxy.tui.screens.confirm import ConfirmModal
from homeproxy.tui.screens.site_editor import SiteEditorModal
from homeproxy.tui.screens.sites_table import COLUMNS, SHRINKABLE, fit_widths, site_cells
from homeproxy.tui.screens.upstreams import UpstreamsScreen
from homeproxy.tui.services import Services
from homeproxy.tui.summary import site_summary

__all__ = ["COLUMNS", "SHRINKABLE", "SitesScreen", "fit_widths", "site_cells"]


class _BarButton(Button, can_focus=False):
    """A button for the mouse; the keyboard uses the bindings (the table keeps the focus)."""


class SitesScreen(Screen[None]):
    """The sites, and what can be done to them."""

    TITLE = "Sites"
    CSS_PATH = "sites.tcss"
    #: The detail pane needs room: only on terminals this tall.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("a", "add", "Add", id="sites.add", tooltip="Add a site (it starts from [defaults])"),
        Binding("e", "edit", "Edit", id="sites.edit", tooltip="Edit the selected site"),
        Binding("enter", "edit", "Edit", id="sites.edit.enter", tooltip="Edit the selected site", show=False),
        Binding("d", "duplicate", "Duplicate", id="sites.duplicate", tooltip="Add a copy of the selected site"),
        Binding(
            "space",
            "toggle_enabled",
            "On/off",
            id="sites.toggle",
            tooltip="Enable or disable the selected site (applied live)",
        ),
        Binding(
            "m",
            "toggle_maintenance",
            "Maintenance",
            id="sites.maintenance",
            tooltip="Put the selected site in maintenance (a 503 page, upstreams untouched) or back (applied live)",
            show=False,  # the 80-column footer is full (Help lists it)
        ),
        Binding(
            "u",
            "upstreams",
            "Upstreams",
            id="sites.upstreams",
            tooltip="The selected site's upstreams: health, last check, requests, errors and latency of each",
            show=False,  # the 80-column footer is full (Help lists it)
        ),
        Binding("x,delete", "delete", "Delete", id="sites.delete", tooltip="Delete the selected site (asks first)"),
        Binding(
            "p",
            "purge",
            "Purge cache",
            id="sites.purge",
            tooltip="Empty the selected site's cache, so the next requests go to the upstream (asks first)",
        ),
    ]

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services

    @property
    def store(self) -> ConfigStore:
        return self.services.store

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        with Horizontal(id="sites-bar"):
            yield _BarButton("+ Add", id="add-site", compact=True, tooltip="Add a site (a)")
            yield _BarButton("Edit", id="edit-site", compact=True, tooltip="Edit the selected site (e, enter)")
            yield _BarButton("Duplicate", id="duplicate-site", compact=True, tooltip="Copy the selected site (d)")
            yield _BarButton("On/off", id="toggle-site", compact=True, tooltip="Enable or disable it (space)")
            yield _BarButton("Delete", id="delete-site", compact=True, variant="error", tooltip="Delete it (x, delete)")
            yield _BarButton("Purge cache", id="purge-site", compact=True, tooltip="Empty its cache (p)")
        with Vertical(id="sites-body"):
            yield DataTable(id="sites-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="sites-empty")
            yield Static(id="site-detail")
        yield Static(id="sites-legend")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sites-empty", Static).update(
            Text.assemble(
                ("No sites yet.\n\n", "bold"),
                "Press ",
                ("a", "bold"),
                " to add one: a name, the host names it answers and the upstream it forwards to.",
            )
        )
        self.show_config(self.store.config)
        self.call_after_refresh(self._fit_table)
        # Health changes come as events, but "not checked yet" turns into "up" without one.
        self.set_interval(1.0, self._refresh_health)

    def on_screen_resume(self) -> None:
        self.show_config(self.store.config)
        self.call_after_refresh(self._fit_table)  # the terminal may have been resized meanwhile

    def on_resize(self, _event: Resize) -> None:
        self.call_after_refresh(self._fit_table)  # once the table has its new size

    @on(ConfigEventArrived)
    def _config_changed(self, _message: ConfigEventArrived) -> None:
        self.show_config(self.store.config)

    @on(UpstreamHealthArrived)
    def _health_changed(self, _message: UpstreamHealthArrived) -> None:
        self._refresh_health(read=False)  # the app's book already has the change

    def _refresh_health(self, read: bool = True) -> None:
        """Redraw the upstreams' dots (and the detail pane) from the engine's health."""
        if read:
            self.services.refresh_health()
        table = self.query_one("#sites-table", DataTable)
        sites = self.store.config.sites
        if [key.value for key in table.rows] != [site.name for site in sites]:
            return  # a config event is on its way and redraws everything
        for site in sites:
            table.update_cell(site.name, "upstreams", site_cells(site, self.services.upstream_state)[-1])
        self._show_detail()

    # --- rendering -----------------------------------------------------------------------

    _widths: dict[str, int] | None = None
    """The table's column widths now."""

    def _fit_table(self) -> None:
        """Lay the table out again if its width calls for other column widths."""
        if self._widths_for(self.store.config) != self._widths:
            self.show_config(self.store.config)

    def _widths_for(self, config: Config) -> dict[str, int]:
        """Each column as wide as its longest cell, narrowed (…) to fit the table's width."""
        table = self.query_one("#sites-table", DataTable)
        natural = {key: cell_len(label) for label, key in COLUMNS}
        for site in config.sites:
            for (_label, key), cell in zip(COLUMNS, site_cells(site, self.services.upstream_state), strict=True):
                natural[key] = max(natural[key], cell.cell_len)
        width = (table.region.width or self.app.size.width) - table.styles.scrollbar_size_vertical
        return fit_widths(natural, width, SHRINKABLE)

    def show_config(self, config: Config, select: str | None = None) -> None:
        """Redraw the table, keeping the cursor on the same site (or on `select`)."""
        self.services.refresh_health()  # a new site's upstreams have their entries now
        table = self.query_one("#sites-table", DataTable)
        current = select or self.selected_name
        row = table.cursor_row
        widths = self._widths_for(config)
        if widths != self._widths:
            self._widths = widths
            table.clear(columns=True)
            for label, key in COLUMNS:
                table.add_column(label, width=widths[key], key=key)
        else:
            table.clear()
        for site in config.sites:
            table.add_row(*site_cells(site, self.services.upstream_state), key=site.name)
        legend = LEGEND if cell_len(LEGEND) + 2 <= self.app.size.width else LEGEND_SHORT
        self.query_one("#sites-legend", Static).update(Text(legend, style="dim"))
        names = [s.name for s in config.sites]
        if names:
            table.move_cursor(row=names.index(current) if current in names else min(row, len(names) - 1))
        self.set_class(not names, "-no-sites")
        self._show_detail()

    @on(DataTable.RowHighlighted, "#sites-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        site = self.selected
        state = self.services.upstream_state
        self.query_one("#site-detail", Static).update(
            site_summary(site, lambda url: state(site.name, url)) if site else ""
        )
        purge = self.query_one("#purge-site", Button)
        purge.disabled = site is None or not site.cache.enabled
        purge.tooltip = "Empty its cache (p)" if not purge.disabled else "Its cache is off: nothing to purge"

    @property
    def selected_name(self) -> str | None:
        """The name of the site under the cursor."""
        table = self.query_one("#sites-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return key

    @property
    def selected(self) -> Site | None:
        name = self.selected_name
        return self.store.config.site(name) if name is not None else None

    # --- actions -------------------------------------------------------------------------

    @on(Button.Pressed, "#sites-bar Button")
    def _bar_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        actions = {
            "add-site": self.action_add,
            "edit-site": self.action_edit,
            "duplicate-site": self.action_duplicate,
            "toggle-site": self.action_toggle_enabled,
            "delete-site": self.action_delete,
            "purge-site": self.action_purge,
        }
        if event.button.id in actions:
            actions[event.button.id]()

    @on(DataTable.RowSelected, "#sites-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_edit()

    def _chosen(self) -> Site | None:
        site = self.selected
        if site is None:
            self.notify("There is no site yet: press a to add one.", title="Sites", markup=False)
        return site

    def action_add(self) -> None:
        """Open the editor on a new site."""
        self.app.push_screen(SiteEditorModal(self.services), self._edited)

    def action_edit(self) -> None:
        """Open the editor on the selected site."""
        if site := self._chosen():
            self.app.push_screen(SiteEditorModal(self.services, site), self._edited)

    def action_duplicate(self) -> None:
        """Open the editor on a copy of the selected site."""
        if site := self._chosen():
            self.app.push_screen(SiteEditorModal(self.services, site, duplicate=True), self._edited)

    def _edited(self, site: Site | None) -> None:
        if site is not None:
            self.show_config(self.store.config, select=site.name)

    def action_upstreams(self) -> None:
        """Open the selected site's upstreams."""
        if site := self._chosen():
            self.app.push_screen(UpstreamsScreen(self.services, site.name))

    def action_toggle_enabled(self) -> None:
        """Enable or disable the selected site."""
        self._toggle("enabled", "enabled", "disabled: its hosts now get the 404 page")

    def action_toggle_maintenance(self) -> None:
        """Put the selected site in maintenance, or take it out."""
        self._toggle(
            "maintenance", "in maintenance: a 503 page with Retry-After, upstreams untouched", "back from maintenance"
        )

    def _toggle(self, key: str, on_text: str, off_text: str) -> None:
        """Flip the selected site's boolean `key`, live, and say what it does now."""
        site = self._chosen()
        if site is None:
            return
        name, value = site.name, not getattr(site, key)
        done = f'Site "{name}" {on_text if value else off_text} (applied live).'
        self._change(done, lambda: self.store.set_site_option(name, key, value))

    def action_delete(self) -> None:
        """Delete the selected site, after asking."""
        site = self._chosen()
        if site is None:
            return
        name = site.name

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self._change(
                    f'Site "{name}" deleted (applied live; the previous file is kept in the backups).',
                    lambda: self.store.remove_site(name),
                )

        self.app.push_screen(
            ConfirmModal(
                f'Delete the site "{name}"? Its hosts ({", ".join(site.hosts)}) will get the 404 page.',
                confirm="Delete",
                cancel="Keep",
            ),
            answered,
        )

    def action_purge(self) -> None:
        """Empty the selected site's cache, after asking (the key says why not if its cache is off)."""
        site = self._chosen()
        if site is None:
            return
        name = site.name
        if not site.cache.enabled:
            self.notify(
                f'The cache is off for "{name}": there is nothing to purge (turn it on in the editor, e).',
                title="Purge cache",
                severity="warning",
                markup=False,
            )
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self._purge(name)

        self.app.push_screen(
            ConfirmModal(
                f'Purge the cache of "{name}"? Its responses are fetched from the upstream again when asked for.',
                confirm="Purge",
                cancel="Keep",
                danger=False,
            ),
            answered,
        )

    @work(thread=True, exclusive=True, group="sites-purge")
    def _purge(self, name: str) -> None:
        # In a thread: Engine.purge waits on the engine's loop. The one direct engine call (see the module).
        engine = self.services.engine
        if engine is None or not engine.running:
            self.app.call_from_thread(
                self.notify, "The engine is not running.", title="Not purged", severity="error", markup=False
            )
            return
        try:
            count = engine.purge(name)
        except Exception as e:  # the engine stopped meanwhile, or timed out
            self.app.call_from_thread(
                self.notify, f"{type(e).__name__}: {e}", title="Not purged", severity="error", markup=False
            )
            return
        what = "1 cached response" if count == 1 else f"{count:,} cached responses"
        self.app.call_from_thread(self.notify, f'Purged {what} of "{name}".', title="Purge cache", markup=False)

    @work(group="sites-change")
    async def _change(self, done: str, change: Callable[[], object]) -> None:
        try:
            await asyncio.to_thread(change)
        except Exception as e:  # invalid, the engine refused, the file could not be written
            self.notify(f"{type(e).__name__}: {e}", title="Not changed", severity="error", markup=False)
        else:
            self.notify(done, title="Sites", markup=False)
        self.show_config(self.store.config)
