"""How Settings (its form, and a backup's diff) and Help look, with deterministic data.

A fixed clock, a fixed loopback address and port, and backups with fixed names
(made here in the config's backup folder, not by saves, whose names hold the time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Static, TabbedContent

from homeproxy.paths import backups_dir
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.help import HelpScreen
from homeproxy.tui.screens.settings import SettingsScreen
from tests.tui.conftest import snapshot_runtime_at
from tests.waiting import wait_for

NOW = 1_800_000_000.0
# Unusual, and not the main snapshots' own, so both can run at once.
LISTEN, PORT = "127.77.0.10", 18101

CONFIG = f"""# the homelab proxy
[server]
listen = ["{LISTEN}"]
http_port = {PORT}
drain_timeout = "5s"

[logging]
access_log = false
level = "warning"

[defaults]
compression = true

[[sites]]
name = "homeassistant"
hosts = ["ha.home.arpa"]
upstreams = ["http://192.0.2.10:8123"]

[[sites]]
name = "plex"
hosts = ["plex.home.arpa"]
upstreams = ["http://192.0.2.20:32400"]
"""

# The file as it was before two edits: another port, and Plex not there yet.
OLDER = CONFIG.replace(f"http_port = {PORT}", "http_port = 8080").split('\n[[sites]]\nname = "plex"')[0]
OLDEST = OLDER.replace('level = "warning"', 'level = "info"')


@pytest.fixture
def settings_runtime(in_tmp: Path) -> Iterator[Runtime]:
    path = Path("config.toml")
    path.write_text(CONFIG, encoding="utf-8")
    backups = backups_dir(path)
    backups.mkdir()
    (backups / "config-20270115-080000-000000.toml").write_text(OLDEST, encoding="utf-8")
    (backups / "config-20270115-093012-000000.toml").write_text(OLDER, encoding="utf-8")
    with snapshot_runtime_at(path, in_tmp / "log", NOW) as rt:
        yield rt


async def show_settings(pilot: Pilot[None]) -> SettingsScreen:
    await pilot.press("4")
    await wait_for(lambda: isinstance(pilot.app.screen, SettingsScreen), description="the Settings screen")
    screen = pilot.app.screen
    assert isinstance(screen, SettingsScreen)
    await pilot.pause()
    return screen


async def show_backup_diff(pilot: Pilot[None]) -> None:
    screen = await show_settings(pilot)
    screen.query_one("#settings-tabs", TabbedContent).active = "backups"
    diff = screen.query_one("#backup-diff", Static)
    await wait_for(lambda: "+http_port" in str(diff.render()), description="the newest backup's diff")
    await pilot.pause()


async def show_help(pilot: Pilot[None]) -> None:
    await pilot.press("question_mark")
    await wait_for(lambda: isinstance(pilot.app.screen, HelpScreen), description="the Help screen")
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_settings(snap_compare: Callable[..., bool], settings_runtime: Runtime, size: tuple[int, int]) -> None:
    assert snap_compare(HomeproxyApp(settings_runtime), terminal_size=size, run_before=show_settings)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_settings_backup_diff(
    snap_compare: Callable[..., bool], settings_runtime: Runtime, size: tuple[int, int]
) -> None:
    assert snap_compare(HomeproxyApp(settings_runtime), terminal_size=size, run_before=show_backup_diff)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_help(snap_compare: Callable[..., bool], settings_runtime: Runtime, size: tuple[int, int]) -> None:
    assert snap_compare(HomeproxyApp(settings_runtime), terminal_size=size, run_before=show_help)
