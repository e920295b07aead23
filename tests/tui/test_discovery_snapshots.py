"""How the Discovery screen and the Settings Discovery pane look, with deterministic data.

The services are a recorded list (what a home LAN announced, a hostile name
among them) put into the runtime's directory with their events published on
the bus, as discovery does; discovery's state (interfaces, announced names) is
a canned stand-in, since the real one depends on the machine's interfaces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TabbedContent

from homeproxy.config import Config
from homeproxy.discovery.events import ServiceFound
from homeproxy.discovery.interfaces import Interface
from homeproxy.discovery.publish import NameState
from homeproxy.discovery.service import DiscoveredService
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.discovery import DiscoveryScreen
from homeproxy.tui.screens.settings import SettingsScreen
from homeproxy.tui.screens.site_editor import SiteEditorModal
from tests.tui.conftest import SNAPSHOT_NOW, make_service, snapshot_config, snapshot_runtime_at
from tests.waiting import wait_for

# An unusual loopback address and port (not another snapshot module's).
LISTEN, PORT = "127.77.0.11", 18103

HOSTILE = "[red]x[/] [@click=app.quit]q"

SITES = """[[sites]]
name = "plex"
hosts = ["plex.local", "plex.home.arpa"]
upstreams = ["mdns://Plex._plexmediasvr._tcp/web"]

[[sites]]
name = "nas"
hosts = ["nas.local"]
upstreams = ["https://192.168.1.30:5001"]
verify_upstream = false
"""


def _service(instance: str, type_: str, addresses: tuple[str, ...], port: int, **kw: Any) -> DiscoveredService:
    return make_service(instance, type_, addresses, port, seen=SNAPSHOT_NOW, **{"host": "", **kw})


RECORDED = (
    _service(
        "Home Assistant",
        "_home-assistant._tcp.local.",
        ("192.168.1.10",),
        8123,
        host="homeassistant.local.",
        properties=(("base_url", "http://192.168.1.10:8123"), ("version", "2026.11.1")),
    ),
    _service("OctoPi", "_octoprint._tcp.local.", ("192.168.1.40",), 80, host="octopi.local."),
    _service(
        "Plex",
        "_plexmediasvr._tcp.local.",
        ("192.168.1.20",),
        32400,
        host="plexbox.local.",
        path="/web",
        properties=(("path", "/web"),),
    ),
    _service(
        "Brother HL-L2350DW",
        "_ipp._tcp.local.",
        ("192.168.1.50",),
        631,
        host="brother.local.",
        path="/ipp/print",
    ),
    _service("DiskStation", "_https._tcp.local.", ("192.168.1.30",), 5001, host="diskstation.local."),
    _service(HOSTILE, "_http._tcp.local.", ("192.168.1.66",), 8080, host="[b]evil.local.", path="/[i]ui"),
    _service("Pi-hole", "_http._tcp.local.", ("fd00::53",), 80, host="pihole.local.", path="/admin"),
    _service("Living Room TV", "_http._tcp.local.", (), 0),
    _service("WLED-Kitchen", "_wled._tcp.local.", ("192.168.1.60",), 80, host="wled-kitchen.local."),
)

# homeproxy's own advert of its site "plex" (`[discovery] advertise`), as its browser marks it.
OWN = replace(
    _service(
        "plex",
        "_http._tcp.local.",
        ("192.168.1.5",),
        8080,
        host="plex.local.",
        properties=(("path", "/"), ("homeproxy", "3f2a9c1e5b7d4a60")),
    ),
    own=True,
)


@dataclass
class CannedDiscovery:
    """Discovery's state as the screens read it, fixed (and nothing started or stopped)."""

    interfaces: Sequence[Interface] = (Interface("eth0", ("192.168.1.5",)),)
    running: bool = True
    error: str = ""
    names: Mapping[str, NameState] = field(
        default_factory=lambda: {
            "plex.local": NameState("plex.local", "announced", ("192.168.1.5",), since=SNAPSHOT_NOW),
            "nas.local": NameState("nas.local", "conflict", holders=("192.168.1.9",), since=SNAPSHOT_NOW),
        }
    )

    def apply(self, config: Config, *, port: int) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.fixture
