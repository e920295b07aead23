"""`DashboardScreen`: the engine's state and every site's numbers at a glance.

The sites table is laid out for the terminal's width (`table_layout`): the numbers
keep fixed widths, and when the names, hosts and upstreams do not fit beside them
the sparkline gets shorter, then Upstreams, Hosts and p50 go, in that order (the
Sites screen shows them in full). It is laid out again on every resize and config
change, so it never scrolls sideways; the status line likewise drops its least
useful parts rather than being cut. Each upstream has a dot for its health as the
engine tells it (green up, red down, yellow cooling down, grey not checked yet);
`u` opens the selected site's upstreams.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Sparkline, Static

from homeproxy import __version__
from homeproxy.config import Config, Site
from homeproxy.engine import TOTAL, SiteStats
from homeproxy.tui.bridge import ConfigEventArrived, UpstreamHealthArrived
from homeproxy.tui.format import (
    HEALTH_DOTS,
    LEGEND,
    LEGEND_SHORT,
    PADDING,
    duration,
    feature_flags,
    rate,
    site_name,
    sparkline,
)
from homeproxy.tui.screens.upstreams import UpstreamsScreen
from homeproxy.tui.services import Services

#: Seconds of history in the per-site sparklines (at most, at least, in steps of) and the total chart.
SPARK_SECONDS = 30
SPARK_MIN = 10
SPARK_STEP = 5
CHART_SECONDS = 120

#: Every column, in order: its key and heading (the sparkline's heading says how many seconds it covers).
COLUMNS = (
    ("name", "Site"),
    ("hosts", "Hosts"),
    ("upstreams", "Upstreams"),
    ("features", "On"),
    ("rps", "req/s"),
    ("p50", "p50"),
    ("p95", "p95"),
    ("errors", "err%"),
    ("hits", "hit%"),
    ("spark", "last"),
)
#: The widest each number gets ("999.9", "123.4ms", "100.0"), so the columns never jump.
FIXED_WIDTHS = {"features": 7, "rps": 5, "p50": 7, "p95": 7, "errors": 5, "hits": 4}
#: What goes, in this order, when the table would not fit (after hosts and upstreams were cut to `TEXT_CAPS`).
OPTIONAL = ("upstreams", "hosts", "p50")
#: Widths that the hosts and upstreams columns are cut to, in turn, before a column is dropped.
TEXT_CAPS = (28, 24, 20, 16)


@dataclass(frozen=True, slots=True)
class TableLayout:
    """Which columns the sites table shows, how wide each is, and the sparkline's seconds."""

    columns: tuple[str, ...]
    widths: tuple[int, ...]
    spark: int


def table_layout(width: int, natural: Mapping[str, int]) -> TableLayout:
    """The columns that fit in `width` cells, given the content widths of the text columns
    (`natural`: "name", "hosts", "upstreams"); the numbers have their `FIXED_WIDTHS`.

    Hosts and upstreams are first cut (with "…") to `TEXT_CAPS`, then the `OPTIONAL`
    columns go one by one, then the site names give way."""
    keys = [key for key, _label in COLUMNS if key != "spark"]
    dropping = list(OPTIONAL)
    caps = [None, *TEXT_CAPS]
    while True:
        cap = caps[0]
        widths = {key: FIXED_WIDTHS.get(key) or natural.get(key, 0) for key in keys}
        if cap is not None:
            for key in ("hosts", "upstreams"):
                if key in widths:
                    widths[key] = min(widths[key], cap)
        room = width - sum(w + PADDING for w in widths.values()) - PADDING
        if room >= SPARK_MIN:
            break
        if len(caps) > 1:
            caps.pop(0)
        elif dropping:
            keys.remove(dropping.pop(0))
        else:
            break
    if room < SPARK_MIN:  # still too narrow: the site names give way (ellipsis), down to a few cells
        widths["name"] = max(4, widths["name"] - (SPARK_MIN - room))
        room = SPARK_MIN
    spark = min(SPARK_SECONDS, room - room % SPARK_STEP)
    return TableLayout((*keys, "spark"), (*widths.values(), spark), spark)


def _fit(text: Text) -> Text:
    """A cell that ends in "…" if its column is narrower than it."""
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


