"""`HomeproxyApp`: the first, small TUI.

A header, the engine's state (addresses, uptime, a banner when a port could
not be bound or the config file was rejected), a table of the configured sites
with live per-site numbers, a live request counter, and a footer.

The app does no I/O in `__init__` and never pokes the engine: it reads
`Stats`, drains its bus subscription through the bridge, and listens to the
`ConfigStore`. The caller (the CLI, or a test) starts and stops the runtime.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Header, Static

from homeproxy import __version__
from homeproxy.config import Config, ConfigChanged, ConfigEvent, ConfigRejected
from homeproxy.engine import TOTAL, Stats
from homeproxy.runtime import Runtime
from homeproxy.tui.bridge import ConfigEventArrived, RequestsArrived, drain


def _hosts(hosts: tuple[str, ...]) -> str:
    return ", ".join(hosts)


class HomeproxyApp(App[None]):
    """The homeproxy terminal UI."""

    CSS_PATH = "app.tcss"
    TITLE = "homeproxy"
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit", tooltip="Stop the proxy and leave"),
        Binding("r", "reload", "Reload config", id="reload", tooltip="Re-read the config file now"),
    ]

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.requests_seen = 0
        self._subscription = runtime.bus.subscribe("tui", maxlen=10_000)

    @property
    def stats(self) -> Stats:
        return self.runtime.stats

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="⇄")
        with Vertical(id="main"):
            yield Static(id="engine-status")
            yield Static(id="banner")
            yield DataTable(id="sites", cursor_type="row", zebra_stripes=True)
            yield Static(id="empty")
            yield Static(id="counter")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.runtime.config_path)
        table = self.query_one("#sites", DataTable)
        table.add_column("Site", key="name")
        table.add_column("Hosts", key="hosts")
        table.add_column("Upstreams", key="upstreams")
        table.add_column("Requests", key="requests")
        table.add_column("req/s", key="rps")
        table.add_column("5xx", key="errors")
        self.runtime.store.subscribe(self._on_config_event)
        self._show_config(self.runtime.store.config)
        self._show_engine()
        if self.runtime.store.created:
            self.notify(
                Text(
                    f"No config file was found, so homeproxy wrote a commented one to {self.runtime.config_path}"
                ).markup,
                title="Welcome",
                timeout=15,
            )
        self.set_interval(0.1, self._pump)
        self.set_interval(1.0, self._refresh_numbers)

    # --- events from other threads -------------------------------------------------------

    def _on_config_event(self, event: ConfigEvent) -> None:
        # Called on whichever thread changed the config; post_message is thread-safe.
        self.post_message(ConfigEventArrived(event))

    def _pump(self) -> None:
        message = drain(self._subscription)
        if message is not None:
            self.post_message(message)

    @on(RequestsArrived)
    def _requests_arrived(self, message: RequestsArrived) -> None:
        self.requests_seen += len(message.events)
        self._show_counter()

    @on(ConfigEventArrived)
    def _config_event(self, message: ConfigEventArrived) -> None:
        event = message.event
        if isinstance(event, ConfigChanged):
            self._show_config(event.config)
            self._show_engine()
            where = "from the file" if event.source == "file" else "and saved"
            self.notify(f"Config applied {where}: {len(event.config.sites)} site(s).", title="Config")
        elif isinstance(event, ConfigRejected):
            first = str(event.errors[0]) if event.errors else "invalid config"
            more = f" (+{len(event.errors) - 1} more)" if len(event.errors) > 1 else ""
            self.notify(
                Text(first + more).markup,
                title="Config file rejected; still serving the last good one",
                severity="error",
                timeout=10,
            )
            self._show_engine()

    # --- rendering -----------------------------------------------------------------------

    def _show_config(self, config: Config) -> None:
        table = self.query_one("#sites", DataTable)
        table.clear()
        for site in config.sites:
            name = Text(site.name) if site.enabled else Text(f"{site.name} (off)", style="dim")
            table.add_row(
                name, Text(_hosts(site.hosts)), Text(", ".join(site.upstreams)), "0", "0.0", "0", key=site.name
            )
        empty = self.query_one("#empty", Static)
        empty.update(
            Text.assemble(
                ("No sites yet.\n\n", "bold"),
                "Add a [[sites]] table to ",
                (str(self.runtime.config_path), "bold"),
                " (the file has a commented example). It is applied as soon as you save.",
            )
        )
        self.set_class(not config.sites, "-no-sites")
        self._refresh_numbers()

    def _show_engine(self) -> None:
        engine = self.runtime.engine
        status = self.query_one("#engine-status", Static)
        banner = self.query_one("#banner", Static)
        problems: list[str] = []
        if engine is None or not engine.running:
            status.update(Text("○ engine stopped", style="bold"))
        else:
            addrs = "  ".join(f"http://{h}:{p}" for h, p in engine.addresses) or "no listener"
            line = Text.assemble(("● serving ", "bold"), (addrs, ""), (f"   homeproxy {__version__}", "dim"))
            status.update(line)
            problems.extend(engine.listen_errors)
        problems.extend(str(e) for e in self.runtime.store.last_errors)
        banner.update(Text("\n".join(problems)))
        banner.set_class(bool(problems), "-visible")

    def _show_counter(self) -> None:
        total = self.stats.snapshot()[TOTAL]
        counter = self.query_one("#counter", Static)
        counter.update(
            Text.assemble(
                ("Requests ", "bold"),
                f"{total.requests:,}",
                ("   req/s ", "bold"),
                f"{total.rps:,.1f}",
                ("   5xx ", "bold"),
                f"{total.errors:,}",
                ("   in ", "bold"),
                _size(total.bytes_in),
                ("   out ", "bold"),
                _size(total.bytes_out),
                ("   p95 ", "bold"),
                f"{total.p95 * 1000:,.1f} ms",
            )
        )

    def _refresh_numbers(self) -> None:
        snapshot = self.stats.snapshot()
        table = self.query_one("#sites", DataTable)
        for site in self.runtime.store.config.sites:
            s = snapshot.get(site.name)
            if s is None:
                continue
            table.update_cell(site.name, "requests", f"{s.requests:,}")
            table.update_cell(site.name, "rps", f"{s.rps:,.1f}")
            table.update_cell(site.name, "errors", f"{s.errors:,}")
        self._show_counter()

    # --- actions -------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="reload")
    def action_reload(self) -> None:
        """Re-read the config file now (it is also watched). In a thread: applying may wait on the engine."""
        if not self.runtime.store.reload(force=True) and not self.runtime.store.last_errors:
            self.call_from_thread(self.notify, "The config file has not changed.", title="Config")

    async def action_quit(self) -> None:
        self.runtime.bus.unsubscribe(self._subscription)
        self.exit()


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
