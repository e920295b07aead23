"""`DashboardScreen`: the engine's state and every site's numbers at a glance."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Sparkline, Static

from homeproxy import __version__
from homeproxy.config import Config, Site
from homeproxy.engine import TOTAL, SiteStats
from homeproxy.tui.bridge import ConfigEventArrived
from homeproxy.tui.format import duration, feature_flags, rate, sparkline

if TYPE_CHECKING:
    from homeproxy.tui.app import HomeproxyApp

#: Seconds of history in the per-site sparklines and the total chart.
SPARK_SECONDS = 30
CHART_SECONDS = 120

LEGEND = "C cache  Z compression  A auth  L allow/deny  R rate limit  W websockets  T TLS"


class DashboardScreen(Screen[None]):
    """Engine state, a chart of the total request rate, and a table of sites."""

    TITLE = "Dashboard"

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        with Vertical(id="dashboard"):
            yield Static(id="engine-status")
            yield Static(id="banner")
            yield Sparkline([], id="total-rate", summary_function=max)
            yield DataTable(id="sites", cursor_type="row", zebra_stripes=True)
            yield Static(id="empty")
            yield Static(Text(LEGEND, style="dim"), id="legend")
        yield Footer()

    @property
    def hp(self) -> HomeproxyApp:
        return cast("HomeproxyApp", self.app)

    def on_mount(self) -> None:
        table = self.query_one("#sites", DataTable)
        for label, key in (
            ("Site", "name"),
            ("Hosts", "hosts"),
            ("Upstreams", "upstreams"),
            ("On", "features"),
            ("req/s", "rps"),
            ("p50", "p50"),
            ("p95", "p95"),
            ("err%", "errors"),
            ("hit%", "hits"),
            (f"last {SPARK_SECONDS}s", "spark"),
        ):
            table.add_column(label, key=key)
        self._show_config(self.hp.runtime.store.config)
        self.refresh_numbers()
        self.set_interval(1.0, self.refresh_numbers)

    def on_screen_resume(self) -> None:
        self._show_config(self.hp.runtime.store.config)
        self.refresh_numbers()

    @on(ConfigEventArrived)
    def _config_changed(self, _message: ConfigEventArrived) -> None:
        self._show_config(self.hp.runtime.store.config)
        self.refresh_numbers()

    # --- rendering -----------------------------------------------------------------------

    def _show_config(self, config: Config) -> None:
        table = self.query_one("#sites", DataTable)
        cursor = table.cursor_row
        table.clear()
        for site in config.sites:
            table.add_row(*self._site_cells(site, None), key=site.name)
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
                (str(self.hp.runtime.config_path), "bold"),
                ".",
            )
        )
        self.set_class(not config.sites, "-no-sites")

    def _site_cells(self, site: Site, s: SiteStats | None) -> tuple[Text, ...]:
        name = Text(site.name, style="" if site.enabled else "dim strike")
        ups = Text()
        for i, url in enumerate(site.upstreams[:2]):
            if i:
                ups.append(" ")
            ups.append("● ", style="red" if self.hp.upstream_is_down(url) else "green")
            ups.append(url.split("://", 1)[-1])  # the scheme is noise in a narrow column
        if len(site.upstreams) > 2:
            ups.append(f" +{len(site.upstreams) - 2}", style="dim")
        hosts = Text(site.hosts[0])
        if len(site.hosts) > 1:
            hosts.append(f" +{len(site.hosts) - 1}", style="dim")
        if s is None:
            numbers = [Text("-", style="dim")] * 5 + [Text("")]
        else:
            served = s.requests
            numbers = [
                Text(rate(s.rps)),
                Text(duration(s.p50) if served else "-"),
                Text(duration(s.p95) if served else "-"),
                Text(f"{100 * s.errors / served:.1f}" if served else "-", style="red" if s.errors else ""),
                Text(f"{100 * s.hit_ratio:.0f}" if site.cache.enabled and served else "-"),
                Text(sparkline(s.rate[-SPARK_SECONDS:]), style="cyan"),
            ]
        return (name, hosts, ups, feature_flags(site), *numbers)

    def refresh_numbers(self) -> None:
        """Re-read Stats and the engine's state (once a second)."""
        snapshot = self.hp.stats.snapshot()
        self._show_engine(snapshot.get(TOTAL))
        table = self.query_one("#sites", DataTable)
        config = self.hp.runtime.store.config
        if [key.value for key in table.rows] != [site.name for site in config.sites]:
            # The sites changed while another screen was showing (config events go to the visible one).
            self._show_config(config)
        columns = ("name", "hosts", "upstreams", "features", "rps", "p50", "p95", "errors", "hits", "spark")
        for site in config.sites:
            cells = self._site_cells(site, snapshot.get(site.name))
            for column, cell in zip(columns, cells, strict=True):
                table.update_cell(site.name, column, cell, update_width=True)
        total = snapshot.get(TOTAL)
        if total is not None:
            self.query_one("#total-rate", Sparkline).data = list(total.rate[-CHART_SECONDS:])

    def _show_engine(self, total: SiteStats | None) -> None:
        runtime = self.hp.runtime
        engine = runtime.engine
        status = self.query_one("#engine-status", Static)
        problems: list[str] = []
        if engine is None or not engine.running:
            status.update(Text("○ engine stopped", style="bold"))
        else:
            addrs = "  ".join(f"http://{h}:{p}" for h, p in engine.addresses) or "no listener"
            up = runtime.clock() - engine.started_at if engine.started_at is not None else 0.0
            line = Text.assemble(("● serving ", "bold green"), addrs, ("  ·  up ", "dim"), _uptime(up))
            if total is not None:
                line.append_text(
                    Text.assemble(
                        ("  ·  ", "dim"),
                        f"{rate(total.rps)} req/s",
                        ("  ·  ", "dim"),
                        (f"{total.errors:,} 5xx", "red" if total.errors else ""),
                        ("  ·  ", "dim"),
                        f"{total.requests:,} requests",
                    )
                )
            line.append(f"  ·  homeproxy {__version__}", style="dim")
            status.update(line)
            problems.extend(engine.listen_errors)
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
