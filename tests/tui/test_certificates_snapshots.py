"""How the Certificates screen looks, with deterministic data.

A new CA has a new fingerprint every run, and a real engine's certificates have
new dates, so these snapshots show canned `CertStatus` rows (one of each state
worth seeing) and a fixed root (fingerprint, download URL, name), passed to
the screen through its seams, on the fixed snapshot clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.pilot import Pilot

from homeproxy.certs.status import CertStatus
from homeproxy.runtime import Runtime
from homeproxy.tui import app as app_module
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.certificates import CertificatesScreen, TrustRootModal
from homeproxy.tui.services import Services
from homeproxy.tui.widgets.root_panel import RootInfo
from tests.tui.conftest import SNAPSHOT_NOW, snapshot_config, snapshot_runtime_at
from tests.waiting import wait_for

# An unusual loopback address and port (not another snapshot module's).
LISTEN, PORT = "127.77.0.12", 18105
NOW = datetime.fromtimestamp(SNAPSHOT_NOW, UTC)
DAY = timedelta(days=1)

# No `tls = true` here: the rows are canned, and a real engine would open an HTTPS listener.
SITES = """[[sites]]
name = "homeassistant"
hosts = ["ha.home.arpa", "ha.local"]
upstreams = ["http://192.0.2.10:8123"]

[[sites]]
name = "nas"
hosts = ["nas.home.arpa"]
upstreams = ["http://192.0.2.30:5000"]
"""

CANNED = (
    CertStatus(
        "homeassistant",
        ("ha.home.arpa", "ha.local"),
        "internal",
        "ok",
        not_after=NOW + 27 * DAY,
        next_renewal=NOW + 17 * DAY,
        fingerprint="3F:9A:" * 31 + "3F",
    ),
    CertStatus("[red]nas", ("*.nas.home.arpa", "nas.home.arpa"), "internal", "ok", NOW + 8 * DAY, NOW - DAY),
    CertStatus(
        "cloud",
        ("cloud.example.org",),
        "acme",
        "renewing",
        NOW + 20 * DAY,
        NOW,
        step="challenge cloud.example.org",
    ),
    CertStatus(
        "blog",
        ("blog.example.org", "www.blog.example.org"),
        "acme",
        "error",
        NOW + 3 * DAY,
        NOW + timedelta(minutes=40),
        last_error="the ACME server could not fetch the challenge from blog.example.org: connection refused",
    ),
    CertStatus("printer", ("printer.lan",), "files", "ok", NOW - 2 * DAY),
)

ROOT = RootInfo(
    name="homeproxy root snapshot 2027",
    fingerprint=":".join(f"{b:02X}" for b in range(0xA0, 0xC0)),
    pem=b"-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n",
    file="/var/lib/homeproxy/ca/root.crt",
    url="http://192.168.1.5:8080/.well-known/homeproxy/root.crt",
    profile_url="http://192.168.1.5:8080/.well-known/homeproxy/root.mobileconfig",
    not_after=NOW + 3650 * DAY,
)


class CannedCertificates:
    """The engine's certificate API, answering with fixed rows."""

    def __init__(self, statuses: tuple[CertStatus, ...]) -> None:
        self.statuses = statuses

    def certificates(self) -> tuple[CertStatus, ...]:
        return self.statuses

    def renew(self, site: str) -> None:
        pass


def app_with(runtime: Runtime, screen: Callable[[Services], CertificatesScreen]) -> HomeproxyApp:
    """The real app, with its Certificates screen made by `screen`."""

    class App(HomeproxyApp):
        # A relative CSS_PATH is read beside the module that defines the class: this one.
        CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))
        MODES = {**HomeproxyApp.MODES, "certificates": screen}

    return App(runtime)


def canned_app(runtime: Runtime, statuses: tuple[CertStatus, ...], root: RootInfo | None) -> HomeproxyApp:
    """The real app, its Certificates screen reading `statuses` and `root`."""
    return app_with(runtime, lambda services: CertificatesScreen(services, CannedCertificates(statuses), lambda: root))


@pytest.fixture
def certs_runtime(in_tmp: Path) -> Iterator[Runtime]:
    Path("config.toml").write_text(snapshot_config(LISTEN, PORT, SITES), encoding="utf-8")
    with snapshot_runtime_at(Path("config.toml"), in_tmp / "log") as rt:
        yield rt


async def show_certificates(pilot: Pilot[None]) -> CertificatesScreen:
    await pilot.press("6")
    await wait_for(lambda: isinstance(pilot.app.screen, CertificatesScreen), description="the Certificates screen")
    screen = pilot.app.screen
    assert isinstance(screen, CertificatesScreen)
    await wait_for(lambda: screen.statuses is not None, description="the certificates")
    await pilot.pause()
    return screen


async def show_trust(pilot: Pilot[None]) -> None:
    await show_certificates(pilot)
    await pilot.press("t")
    await wait_for(lambda: isinstance(pilot.app.screen, TrustRootModal), description="the root's QR code")
    await pilot.pause()


async def show_failed(pilot: Pilot[None]) -> None:
    screen = await show_certificates(pilot)
    screen.table.move_cursor(row=3)
    await pilot.pause()


SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])


@SIZES
def test_certificates(snap_compare: Callable[..., bool], certs_runtime: Runtime, size: tuple[int, int]) -> None:
    app = canned_app(certs_runtime, CANNED, ROOT)
    assert snap_compare(app, terminal_size=size, run_before=show_certificates)


@SIZES
def test_trust_root_qr(snap_compare: Callable[..., bool], certs_runtime: Runtime, size: tuple[int, int]) -> None:
    app = canned_app(certs_runtime, CANNED, ROOT)
    assert snap_compare(app, terminal_size=size, run_before=show_trust)


def test_certificates_failed_renewal_selected_80x24(snap_compare: Callable[..., bool], certs_runtime: Runtime) -> None:
    app = canned_app(certs_runtime, CANNED, ROOT)
    assert snap_compare(app, terminal_size=(80, 24), run_before=show_failed)


def test_certificates_empty_80x24(snap_compare: Callable[..., bool], certs_runtime: Runtime) -> None:
    assert snap_compare(canned_app(certs_runtime, (), None), terminal_size=(80, 24), run_before=show_certificates)
