"""The Certificates screen: its keys and flows, against a real engine, a real local CA and real leaves."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import segno
from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from homeproxy.certs.ca import LocalCA
from homeproxy.certs.status import CertStatus, IssuedCert
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.certificates import EXPORT_NAME, CertificatesScreen, TrustRootModal, export_root
from homeproxy.tui.widgets.cert_table import expiry_style, next_cell, state_cell
from homeproxy.tui.widgets.qr import qr_rows, qr_text
from homeproxy.tui.widgets.root_panel import ROOT_PATH, RootPanel, download_host, url_for
from tests.tui.test_certificates_snapshots import app_with
from tests.tui.test_help import plain
from tests.waiting import wait_for

NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def shown(widget: Widget) -> str:
    """What a Static shows, as plain text (tables included)."""
    assert isinstance(widget, Static)
    return plain(widget.content)  # type: ignore[arg-type]


def toasts(app: HomeproxyApp) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


def status_of(site: str, cert: IssuedCert) -> CertStatus:
    return CertStatus(site, cert.names, "internal", "ok", cert.not_after, cert.renew_at())


class CAIssuer:
    """A certificate source backed by a real `LocalCA`: renewing issues a real new leaf (in the caller's thread)."""

    def __init__(self, ca: LocalCA, sites: dict[str, tuple[str, ...]]) -> None:
        self.ca = ca
        self.certs = {site: ca.issue(names) for site, names in sites.items()}
        self.renewed_on: list[str] = []
        self.release = threading.Event()
        self.release.set()

    def certificates(self) -> tuple[CertStatus, ...]:
        return tuple(status_of(site, cert) for site, cert in self.certs.items())

    def renew(self, site: str) -> None:
        self.renewed_on.append(threading.current_thread().name)
        assert self.release.wait(10)
        self.certs[site] = self.ca.issue(self.certs[site].names)


async def show(app: HomeproxyApp, pilot: object) -> CertificatesScreen:
    await pilot.press("6")  # type: ignore[attr-defined]
    await wait_for(lambda: isinstance(app.screen, CertificatesScreen), description="the Certificates screen")
    screen = app.screen
    assert isinstance(screen, CertificatesScreen)
    return screen


@pytest.fixture
def ca(runtime: Runtime) -> LocalCA:
    """A real local CA where the runtime's engine keeps it."""
    return LocalCA.open(runtime.data_dir / "ca")


# --- the screen ------------------------------------------------------------------------


async def test_key_6_shows_the_root_of_the_real_ca_and_its_qr_code(runtime: Runtime, ca: LocalCA) -> None:
    source = CAIssuer(ca, {"files": ("files.home.arpa",)})
    app = app_with(runtime, lambda services: CertificatesScreen(services, source))  # the real root loader
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await show(app, pilot)
        await wait_for(lambda: screen.root is not None, description="the root")
        assert screen.root is not None
        assert screen.root.fingerprint == ca.fingerprint()
        assert screen.root.pem == ca.root_pem()
        port = runtime.engine.addresses[0][1] if runtime.engine else 0
        # The runtime listens on 127.0.0.1 only: the URL is that address, with a note that phones cannot reach it.
        assert screen.root.url == f"http://127.0.0.1:{port}{ROOT_PATH}"
        assert "other devices cannot open this URL" in screen.root.note
        panel = screen.query_one("#root-panel", RootPanel)
        assert panel.display  # 40 lines: the QR code is on the screen itself
        text = str(panel.query_one(".root-text").render())
        assert ca.fingerprint()[:47] in text and "never a site's certificate" in text
        assert screen.table.row_count == 1 and screen.table.selected_site == "files"

        await pilot.press("t")
        await wait_for(lambda: isinstance(app.screen, TrustRootModal), description="the trust dialog")
        qr = str(app.screen.query_one(".root-qr", Static).content)
        assert qr.splitlines() == qr_rows(screen.root.url)
        steps = shown(app.screen.query_one(".root-steps"))
        for platform in ("iPhone", "Android", "Windows", "macOS", "Linux", "Firefox"):
            assert platform in steps
        assert "homeproxy ca trust" in steps and "Certificate Trust Settings" in steps
        await pilot.press("escape")
        await wait_for(lambda: app.screen is screen, description="back on the screen")


async def test_short_terminals_get_a_line_instead_of_the_panel(runtime: Runtime, ca: LocalCA) -> None:
    app = app_with(
        runtime, lambda services: CertificatesScreen(services, CAIssuer(ca, {"files": ("files.home.arpa",)}))
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show(app, pilot)
        await wait_for(lambda: screen.root is not None, description="the root")
        await pilot.pause()
        assert not screen.query_one("#root-panel").display
        line = screen.query_one("#root-line")
        await wait_for(lambda: "SHA-256" in str(line.render()), description="the root line")
        assert ca.fingerprint()[:47] in str(line.render())


async def test_no_tls_site_and_no_ca_is_an_empty_state_that_says_how(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show(app, pilot)
        await wait_for(lambda: screen.has_class("-empty"), description="the empty state")
        assert "tls = true" in str(screen.query_one("#certs-empty").render())
        assert screen.root is None
        assert "No local CA yet" in str(screen.query_one("#root-line").render())
        await pilot.press("x")
        await wait_for(lambda: "no local CA yet" in toasts(app), description="why nothing is exported")
        await pilot.press("r")
        await wait_for(lambda: "Renew" in " ".join(n.title for n in app._notifications), description="why not")
        await pilot.press("t")
        await wait_for(lambda: isinstance(app.screen, TrustRootModal), description="the dialog, still useful")
        assert "No local CA yet" in str(app.screen.query_one(".root-text").render())


async def test_renew_runs_in_a_thread_and_the_table_follows(runtime: Runtime, ca: LocalCA) -> None:
    source = CAIssuer(ca, {"files": ("files.home.arpa",), "[red]nas": ("nas.home.arpa", "*.nas.home.arpa")})
    app = app_with(runtime, lambda services: CertificatesScreen(services, source))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await show(app, pilot)
        await wait_for(lambda: screen.table.row_count == 2, description="two certificates")
        cell = screen.table.get_cell("[red]nas", "site")
        assert isinstance(cell, Text) and cell.plain == "[red]nas"  # a name is text, never markup
        screen.table.move_cursor(row=1)
        await pilot.pause()
        assert screen.table.selected_site == "[red]nas"
        before = source.certs["[red]nas"]
        source.release.clear()  # the renewal waits: the UI must not
        await pilot.press("r")
        await wait_for(lambda: "Renewing the certificate of" in toasts(app), description="the start toast")
        await pilot.press("down", "up")  # the UI answers while the renewal is stuck
        assert app.is_running
        source.release.set()
        await wait_for(lambda: source.certs["[red]nas"] is not before, description="a new leaf")
        await wait_for(lambda: "has a new certificate" in toasts(app), description="the done toast")
        assert source.renewed_on and threading.main_thread().name not in source.renewed_on
        assert screen.statuses is not None
        assert {s.site: s.not_after for s in screen.statuses}["[red]nas"] == source.certs["[red]nas"].not_after


async def test_the_table_follows_the_engine_without_a_key(runtime: Runtime) -> None:
    statuses = [CertStatus("files", ("files.home.arpa",), "acme", "renewing", NOW + 20 * DAY, step="account")]

    class Moving:
        def certificates(self) -> tuple[CertStatus, ...]:
            return tuple(statuses)

        def renew(self, site: str) -> None:
            pass

    app = app_with(runtime, lambda services: CertificatesScreen(services, Moving(), lambda: None))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await show(app, pilot)
        await wait_for(lambda: "account" in screen.table.get_cell("files", "state").plain, description="step 1")
        statuses[0] = replace(statuses[0], step="challenge files.home.arpa")
        await wait_for(lambda: "challenge" in screen.table.get_cell("files", "state").plain, description="step 2")
        statuses[0] = replace(statuses[0], state="error", step="", last_error="the CA said no [b]twice")
        await wait_for(lambda: "failed" in screen.table.get_cell("files", "state").plain, description="failed")
        detail = str(screen.query_one("#cert-detail").render())
        assert "the CA said no [b]twice." in detail and "serves until" in detail


async def test_x_exports_only_the_root_into_the_current_directory(runtime: Runtime, ca: LocalCA, in_tmp: Path) -> None:
    app = app_with(runtime, lambda services: CertificatesScreen(services, CAIssuer(ca, {})))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await show(app, pilot)
        await wait_for(lambda: screen.root is not None, description="the root")
        await pilot.press("x")
        await wait_for(lambda: "Wrote the root certificate" in toasts(app), description="the export toast")
    out = in_tmp / EXPORT_NAME
    assert str(out) in toasts(app)
    assert out.read_bytes() == ca.root_pem()
    assert b"PRIVATE KEY" not in out.read_bytes()
    assert out.stat().st_mode & 0o777 == 0o644


def test_export_never_overwrites_another_file(tmp_path: Path) -> None:
    (tmp_path / EXPORT_NAME).write_bytes(b"someone else's")
    first = export_root(b"root", tmp_path)
    assert first.name == "homeproxy-root-2.crt" and first.read_bytes() == b"root"
    assert (tmp_path / EXPORT_NAME).read_bytes() == b"someone else's"
    assert export_root(b"root", tmp_path) == first  # the same root again: the same file


# --- pure helpers ----------------------------------------------------------------------


def test_the_qr_code_is_segnos_matrix_two_rows_per_line() -> None:
    url = "http://192.168.1.5:8080" + ROOT_PATH
    modules = [list(row) for row in segno.make(url, error="l", micro=False).matrix_iter(scale=1, border=1)]
    rows = qr_rows(url)
    assert len(rows) == (len(modules) + 1) // 2 and all(len(r) == len(modules[0]) for r in rows)
    halves = {" ": (0, 0), "▀": (1, 0), "▄": (0, 1), "█": (1, 1)}
    for y, row in enumerate(rows):
        for x, ch in enumerate(row):
            top, bottom = halves[ch]
            assert top == modules[2 * y][x]
            assert bottom == (modules[2 * y + 1][x] if 2 * y + 1 < len(modules) else 0)
    text = qr_text(url)
    # Black on white whatever the theme, so phones read it.
    assert {str(span.style) for span in text.spans} == {"#000000 on #ffffff"}


def test_download_host_is_what_another_device_can_reach() -> None:
    assert download_host(["0.0.0.0"], ["192.168.1.5", "fd00::5"]) == ("192.168.1.5", "")
    assert download_host(["192.168.1.7"], ["192.168.1.5"]) == ("192.168.1.7", "")
    assert download_host(["127.0.0.1", "10.0.0.2"], []) == ("10.0.0.2", "")
    assert download_host(["proxy.home.arpa"], []) == ("proxy.home.arpa", "")
    host, note = download_host(["127.0.0.1"], ["192.168.1.5"])
    assert host == "127.0.0.1" and "cannot open" in note
    assert url_for("fd00::5", 80, ROOT_PATH) == "http://[fd00::5]" + ROOT_PATH
    assert url_for("192.168.1.5", 8080, ROOT_PATH) == "http://192.168.1.5:8080" + ROOT_PATH


def test_expiry_colours() -> None:
    def status(state: str, left: timedelta | None, renew_in: timedelta | None = None) -> CertStatus:
        return CertStatus(
            "s",
            ("s.lan",),
            "internal",
            state,
            NOW + left if left is not None else None,
            NOW + renew_in if renew_in is not None else None,
        )

    assert expiry_style(status("ok", 25 * DAY, 15 * DAY), NOW) == "green"
    assert expiry_style(status("ok", 9 * DAY, -DAY), NOW) == "yellow"  # under a third left: renewal due
    assert expiry_style(status("ok", 6 * DAY), NOW) == "yellow"  # within 7 days (imported files)
    assert expiry_style(status("ok", -DAY), NOW) == "red"
    assert expiry_style(status("error", 20 * DAY, DAY), NOW) == "red"
    assert expiry_style(status("missing", None), NOW) == "red"
    assert state_cell(status("renewing", DAY)).plain == "… renewing"
    assert next_cell(status("error", DAY, timedelta(minutes=5)), NOW).plain == "retry 5m"
    assert next_cell(replace(status("ok", DAY), issuer="files"), NOW).plain == "on change"


def test_a_temporary_certificate_says_what_it_is_and_why_acme_has_not_finished() -> None:
    from homeproxy.tui.screens.certificates import detail_text

    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    waiting = CertStatus(
        "nas", ("nas.example.org",), "acme", "temporary", now + timedelta(days=7), now + timedelta(minutes=4),
        last_error="ACME, challenge nas.example.org: port 80 must reach homeproxy's http_port", self_signed=True,
    )  # fmt: skip
    text = detail_text(waiting, now).plain
    assert "A temporary certificate, self-signed (browsers warn), serves while ACME issues the real one." in text
    assert "✗ ACME, challenge nas.example.org: port 80 must reach homeproxy's http_port. Next try in 4m" in text
    local = replace(waiting, self_signed=False, last_error="")
    text = detail_text(local, now).plain
    assert "A temporary certificate, from the local CA, serves" in text and "✗" not in text