class DashboardScreen(Screen[None]):
    """Engine state, a chart of the total request rate, and a table of sites."""

    TITLE = "Dashboard"
    CSS_PATH = "dashboard.tcss"

    BINDINGS = [
        Binding(
            "u",
            "upstreams",
            "Upstreams",
            id="dashboard.upstreams",
            tooltip="The selected site's upstreams: health, last check, requests, errors and latency of each",
        ),
    ]

    table_plan: TableLayout | None = None
    """How the sites table is laid out now (None before the first config is shown)."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        with Vertical(id="dashboard"):
            yield Static(id="engine-status")
            yield Static(id="banner")
            yield Sparkline([], id="total-rate", summary_function=max)
            yield DataTable(id="sites", cursor_type="row", zebra_stripes=True)
            yield Static(id="empty")
            yield Static(id="legend")
        yield Footer()

    def on_mount(self) -> None:
        self._show_config(self.services.store.config)
        self.refresh_numbers()
        self.set_interval(1.0, self.refresh_numbers)
        self.call_after_refresh(self._fit_table)

    def on_screen_resume(self) -> None:
        self._show_config(self.services.store.config)
        self.refresh_numbers()
        self.call_after_refresh(self._fit_table)  # the terminal may have been resized meanwhile

    def on_resize(self, _event: Resize) -> None:
        self.refresh_numbers()  # the status line
        self.call_after_refresh(self._fit_table)  # once the table has its new size

    @on(ConfigEventArrived)
    def _config_changed(self, _message: ConfigEventArrived) -> None:
        self._show_config(self.services.store.config)
        self.refresh_numbers()

    @on(UpstreamHealthArrived)
    def _health_changed(self, _message: UpstreamHealthArrived) -> None:
        self.refresh_numbers()  # the dots, at once (the app's book already has the change)

    def action_upstreams(self) -> None:
        """Open the selected site's upstreams."""
        table = self.query_one("#sites", DataTable)
        if not table.row_count:
            self.notify("There is no site yet.", title="Upstreams", markup=False)
            return
        name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if name is not None:
            self.app.push_screen(UpstreamsScreen(self.services, name))

    # --- rendering -----------------------------------------------------------------------

    def _fit_table(self) -> None:
        """Lay the table out again if its width calls for other columns."""
        config = self.services.store.config
        if self._layout_for(config) != self.table_plan:
            self._show_config(config)
            self.refresh_numbers()

    @property
    def _width(self) -> int:
        """Cells the table's columns may take: its width (the terminal's, before the first layout)
        less its vertical scrollbar's, kept free so that one appearing never scrolls it sideways."""
        table = self.query_one("#sites", DataTable)
        return (table.region.width or self.app.size.width) - table.styles.scrollbar_size_vertical

    def _layout_for(self, config: Config) -> TableLayout:
        natural = {key: cell_len(label) for key, label in COLUMNS}
        for site in config.sites:
            cells = self._text_cells(site)
            for key in ("name", "hosts", "upstreams"):
                natural[key] = max(natural[key], cell_len(cells[key].plain))
        return table_layout(self._width, natural)

    def _show_config(self, config: Config) -> None:
        self.services.refresh_health()  # a new site's upstreams have their entries now
        table = self.query_one("#sites", DataTable)
        cursor = table.cursor_row
        layout = self._layout_for(config)
        if layout != self.table_plan:
            self.table_plan = layout
            table.clear(columns=True)
            labels = dict(COLUMNS)
            for key, width in zip(layout.columns, layout.widths, strict=True):
                label = f"last {layout.spark}s" if key == "spark" else labels[key]
                table.add_column(label, width=width, key=key)
        else:
            table.clear()
        for site in config.sites:
            cells = self._site_cells(site, None)
            table.add_row(*(cells[key] for key in layout.columns), key=site.name)
        if config.sites:
            table.move_cursor(row=min(cursor, len(config.sites) - 1))
        self.query_one("#empty", Static).update(
            Text.assemble(
                ("No sites yet.\n\n", "bold"),
                "Press ",
                ("2", "bold"),
                " for Sites and ",
                ("a", "bold"),
                " to add one, or add a [[sites]] table to ",
                (str(self.services.config_path), "bold"),
                ".",
            )
        )
        legend = LEGEND if cell_len(LEGEND) + 2 <= self.app.size.width else LEGEND_SHORT
        self.query_one("#legend", Static).update(Text(legend, style="dim"))
        self.set_class(not config.sites, "-no-sites")

    def _text_cells(self, site: Site) -> dict[str, Text]:
        """The site's name, hosts and upstreams (the columns whose width depends on the config)."""
        name = site_name(site)
        ups = Text()
        for i, url in enumerate(site.upstream_urls[:2]):
            if i:
                ups.append(" ")
            dot, style = HEALTH_DOTS.get(self.services.upstream_state(site.name, url), HEALTH_DOTS[""])
            ups.append(dot + " ", style=style)
            # http(s):// is noise in a narrow column; mdns:// says the address is found on the LAN.
            ups.append(url if url.startswith("mdns://") else url.split("://", 1)[-1])
        if len(site.upstreams) > 2:
            ups.append(f" +{len(site.upstreams) - 2}", style="dim")
        hosts = Text(site.hosts[0])
        if len(site.hosts) > 1:
            hosts.append(f" +{len(site.hosts) - 1}", style="dim")
        return {"name": _fit(name), "hosts": _fit(hosts), "upstreams": _fit(ups)}

    def _site_cells(self, site: Site, s: SiteStats | None) -> dict[str, Text]:
        """Every column's cell for `site`, by column key."""
        cells = self._text_cells(site)
        cells["features"] = feature_flags(site)
        keys = ("rps", "p50", "p95", "errors", "hits", "spark")
        if s is None:
            cells.update(dict(zip(keys, [Text("-", style="dim")] * 5 + [Text("")], strict=True)))
            return cells
        served = s.requests
        spark = self.table_plan.spark if self.table_plan is not None else SPARK_SECONDS
        numbers = [
            Text(rate(s.rps)),
            Text(duration(s.p50) if served else "-"),
            Text(duration(s.p95) if served else "-"),
            Text(f"{100 * s.errors / served:.1f}" if served else "-", style="red" if s.errors else ""),
            Text(f"{100 * s.hit_ratio:.0f}" if site.cache.enabled and served else "-"),
            Text(sparkline(s.rate[-spark:]), style="cyan"),
        ]
        cells.update(zip(keys, numbers, strict=True))
        return cells

    def refresh_numbers(self) -> None:
        """Re-read Stats and the engine's state (once a second)."""
        self.services.refresh_health()
        snapshot = self.services.stats.snapshot()
        self._show_engine(snapshot.get(TOTAL))
        table = self.query_one("#sites", DataTable)
        config = self.services.store.config
        if [key.value for key in table.rows] != [site.name for site in config.sites]:
            # The sites changed while another screen was showing (config events go to the visible one).
            self._show_config(config)
        columns = self.table_plan.columns if self.table_plan is not None else ()
        for site in config.sites:
            cells = self._site_cells(site, snapshot.get(site.name))
            for column in columns:
                table.update_cell(site.name, column, cells[column])
        total = snapshot.get(TOTAL)
        if total is not None:
            self.query_one("#total-rate", Sparkline).data = list(total.rate[-CHART_SECONDS:])

    def _show_engine(self, total: SiteStats | None) -> None:
        runtime = self.services
        engine = runtime.engine
        status = self.query_one("#engine-status", Static)
        problems: list[str] = []
        if engine is None or not engine.running:
            status.update(Text("○ engine stopped", style="bold"))
        else:
            urls = [f"http://{h}:{p}" for h, p in engine.addresses]
            urls += [f"https://{h}:{p}" for h, p in engine.https_addresses]
            addrs = "  ".join(urls) or "no listener"
            up = runtime.clock() - engine.started_at if engine.started_at is not None else 0.0
            # Most useful first: what does not fit the line is left out from the end.
            parts = [Text.assemble(("up ", "dim"), _uptime(up))]
            if total is not None:
                parts += [
                    Text(f"{rate(total.rps)} req/s"),
                    Text(f"{total.errors:,} 5xx", style="red" if total.errors else ""),
                    Text(f"{total.requests:,} requests"),
                ]
            parts.append(Text(f"homeproxy {__version__}", style="dim"))
            line = Text.assemble(("● serving ", "bold green"), addrs)
            room = self.app.size.width - 2  # the line's padding
            for part in parts:
                if line.cell_len + 5 + part.cell_len > room:
                    break
                line.append("  ·  ", style="dim")
                line.append_text(part)
            status.update(line)
            problems.extend(engine.listen_errors)
            problems.extend(engine.tls_errors)
        problems.extend(str(e) for e in runtime.store.last_errors)
        banner = self.query_one("#banner", Static)
        banner.update(Text("\n".join(problems)))
        banner.set_class(bool(problems), "-visible")


def _uptime(secs: float) -> str:
    s = int(max(0.0, secs))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"