def discovery_runtime(in_tmp: Path) -> Iterator[Runtime]:
    Path("config.toml").write_text(snapshot_config(LISTEN, PORT, SITES), encoding="utf-8")
    with snapshot_runtime_at(Path("config.toml"), in_tmp / "log") as rt:
        canned: Any = CannedDiscovery()
        rt.discovery = canned
        yield rt


async def show_discovery(pilot: Pilot[None], services: Sequence[DiscoveredService] = RECORDED) -> DiscoveryScreen:
    app = pilot.app
    assert isinstance(app, HomeproxyApp)
    runtime = app.runtime
    for s in services:
        runtime.directory.upsert(s)
        runtime.bus.publish(ServiceFound(s))
    await pilot.press("5")
    await wait_for(lambda: isinstance(app.screen, DiscoveryScreen), description="the Discovery screen")
    screen = app.screen
    assert isinstance(screen, DiscoveryScreen)
    await wait_for(lambda: screen.table.row_count == len(services), description="every recorded service")
    screen.query_one("#discovery-filter", Input).cursor_blink = False
    await pilot.pause()
    return screen


async def show_hostile(pilot: Pilot[None]) -> None:
    screen = await show_discovery(pilot)
    screen.table.move_cursor(row=screen.table.get_row_index(RECORDED[5].key))
    await pilot.pause()


async def show_own_advert(pilot: Pilot[None]) -> None:
    screen = await show_discovery(pilot, (*RECORDED, OWN))
    screen.table.move_cursor(row=screen.table.get_row_index(OWN.key))
    await pilot.pause()


async def show_filtered(pilot: Pilot[None]) -> None:
    await show_discovery(pilot)
    await pilot.press("slash", *"192.168.1.")
    await pilot.pause()


async def show_add_https(pilot: Pilot[None]) -> None:
    screen = await show_discovery(pilot)
    await pilot.press("slash", *"diskstation", "enter", "a")
    await wait_for(lambda: isinstance(pilot.app.screen, SiteEditorModal), description="the site editor")
    assert screen.query_one("#discovery-filter")
    # The form checks itself after a short debounce: wait for its verdict, not a fixed pause.
    await wait_for(
        lambda: pilot.app.screen.query_one("#editor-status").has_class("-ready"), description="the form's verdict"
    )
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False  # else the focused field's cursor is on or off depending on timing
    await pilot.pause()


async def show_settings_discovery(pilot: Pilot[None]) -> None:
    await pilot.press("4")
    await wait_for(lambda: isinstance(pilot.app.screen, SettingsScreen), description="the Settings screen")
    pilot.app.screen.query_one("#settings-tabs", TabbedContent).active = "discovery"
    await pilot.pause()


SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])


@SIZES
def test_discovery(snap_compare: Callable[..., bool], discovery_runtime: Runtime, size: tuple[int, int]) -> None:
    assert snap_compare(HomeproxyApp(discovery_runtime), terminal_size=size, run_before=show_discovery)


@SIZES
def test_discovery_hostile_selected(
    snap_compare: Callable[..., bool], discovery_runtime: Runtime, size: tuple[int, int]
) -> None:
    assert snap_compare(HomeproxyApp(discovery_runtime), terminal_size=size, run_before=show_hostile)


def test_discovery_own_advert_selected(snap_compare: Callable[..., bool], discovery_runtime: Runtime) -> None:
    assert snap_compare(HomeproxyApp(discovery_runtime), terminal_size=(120, 40), run_before=show_own_advert)


def test_discovery_filtered(snap_compare: Callable[..., bool], discovery_runtime: Runtime) -> None:
    assert snap_compare(HomeproxyApp(discovery_runtime), terminal_size=(120, 40), run_before=show_filtered)


def test_discovery_add_https_device(snap_compare: Callable[..., bool], discovery_runtime: Runtime) -> None:
    assert snap_compare(HomeproxyApp(discovery_runtime), terminal_size=(120, 40), run_before=show_add_https)


@SIZES
def test_settings_discovery(
    snap_compare: Callable[..., bool], discovery_runtime: Runtime, size: tuple[int, int]
) -> None:
    assert snap_compare(HomeproxyApp(discovery_runtime), terminal_size=size, run_before=show_settings_discovery)
