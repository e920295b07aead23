"""`UpstreamsScreen`: one site's upstreams, each with its health and its traffic, once a second.

Opened with `u` on a site (Sites screen, dashboard); escape closes it. The rows follow the
config (the site's own upstreams, then its routes'), each joined with what the engine tells
of it (`Engine.upstream_health()`: up, down, cooling down or not checked yet, why and since
when, the last active check, failures in the passive window, requests in flight) and with
`Stats` (requests, errors, median latency, its share of the site's requests). The table
keeps the columns that fit the terminal's width; the pane under it shows every detail of
the highlighted upstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from homeproxy.config import Site
from homeproxy.config.model import Upstream
from homeproxy.engine import UpstreamStats, UpstreamStatus
from homeproxy.tui.bridge import ConfigEventArrived, UpstreamHealthArrived
from homeproxy.tui.format import ago, duration, health_dot, safe_text
from homeproxy.tui.services import Services
from homeproxy.tui.widgets.form_parts import duration_text

#: Every column: its key, heading and width (0: the URL's, what is left). In the order shown.
COLUMNS = (
    ("state", "State", 11),
    ("url", "Upstream", 0),
    ("requests", "Requests", 8),
    ("errors", "Errors", 6),
    ("p50", "p50", 7),
    ("share", "Share", 5),
    ("in_flight", "Now", 4),
    ("check", "Last check", 22),
    ("since", "Since", 8),
    ("options", "Options", 14),
)
#: What goes first when the table is too narrow, in this order.
OPTIONAL = ("since", "options", "check", "in_flight")
#: The upstream URL's column is never narrower than this while a column can still go.
URL_MIN = 24
#: Cells left and right of each column's text (DataTable's cell padding).
PADDING = 2

STATE_WORDS = {"up": "up", "down": "down", "cooling": "cooling", "unchecked": "unchecked", "": "unknown"}


@dataclass(frozen=True, slots=True)
class UpstreamRow:
    """One upstream as the table shows it: from the config, the engine and Stats."""

    upstream: Upstream
    route: str
    """The route's prefix, or "" for the site's own upstreams."""
    status: UpstreamStatus | None
    """None while the engine has not told (a disabled site, an engine that is not running)."""
    stats: UpstreamStats | None

    @property
    def state(self) -> str:
        return self.status.state if self.status is not None else ""


def upstream_rows(
    site: Site, statuses: list[UpstreamStatus], stats: Mapping[tuple[str, str], UpstreamStats]
) -> list[UpstreamRow]:
    """The site's upstreams in config order (its own, then each route's), each URL once."""
    by_url = {s.upstream: s for s in statuses}
    rows: list[UpstreamRow] = []
    seen: set[str] = set()
    for route, upstreams in [("", site.upstreams), *((r.path, r.upstreams) for r in site.routes)]:
        for u in upstreams:
            if u.url not in seen:
                seen.add(u.url)
                rows.append(UpstreamRow(u, route, by_url.get(u.url), stats.get((site.name, u.url))))
    return rows


def options_text(u: Upstream) -> Text:
    parts = [f"weight {u.weight}"] if u.weight != 1 else []
    if u.backup:
        parts.append("backup")
    if u.max_conns:
        parts.append(f"max {u.max_conns}")
    return Text(", ".join(parts)) if parts else Text("-", style="dim")


def check_text(status: UpstreamStatus | None, site: Site, now: float) -> Text:
    """The last active check: "✓ 200 in 3 ms · 4s ago", or why there is none."""
    if site.health is None:
        return Text("checks off", style="dim")
    if status is None or not status.checked:
        return Text("not yet", style="dim")
    text = Text("✓ " if status.check_ok else "✗ ", style="green" if status.check_ok else "red")
    text.append(safe_text(status.check_detail))  # may quote the upstream: text, never markup
    text.append(f" · {ago(now - status.checked)}", style="dim")
    return text


def state_text(state: str) -> Text:
    return Text.assemble(health_dot(state), " ", STATE_WORDS.get(state, state))


class UpstreamsScreen(Screen[None]):
    """One site's upstreams: health and traffic of each."""

    TITLE = "Upstreams"
    HELP = (
        "One site's upstreams ({key:dashboard.upstreams} on a site in the Dashboard or Sites screen), read "
        "again every second. Each has a dot: green up, red down (failed its active checks), yellow cooling "
        "down (taken out by failing requests for a while), grey not checked yet. The table shows its "
        "requests, errors (5xx or failed), median latency and share of the site's requests since homeproxy "
        "started, and as the width allows the requests in flight, the last check, since when it is in its "
        "state and its options; the pane under it tells everything about the highlighted one, with the reason "
        "for its state."
    )
    CSS_PATH = "upstreams.tcss"
    BINDINGS = [
        Binding("escape", "close", "Close", id="upstreams.close", tooltip="Back to where you were"),
    ]

    def __init__(self, services: Services, site: str) -> None:
        super().__init__()
        self.services = services
        self.site_name = site
        self.rows: list[UpstreamRow] = []
        """The upstreams as shown now."""
        self._columns: tuple[str, ...] = ()
        self._url_width = 0

    @property
    def site(self) -> Site | None:
        return self.services.store.config.site(self.site_name)

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        yield Static(id="upstreams-summary")
        yield DataTable(id="upstreams-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="upstream-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.site_name
        self.refresh_upstreams()
        self.set_interval(1.0, self.refresh_upstreams)

    def on_resize(self, _event: Resize) -> None:
        self.call_after_refresh(self.refresh_upstreams)

    @on(UpstreamHealthArrived)
    @on(ConfigEventArrived)
    def _changed(self, _message: UpstreamHealthArrived | ConfigEventArrived) -> None:
        self.refresh_upstreams()

    def action_close(self) -> None:
        self.dismiss(None)

    # --- rendering -----------------------------------------------------------------------

    def _layout(self) -> tuple[tuple[str, ...], dict[str, int]]:
        """The columns that fit, and their widths (the URL takes what is left)."""
        table = self.query_one("#upstreams-table", DataTable)
        width = (table.region.width or self.app.size.width) - table.styles.scrollbar_size_vertical
        widths = {key: w for key, _label, w in COLUMNS}
        keys = [key for key, _label, _w in COLUMNS]
        dropping = list(OPTIONAL)

        def room() -> int:
            return width - sum(widths[k] + PADDING for k in keys if k != "url") - PADDING

        while room() < URL_MIN and dropping:
            keys.remove(dropping.pop(0))
        widths["url"] = max(8, room())
        return tuple(keys), widths

    def refresh_upstreams(self) -> None:
        """Read the engine's health and Stats again, and show them."""
        site = self.site
        table = self.query_one("#upstreams-table", DataTable)
        if site is None:
            self.query_one("#upstreams-summary", Static).update(
                Text(f'The site "{self.site_name}" is gone from the config.', style="bold")
            )
            table.clear()
            self.rows = []
            self._show_detail()
            return
        self.services.refresh_health()
        health, stats = self.services.health, self.services.stats
        self.rows = upstream_rows(site, health.statuses(site.name), stats.upstreams(site.name))
        self.query_one("#upstreams-summary", Static).update(self._summary(site))
        columns, widths = self._layout()
        keys = [row.upstream.url for row in self.rows]
        if columns != self._columns or widths["url"] != self._url_width:
            self._columns, self._url_width = columns, widths["url"]
            table.clear(columns=True)
            labels = {key: label for key, label, _w in COLUMNS}
            for key in columns:
                table.add_column(labels[key], width=widths[key], key=key)
        if [k.value for k in table.rows] != keys:
            cursor = table.cursor_row
            table.clear()
            for row in self.rows:
                table.add_row(*self._cells(row, site).values(), key=row.upstream.url)
            if self.rows:
                table.move_cursor(row=min(cursor, len(self.rows) - 1))
        else:
            for row in self.rows:
                for key, cell in self._cells(row, site).items():
                    table.update_cell(row.upstream.url, key, cell)
        self._show_detail()

    def _cells(self, row: UpstreamRow, site: Site) -> dict[str, Text]:
        """The row's cell for every column shown, by column key."""
        now = self.services.clock()
        s, st = row.stats, row.status
        url = Text(f"{row.route} → ", style="dim") if row.route else Text()
        url.append(row.upstream.url)
        dash = Text("-", style="dim")
        all_cells = {
            "state": state_text(row.state),
            "url": url,
            "requests": Text(f"{s.requests:,}") if s else dash,
            "errors": Text(f"{s.errors:,}", style="red" if s.errors else "") if s else dash,
            "p50": Text(duration(s.p50)) if s and s.requests else dash,
            "share": Text(f"{100 * s.share:.0f}%") if s else dash,
            "in_flight": Text(str(st.in_flight)) if st else dash,
            "check": check_text(st, site, now),
            "since": Text(ago(now - st.since).removesuffix(" ago")) if st else dash,
            "options": options_text(row.upstream),
        }
        cells = {key: all_cells[key] for key in self._columns}
        for cell in cells.values():  # a column narrower than its text ends it in "…"
            cell.no_wrap = True
            cell.overflow = "ellipsis"
        return cells

    def _summary(self, site: Site) -> Text:
        """How the site picks and watches its upstreams, on a line or two."""
        text = Text.assemble((site.name, "bold"), "  balance ", (site.balance, "bold"))
        check = site.health
        if check is not None:
            low, high = check.status
            status = str(low) if low == high else f"{low}-{high}"
            text.append(
                f" · checks GET {check.path} every {duration_text(check.interval)} (expects {status}; "
                f"down after {check.fails}, back after {check.passes})"
            )
        else:
            text.append(" · no active checks", style="dim")
        passive = site.passive_health
        if passive.enabled:
            text.append(
                f" · {passive.fails} failures in {duration_text(passive.window)} take one out "
                f"for {duration_text(passive.cooldown)}"
            )
        else:
            text.append(" · failing requests count for nothing", style="dim")
        if self.services.engine is None or not self.services.engine.running:
            text.append("\nThe engine is not running: no health to show.", style="yellow")
        elif not site.enabled:
            text.append("\nThe site is disabled: the engine does not watch its upstreams.", style="yellow")
        return text

    @on(DataTable.RowHighlighted, "#upstreams-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    @property
    def selected(self) -> UpstreamRow | None:
        """The highlighted upstream."""
        table = self.query_one("#upstreams-table", DataTable)
        if not table.row_count or not 0 <= table.cursor_row < len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def _show_detail(self) -> None:
        row, site = self.selected, self.site
        detail = self.query_one("#upstream-detail", Static)
        if row is None or site is None:
            detail.update("")
            return
        detail.update(self._detail(row, site))

    def _detail(self, row: UpstreamRow, site: Site) -> Text:
        """Everything about one upstream, a line per topic."""
        now = self.services.clock()
        st, s, u = row.status, row.stats, row.upstream
        text = Text.assemble(state_text(row.state), "  ", (u.url, "bold"))
        if row.route:
            text.append(f"  (route {row.route})", style="dim")

        def line(label: str, *parts: str | Text) -> None:
            text.append(f"\n{label:<10}", style="bold")
            for part in parts:
                text.append(part)

        if st is not None:
            reason = Text(safe_text(st.reason)) if st.reason else Text("nothing happened", style="dim")
            line("Since", f"{ago(now - st.since)} · ", reason)
            if st.state == "cooling" and st.until:
                text.append(f" · back in {max(0, int(st.until - now))}s", style="yellow")
            latency = f" (took {duration(st.check_latency)})" if st.checked else ""
            line("Check", check_text(st, site, now), latency)
            window = duration_text(site.passive_health.window)
            failures = f"{st.failures} failed in the last {window}" if site.passive_health.enabled else "not counted"
            line("Now", f"{st.in_flight} in flight · ", failures)
        line("Options", options_text(u))
        if s is not None:
            p50 = duration(s.p50) if s.requests else "-"
            line(
                "Traffic",
                f"{s.requests:,} requests · {s.errors:,} errors · p50 {p50} · {100 * s.share:.0f}% of the site's",
            )
        else:
            line("Traffic", Text("no request yet", style="dim"))
        return text
