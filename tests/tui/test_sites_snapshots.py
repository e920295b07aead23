"""How the Sites screen and the site editor look, with deterministic data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.site_editor import SiteEditorModal
from homeproxy.tui.screens.sites import SitesScreen
from tests.tui.conftest import snapshot_config, snapshot_runtime_at
from tests.waiting import wait_for

# An unusual loopback address and port (not the one test_snapshots.py uses).
LISTEN, PORT = "127.77.0.9", 18097
# A real scrypt hash (of a throwaway password), so the config is valid; the TUI never shows it.
HASH = "scrypt$32768$8$1$Zf7gSnuI4aUanklZewhCtA$QlIpisEe4Tzdfao0Kj5ZQW013VRZblLE+oDgG33JNrk"


@pytest.fixture
def sites_runtime(in_tmp: Path) -> Iterator[Runtime]:
    Path("config.toml").write_text(
        snapshot_config(
            LISTEN,
            PORT,
            f"""[[sites]]
name = "homeassistant"
hosts = ["ha.home.arpa", "ha.local"]
upstreams = ["http://192.0.2.10:8123", {{ url = "http://192.0.2.12:8123", backup = true, max_conns = 20 }}]
balance = "first"
allow = ["192.168.0.0/16"]
rate_limit = {{ rate = "20/s", burst = 40 }}
auth = {{ users = {{ alice = "{HASH}", bob = "{HASH}" }}, bypass = ["192.168.1.0/24"] }}
cache = {{ default_ttl = "30s", max_entry_bytes = "1MiB" }}
compression = true
headers = {{ security = true, response = {{ remove = ["Server"] }} }}

[[sites.routes]]
path = "/api/"
upstreams = ["http://192.0.2.11:8080"]
strip_prefix = true

[[sites]]
name = "plex"
hosts = ["plex.home.arpa"]
upstreams = ["http://192.0.2.20:32400"]

[[sites]]
name = "[red]nextcloud"
hosts = ["cloud.home.arpa"]
upstreams = ["http://192.0.2.30:80"]
enabled = false
""",
        ),
        encoding="utf-8",
    )
    with snapshot_runtime_at(Path("config.toml"), in_tmp / "log") as rt:
        yield rt


async def _sites(pilot: Pilot[None]) -> None:
    await pilot.press("2")
    await wait_for(lambda: isinstance(pilot.app.screen, SitesScreen), description="the Sites screen")


async def _editor(pilot: Pilot[None], key: str) -> SiteEditorModal:
    await _sites(pilot)
    await pilot.press(key)
    await wait_for(lambda: isinstance(pilot.app.screen, SiteEditorModal), description="the editor")
    editor = pilot.app.screen
    assert isinstance(editor, SiteEditorModal)
    for widget in editor.query(Input):
        widget.cursor_blink = False
    await pilot.pause()
    return editor


async def _edit_first(pilot: Pilot[None]) -> None:
    await _editor(pilot, "e")


async def _new_with_errors(pilot: Pilot[None]) -> None:
    editor = await _editor(pilot, "a")
    editor.form.inputs["name"].value = "[red]x"
    editor.form.inputs["hosts"].value = "plex.home.arpa"
    editor.form.upstreams.rows[0].url.value = "ftp://nas"
    await pilot.pause()
    await pilot.press("ctrl+s")
    await wait_for(lambda: bool(pilot.app._notifications), description="the refusal toast")
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_sites_list(snap_compare: Callable[..., bool], sites_runtime: Runtime, size: tuple[int, int]) -> None:
    assert snap_compare(HomeproxyApp(sites_runtime), terminal_size=size, run_before=_sites)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_site_editor(snap_compare: Callable[..., bool], sites_runtime: Runtime, size: tuple[int, int]) -> None:
    assert snap_compare(HomeproxyApp(sites_runtime), terminal_size=size, run_before=_edit_first)


def test_site_editor_refuses_an_invalid_site_80x24(snap_compare: Callable[..., bool], sites_runtime: Runtime) -> None:
    assert snap_compare(HomeproxyApp(sites_runtime), terminal_size=(80, 24), run_before=_new_with_errors)


async def _verify_off_for_https(pilot: Pilot[None]) -> None:
    editor = await _editor(pilot, "e")
    editor.form.upstreams.rows[0].url.value = "https://192.0.2.10:8443"
    editor.form.upstreams.rows[1].url.value = "mdns://Living Room._hass._tcp"
    editor.form.checks["verify_upstream"].value = False
    await wait_for(lambda: editor.query_one("#verify-upstream-hint").has_class("-visible"), description="the TLS hint")
    await pilot.pause()


def test_site_editor_verify_off_hint_80x24(snap_compare: Callable[..., bool], sites_runtime: Runtime) -> None:
    assert snap_compare(HomeproxyApp(sites_runtime), terminal_size=(80, 24), run_before=_verify_off_for_https)
