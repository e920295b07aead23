"""The Settings screen, driven through Pilot against a real Runtime, engine and backend."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
from textual.pilot import Pilot
from textual.widgets import Checkbox, DataTable, Input, Select, Static, TabbedContent

from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.format import size
from homeproxy.tui.screens.confirm import ConfirmModal
from homeproxy.tui.screens.settings import FIELDS, SettingsScreen, diff_text, parse, shown
from tests.conftest import free_port
from tests.waiting import wait_for


async def open_settings(app: HomeproxyApp, pilot: Pilot[None]) -> SettingsScreen:
    await pilot.press("4")
    await wait_for(lambda: isinstance(app.screen, SettingsScreen), description="the Settings screen")
    screen = app.screen
    assert isinstance(screen, SettingsScreen)
    return screen


async def type_into(pilot: Pilot[None], field: Input, text: str) -> None:
    field.focus()
    field.value = ""
    await pilot.pause()
    await pilot.press(*text)


def text_of(screen: SettingsScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def toasts(app: HomeproxyApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def get(port: int, path: str = "/x") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}", headers={"Host": "files.home.arpa"}) as r,
    ):
        return r.status, await r.text()


def port_of(runtime: Runtime) -> int:
    assert runtime.engine is not None
    return runtime.engine.addresses[0][1]


async def test_a_new_http_port_is_saved_with_comments_and_the_engine_listens_there(runtime: Runtime) -> None:
    port = free_port()
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_settings(app, pilot)
        field = screen.query_one("#server-http-port", Input)
        assert field.value == "0"
        await type_into(pilot, field, str(port))
        assert screen.query_one("#server-http-port-field").has_class("-dirty")
        assert "server.http_port" in app.unsaved["settings"]

        await pilot.press("enter")
        await wait_for(lambda: runtime.store.config.server.http_port == port, description="the new port in force")
        text = runtime.config_path.read_text(encoding="utf-8")
        assert f"http_port = {port}\n" in text
        assert "# my homelab" in text and "# the file server in the closet" in text
        assert runtime.engine is not None and runtime.engine.addresses == (("127.0.0.1", port),)
        assert await get(port) == (200, "hello from backend /x")

        await wait_for(lambda: "settings" not in app.unsaved, description="no unsaved edit left")
        assert not screen.query_one("#server-http-port-field").has_class("-dirty")
        assert f"listening on http://127.0.0.1:{port}" in text_of(screen, "#settings-status")
        assert any(f"Saved server.http_port = {port}" in t and "applied it live" in t for t in toasts(app))


async def test_a_config_refresh_before_the_typed_text_is_handled_keeps_the_edit(runtime: Runtime) -> None:
    """Under load a config event can reach the screen between a keystroke and its Input.Changed:
    the edit is told by its value, not by that message, so the refresh keeps it."""
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_settings(app, pilot)
        field = screen.query_one("#server-http-port", Input)
        types = screen.query_one("#discovery-service-types", Input)
        await asyncio.to_thread(runtime.store.set_option, "discovery", "service_types", ["_wled._tcp"])
        field.value = "8099"  # its Input.Changed is queued, not handled yet
        screen._show_config(runtime.store.config)  # the refresh that gets there first
        assert field.value == "8099"
        assert types.value == "_wled._tcp"  # an unedited field shows the new config
        await wait_for(lambda: screen.query_one("#server-http-port-field").has_class("-dirty"), description="dirty")
        assert field.value == "8099" and "server.http_port" in app.unsaved["settings"]
        backups = screen.query_one("#backup-list", DataTable)
        await wait_for(lambda: backups.row_count == 1, description="the save's backup listed")  # its worker done


async def test_an_invalid_port_shows_its_error_and_saves_nothing(runtime: Runtime) -> None:
    before = runtime.config_path.read_bytes()
    old_port = port_of(runtime)
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_settings(app, pilot)
        await type_into(pilot, screen.query_one("#server-http-port", Input), "70000")
        await pilot.press("enter")
        container = screen.query_one("#server-http-port-field")
        await wait_for(lambda: container.has_class("-invalid"), description="the field marked invalid")
        assert "port 70000 is out of range" in text_of(screen, "#server-http-port-error")
        assert screen.query_one("#server-http-port", Input).value == "70000"  # kept, to be fixed
        assert "server.http_port" in app.unsaved["settings"]

        # Fixing it is a new edit; Esc puts back what is saved and clears the error.
        await pilot.press("escape")
        assert screen.query_one("#server-http-port", Input).value == "0"
        assert not container.has_class("-invalid") and "settings" not in app.unsaved
    assert runtime.config_path.read_bytes() == before
    assert runtime.store.config.server.http_port == 0
    assert runtime.store.backups() == []
    assert port_of(runtime) == old_port


async def test_a_busy_port_is_refused_with_the_engines_message_and_nothing_changes(runtime: Runtime) -> None:
    before = runtime.config_path.read_bytes()
    old_port = port_of(runtime)
    app = HomeproxyApp(runtime)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_settings(app, pilot)
            await type_into(pilot, screen.query_one("#server-http-port", Input), str(taken))
            await pilot.press("enter")
            await wait_for(
                lambda: any("already in use" in t and "Nothing was changed" in t for t in toasts(app)),
                description="the refusal toast",
            )
            assert "already in use" in text_of(screen, "#server-http-port-error")
            assert runtime.config_path.read_bytes() == before
            assert runtime.store.config.server.http_port == 0
            assert port_of(runtime) == old_port
            assert await get(old_port) == (200, "hello from backend /x")


async def test_defaults_for_new_sites_are_saved(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    assert not runtime.store.config.defaults.compression
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_settings(app, pilot)
        screen.query_one("#settings-tabs", TabbedContent).active = "new-sites"
        await pilot.pause()
        await pilot.click("#defaults-compression")
        await wait_for(lambda: runtime.store.config.defaults.compression, description="compression on for new sites")
        assert screen.query_one("#defaults-compression", Checkbox).value
        assert str(screen.query_one("#defaults-compression", Checkbox).label) == "on"

        await type_into(pilot, screen.query_one("#defaults-connect-timeout", Input), "2s")
        await pilot.press("ctrl+s")  # "save all" saves the typed field too
        await wait_for(lambda: runtime.store.config.defaults.connect_timeout == 2.0, description="the new timeout")
    text = runtime.config_path.read_text(encoding="utf-8")
    assert "[defaults]" in text and "compression = true" in text and 'connect_timeout = "2s"' in text
    assert "# my homelab" in text


async def test_quitting_with_an_unsaved_edit_asks_first(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_settings(app, pilot)
        await type_into(pilot, screen.query_one("#server-drain-timeout", Input), "30s")
        await pilot.press("ctrl+q")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the question")
        assert "Settings: server.drain_timeout" in str(app.screen.query_one("#question", Static).render())
        await pilot.press("n")
        await wait_for(lambda: app.screen is screen, description="back on Settings")
        assert app.is_running and screen.query_one("#server-drain-timeout", Input).value == "30s"
    assert runtime.store.config.server.drain_timeout == 10.0


async def test_a_logging_level_choice_is_saved_at_once(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_settings(app, pilot)
        screen.query_one("#settings-tabs", TabbedContent).active = "logging"
        await pilot.pause()
        screen.query_one("#logging-level", Select).value = "debug"
        await wait_for(lambda: runtime.store.config.logging.level == "debug", description="the level saved")
    assert 'level = "debug"' in runtime.config_path.read_text(encoding="utf-8")


async def test_backups_are_listed_diffed_and_restored(runtime: Runtime) -> None:
    store = runtime.store
    first, second = free_port(), free_port()
    await asyncio.to_thread(store.set_option, "server", "http_port", first)
    await asyncio.to_thread(store.set_option, "server", "http_port", second)
    backups = store.backups()
    assert len(backups) == 2
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_settings(app, pilot)
        screen.query_one("#settings-tabs", TabbedContent).active = "backups"
        table = screen.query_one("#backup-list", DataTable)
        await wait_for(lambda: table.row_count == 2, description="two backups listed")
        # Newest first: the newest backup is the file as it was before the last save.
        newest = backups[-1]
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == str(newest)
        assert str(table.get_row_at(0)[1]) == size(newest.stat().st_size)
        await wait_for(lambda: f"-http_port = {first}" in text_of(screen, "#backup-diff"), description="the diff")
        assert f"+http_port = {second}" in text_of(screen, "#backup-diff")

        # A save made meanwhile shows up in the list.
        await asyncio.to_thread(store.set_option, "server", "drain_timeout", "3s")
        await wait_for(lambda: table.row_count == 3, description="the new backup listed")

        # Restore the backup taken by the second save: the file with the first port.
        table.focus()
        table.move_cursor(row=1)
        wanted = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        assert wanted == str(newest)
        backup_text = newest.read_text(encoding="utf-8")
        await wait_for(lambda: "+drain_timeout" in text_of(screen, "#backup-diff"), description="its diff")
        await pilot.press("r")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the confirmation")
        await pilot.press("y")
        await wait_for(lambda: store.config.server.http_port == first, description="the backup in force")
        assert runtime.config_path.read_text(encoding="utf-8") == backup_text
        assert port_of(runtime) == first
        assert await get(first) == (200, "hello from backend /x")
        await wait_for(lambda: any("Restored the backup" in t for t in toasts(app)), description="the toast")
        await wait_for(lambda: table.row_count == 4, description="the replaced file kept as a backup")
        assert screen.query_one("#server-http-port", Input).value == str(first)


async def test_restore_can_be_cancelled_and_a_broken_backup_is_refused(runtime: Runtime) -> None:
    store = runtime.store
    await asyncio.to_thread(store.set_option, "server", "drain_timeout", "4s")
    broken = store.backups()[0].with_name("config-20000101-000000-000000.toml")
    broken.write_text("[server]\nhttp_port = 99999\n", encoding="utf-8")
    before = runtime.config_path.read_bytes()
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_settings(app, pilot)
        screen.query_one("#settings-tabs", TabbedContent).active = "backups"
        table = screen.query_one("#backup-list", DataTable)
        await wait_for(lambda: table.row_count == 2, description="two backups listed")
        table.focus()
        table.move_cursor(row=1)  # the oldest: the broken one
        await pilot.pause()
        assert "2000-01-01 00:00:00" in str(table.get_row_at(1)[0])

        await pilot.press("r")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the confirmation")
        await pilot.press("n")
        await wait_for(lambda: app.screen is screen, description="back on Settings")
        assert runtime.config_path.read_bytes() == before

        await pilot.press("r")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the confirmation")
        await pilot.press("y")
        await wait_for(lambda: any("out of range" in t for t in toasts(app)), description="the refusal")
    assert runtime.config_path.read_bytes() == before
    assert store.config.server.drain_timeout == 4.0


def test_values_round_trip_through_the_editors(tmp_path: Path) -> None:
    """What a field shows parses back to a value the store accepts unchanged."""
    from homeproxy.config import ConfigStore

    path = tmp_path / "config.toml"
    path.write_text(
        '[server]\nlisten = ["127.0.0.1", "::1"]\ndrain_timeout = "500ms"\n'
        '[logging]\naccess_log = "/tmp/x.log"\nmax_bytes = "10MiB"\n[defaults]\nread_timeout = "5m"\n',
        encoding="utf-8",
    )
    store = ConfigStore(path)
    config = store.load()
    for field in FIELDS:
        value = shown(field, config)
        typed = parse(field, value) if isinstance(value, str) else value
        store.set_option(field.table, field.key, typed)
        assert shown(field, store.config) == value, field.name
    assert store.config == config
    assert parse(FIELDS[0], "0.0.0.0, ::") == ["0.0.0.0", "::"]


def test_the_diff_is_coloured() -> None:
    text = diff_text("a = 1\nb = 2\n", "a = 1\nb = 3\n", "backup", "current")
    styles = {text.plain[s.start : s.end]: str(s.style) for s in text.spans}
    assert styles["-b = 2\n"] == "red"
    assert styles["+b = 3"] == "green"
    assert "same as the current file" in diff_text("x\n", "x\n", "a", "b").plain
