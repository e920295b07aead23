"""`CertificatesScreen` (key 6): every TLS site's certificate, renewing one, and trusting the local CA's root.

The data comes from the engine only through `Engine.certificates()` (read in a
thread about once a second while the screen shows, never on every frame) and
`Engine.renew(site)` (in a thread: issuing can take seconds, ACME much more),
and the root from `LocalCA.open(create=False)` (in a thread; it writes
nothing). Both are seams (`CertSource`, the root loader), so tests can show
canned certificates and a fixed root. Names, errors and URLs are shown as
`Text`, never markup. The seam, that text and the root's export are in
`certificates_view.py`; the full-screen root is `TrustRootModal` (`trust_root.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from homeproxy.certs.status import CertStatus
from homeproxy.tui.bridge import ConfigEventArrived
from homeproxy.tui.format import safe_text
from homeproxy.tui.screens.certificates_view import (
    EMPTY,
    EXPORT_NAME,
    CertSource,
    detail_text,
    export_root,
    status_line,
)
from homeproxy.tui.screens.trust_root import TrustRootModal
from homeproxy.tui.services import Services
from homeproxy.tui.widgets.cert_table import CertTable
from homeproxy.tui.widgets.root_panel import RootInfo, RootPanel, load_root, root_line

#: While there is no CA, look for one this often (seconds); the first TLS site makes it.
ROOT_RETRY = 5.0

__all__ = [
    "EMPTY",
    "EXPORT_NAME",
    "ROOT_RETRY",
    "CertSource",
    "CertificatesScreen",
    "TrustRootModal",
    "detail_text",
    "export_root",
    "status_line",
]


class CertificatesScreen(Screen[None]):
    """Every TLS site's certificate; renew one; the local CA's root, its QR code and how to trust it."""

    TITLE = "Certificates"
    HELP = (
        "One row per site with HTTPS on: the names its certificate covers, where it comes from (homeproxy's "
        "local CA, ACME, or your own files), when it expires (yellow once renewal is due or within 7 days, "
        "red when expired or the last attempt failed), the last renewal's state or the step under way, and "
        "the next renewal. **{key:certificates.renew}** renews the selected certificate now. Below (or with "
        "**{key:certificates.trust}**): the local CA's root, its SHA-256 fingerprint, a QR code of the URL a "
        "phone downloads it from, and the steps for each platform. Install the **root**, never a site's "
        "certificate. **{key:certificates.export}** writes the root into the current directory."
    )
    #: The root panel (QR code and steps) needs room: only on terminals this tall.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS = [
        Binding("r", "renew", "Renew now", id="certificates.renew", tooltip="Renew the selected certificate now"),
        Binding(
            "t",
            "trust",
            "Trust root",
            id="certificates.trust",
            tooltip="Show the local CA's root: its QR code, fingerprint and how to trust it on each platform",
        ),
        Binding(
            "x",
            "export",
            "Export root",
            id="certificates.export",
            tooltip=f"Write the local CA's root certificate (public) to {EXPORT_NAME} in the current directory",
        ),
    ]

    def __init__(
        self,
        services: Services,
        source: CertSource | None = None,
        root: Callable[[], RootInfo | None] | None = None,
    ) -> None:
        """Read certificates from `source` and the root from `root` (both blocking, run in threads);
        by default the running engine and the CA in the runtime's data dir."""
        super().__init__()
        self.services = services
        self._source = source
        self._root_loader = root
        self.statuses: tuple[CertStatus, ...] | None = None
        """What the table shows (None: the engine is not running)."""
        self.root: RootInfo | None = None
        self._root_checked = -ROOT_RETRY
        self._root_stale = True

    @property
    def table(self) -> CertTable:
        return self.query_one("#certs-table", CertTable)

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        yield Static(id="certs-status")
        with Vertical(id="certs-body"):
            yield CertTable(id="certs-table")
            yield Static(EMPTY, id="certs-empty")
            yield Static(id="cert-detail")
        yield RootPanel(id="root-panel")
        yield Static(id="root-line")
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()
        self._show()
        self.set_interval(1.0, self._tick)
        self.refresh_data()

    def on_screen_resume(self) -> None:
        self._root_stale = True
        self.refresh_data()

    def _tick(self) -> None:
        if self.is_current:
            self.refresh_data()

    @on(ConfigEventArrived)
    def _config_changed(self, _message: ConfigEventArrived) -> None:
        self._root_stale = True  # serve_root, the listen address or the port may have changed
        self.refresh_data()

    # --- data ----------------------------------------------------------------------------

    def _engine_source(self) -> CertSource | None:
        if self._source is not None:
            return self._source
        engine = self.services.engine
        return engine if engine is not None and engine.running else None

    def _load_root(self) -> RootInfo | None:
        if self._root_loader is not None:
            return self._root_loader()
        runtime = self.services
        engine = runtime.engine
        port = engine.addresses[0][1] if engine is not None and engine.addresses else None
        config = runtime.store.config
        return load_root(runtime.data_dir / "ca", config, port if port is not None else config.server.http_port)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.services.clock(), UTC)

    @work(exclusive=True, group="certs-refresh")
    async def refresh_data(self) -> None:
        """Read the certificates (and, when due, the root) in a thread, then show them."""
        source = self._engine_source()
        statuses = await asyncio.to_thread(source.certificates) if source is not None else None
        clock = self.services.clock()
        had = {s.site for s in self.statuses or ()}
        new_sites = {s.site for s in statuses or ()} - had
        retry = self.root is None and clock - self._root_checked >= ROOT_RETRY
        if self._root_stale or new_sites or retry:
            self._root_stale = False
            self._root_checked = clock
            self.root = await asyncio.to_thread(self._load_root)
        self.statuses = statuses
        self._show()

    # --- rendering -----------------------------------------------------------------------

    def _show(self) -> None:
        statuses = self.statuses
        config = self.services.store.config
        self.query_one("#certs-status", Static).update(status_line(statuses, config.server.https_port))
        self.table.show(statuses or (), self._now())
        self.set_class(not statuses, "-empty")
        self.query_one(RootPanel).show(self.root)
        self.query_one("#root-line", Static).update(root_line(self.root))
        self._show_detail()

    @property
    def selected(self) -> CertStatus | None:
        site = self.table.selected_site
        return next((s for s in self.statuses or () if s.site == site), None)

    def _show_detail(self) -> None:
        status = self.selected
        wide = self.app.size.width >= 100
        self.query_one("#cert-detail", Static).update(detail_text(status, self._now(), wide=wide) if status else "")

    @on(DataTable.RowHighlighted, "#certs-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    # --- actions -------------------------------------------------------------------------

    def action_renew(self) -> None:
        """Renew the selected certificate now (in a thread; the table shows the steps)."""
        status = self.selected
        source = self._engine_source()
        if status is None or source is None:
            why = "The engine is not running." if source is None else "There is no certificate to renew yet."
            self.notify(why, title="Renew", severity="warning", markup=False)
            return
        what = {
            "internal": "from the local CA",
            "acme": "from the ACME CA (the table shows each step)",
            "files": "by reading its files again",
        }.get(status.issuer, "")
        self.notify(f'Renewing the certificate of "{status.site}" {what}.', title="Renew", markup=False)
        self._renew(source, status.site)

    @work(group="certs-renew")
    async def _renew(self, source: CertSource, site: str) -> None:
        try:
            await asyncio.to_thread(source.renew, site)
        except Exception as e:  # the engine refused (unknown site, stopped) or the renewal failed outright
            message = safe_text(f"{type(e).__name__}: {e}")  # may quote the ACME server
            self.notify(message, title=f"Not renewed: {site}", severity="error", markup=False)
            self.refresh_data()
            return
        statuses = await asyncio.to_thread(source.certificates)
        now = next((s for s in statuses if s.site == site), None)
        if now is None:
            pass
        elif now.state == "error":
            self.notify(
                safe_text(now.last_error) or "The renewal failed; the old certificate keeps serving.",
                title=f"Not renewed: {site}",
                severity="error",
                markup=False,
            )
        elif now.state in ("issuing", "renewing"):
            self.notify(f'"{site}" is renewing in the background.', title="Renew", markup=False)
        elif now.not_after is not None:
            self.notify(
                f'"{site}" has a new certificate, valid until {now.not_after:%Y-%m-%d %H:%M} UTC.',
                title="Renewed",
                markup=False,
            )
        self.statuses = statuses
        self._show()

    def action_trust(self) -> None:
        """Show the root's QR code, fingerprint and the steps to trust it."""
        self.app.push_screen(TrustRootModal(self.root))

    def action_export(self) -> None:
        """Write the root into the current directory."""
        root = self.root
        if root is None:
            self.notify(
                "There is no local CA yet: it is made when the first site with HTTPS on uses the internal issuer.",
                title="Export root",
                severity="warning",
                markup=False,
            )
            return
        self._export(root)

    @work(group="certs-export")
    async def _export(self, root: RootInfo) -> None:
        try:
            path = await asyncio.to_thread(export_root, root.pem, Path.cwd())
        except OSError as e:
            self.notify(
                f"Could not write to the current directory ({e.strerror or e}). The root is at {root.file}.",
                title="Export root",
                severity="error",
                markup=False,
            )
            return
        self.notify(
            f"Wrote the root certificate to {path} (public, safe to copy). Install it as a trusted root "
            f"on each device; t shows how. It is also at {root.file}.",
            title="Export root",
            timeout=12,
            markup=False,
        )
