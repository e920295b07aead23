"""The Help screen lists the app's real keys and says what each screen does."""

from __future__ import annotations

import inspect
import io
from pathlib import Path

from rich.console import Console, RenderableType
from textual.binding import Binding
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.widgets._footer import FooterKey, FooterLabel

from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.help import HelpScreen, screen_paragraph
from homeproxy.tui.screens.settings import SettingsScreen
from tests.waiting import wait_for


def plain(renderable: RenderableType, width: int = 160) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


def section(app: HomeproxyApp, widget_id: str) -> str:
    return plain(app.screen.query_one(f"#{widget_id}", Static).content)  # type: ignore[arg-type]


def keys_for(text: str, action: str) -> list[str]:
    """The keys on the table row of `action` (the words before it)."""
    for line in text.splitlines():
        words = line.split()
        if action in words:
            return words[: words.index(action)]
    raise AssertionError(f"no row for {action!r} in:\n{text}")


async def test_help_lists_the_real_keys_of_the_app(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await wait_for(lambda: isinstance(app.screen, HelpScreen), description="the Help screen")
        everywhere = section(app, "help-everywhere-keys")
        assert keys_for(everywhere, "Dashboard") == ["1"]
        assert keys_for(everywhere, "Settings") == ["4"]
        assert set(keys_for(everywhere, "Quit")) == {"q", "^q"}
        # Several keys for one action share a row; tooltips come from the bindings.
        assert set(keys_for(everywhere, "Help")) == {"?", "f1"}
        assert "Keys and what each screen does" in everywhere
        assert keys_for(everywhere, "Command") == ["^p"]  # the command palette

        # Each screen's own keys, from its class's BINDINGS.
        settings_keys = section(app, "help-settings-keys")
        assert keys_for(settings_keys, "Save") == ["^s"]
        assert keys_for(settings_keys, "Restore") == ["r"]
        await pilot.press("f1")  # already there: nothing breaks


async def test_a_new_binding_shows_up_without_touching_help(runtime: Runtime) -> None:
    class KettleApp(HomeproxyApp):
        CSS_PATH = str(Path(inspect.getfile(HomeproxyApp)).with_name("app.tcss"))
        BINDINGS = [Binding("ctrl+k", "noop", "Kettle", id="kettle", tooltip="Boil some water")]

    app = KettleApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f1")
        await wait_for(lambda: isinstance(app.screen, HelpScreen), description="the Help screen")
        text = section(app, "help-everywhere-keys")
        assert keys_for(text, "Kettle") == ["^k"] and "Boil some water" in text
        assert "Dashboard" in text  # the inherited ones are still there


async def test_each_screen_has_its_paragraph(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await wait_for(lambda: isinstance(app.screen, HelpScreen), description="the Help screen")
        for mode, cls in HomeproxyApp.MODES.items():
            assert isinstance(cls, type) and issubclass(cls, Screen)
            paragraph = screen_paragraph(mode, cls)
            assert len(paragraph) > 40, mode
            heading = section(app, f"help-{mode}")
            assert (cls.TITLE or "") in heading
            shown = " ".join(section(app, f"help-{mode}-text").split())
            # Markdown drops the ** of bold text; compare the words.
            assert " ".join(paragraph.replace("**", "").split())[:60] in shown, mode
        assert "sparkline" in section(app, "help-dashboard-text")
        assert "Backups" in section(app, "help-settings-text")
        assert screen_paragraph("settings", SettingsScreen) == SettingsScreen.HELP
        heading = section(app, "help-settings")
        assert heading.split()[0] == "4"


async def footer_labels(app: HomeproxyApp, pilot: Pilot[None], key: str, screen_type: type[Screen[None]]) -> list[str]:
    """Show a screen by its key and read the descriptions of the keys in its footer."""
    await pilot.press(key)
    await wait_for(lambda: isinstance(app.screen, screen_type), description=screen_type.__name__)
    await pilot.pause()
    footer = app.screen.query_one(Footer)
    await wait_for(lambda: bool(footer.query(FooterKey)), description="the footer's keys")
    keys = [k.description or k.key for k in footer.query(FooterKey)]
    groups = [str(label.content) for label in footer.query(FooterLabel)]
    return keys + groups


async def test_the_footer_shows_the_keys_of_the_current_screen(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(160, 40)) as pilot:
        labels = await footer_labels(app, pilot, "4", SettingsScreen)
        assert {"1", "2", "3", "4", "5", "screens", "Quit", "Save all"} <= set(labels)
        labels = await footer_labels(app, pilot, "question_mark", HelpScreen)
        assert {"1", "5", "screens", "Quit"} <= set(labels) and "Save all" not in labels


async def test_help_has_the_upstreams_screen_and_the_editors_upstream_keys(runtime: Runtime) -> None:
    app = HomeproxyApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await wait_for(lambda: isinstance(app.screen, HelpScreen), description="the Help screen")
        assert section(app, "help-upstreams").split()[:2] == ["u", "Upstreams"]
        assert "red down" in section(app, "help-upstreams-text")
        assert keys_for(section(app, "help-upstreams-keys"), "Close") == ["esc"]
        assert keys_for(section(app, "help-dashboard-keys"), "Upstreams") == ["u"]
        assert keys_for(section(app, "help-sites-keys"), "Upstreams") == ["u"]  # not in its full footer
        editor = section(app, "help-site-editor-keys")
        assert keys_for(editor, "Save") == ["^s"]
        assert keys_for(editor, "Add") == ["^n"]
        assert keys_for(editor, "Remove") == ["^del"]
        assert keys_for(editor, "Move") == ["alt+↑"]  # "Move up"; the first of the two rows
