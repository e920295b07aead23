"""`[tui.keymap]`: the user's keys, from the config file to the footer, the screens and Help."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.app import App
from textual.binding import Binding
from textual.dom import DOMNode
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey, FooterLabel

import homeproxy.tui
from homeproxy.keymap import BINDING_IDS, DEFAULT_KEYS, full_keymap, key_problem
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.certificates import CertificatesScreen
from homeproxy.tui.screens.confirm import ConfirmModal
from homeproxy.tui.screens.discovery import DiscoveryScreen
from homeproxy.tui.screens.help import HelpScreen, with_keys
from homeproxy.tui.screens.settings import SettingsScreen
from homeproxy.tui.screens.sites import SitesScreen
from homeproxy.tui.screens.traffic import TrafficScreen
from homeproxy.tui.screens.upstreams import UpstreamsScreen
from tests.tui.conftest import snapshot_config, snapshot_runtime_at
from tests.tui.test_help import section
from tests.waiting import wait_for

# Unusual, and not the other snapshots' own, so all can run at once.
LISTEN, PORT = "127.77.0.14", 18109

SITES = """[[sites]]
name = "homeassistant"
hosts = ["ha.home.arpa"]
upstreams = ["http://192.0.2.10:8123"]
"""

KEYMAP = """
[tui.keymap]
"screen.traffic" = "t"
"screen.help" = "h"
sites.toggle = "o"
"dashboard.upstreams" = "v"
"screen.help.f1" = "f2"
"""


def tui_bindings() -> Iterator[tuple[str, Binding]]:
    """Every binding declared in homeproxy/tui/, with the class that declares it."""
    for info in pkgutil.walk_packages(homeproxy.tui.__path__, "homeproxy.tui."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, DOMNode) and obj.__module__ == module.__name__:
                for binding in obj.__dict__.get("BINDINGS", []):
                    if isinstance(binding, Binding):
                        yield name, binding


def test_every_binding_has_an_id_and_a_tooltip_and_the_config_knows_each_id() -> None:
    bindings = list(tui_bindings())
    assert len(bindings) > 40
    missing = [(name, b.key) for name, b in bindings if not b.id or not b.tooltip]
    assert not missing, f"bindings without an id or a tooltip: {missing}"
    ids = [b.id for _name, b in bindings]
    assert len(ids) == len(set(ids)), "two bindings share an id"
    assert set(ids) == BINDING_IDS
    assert {b.id: b.key for _name, b in bindings} == DEFAULT_KEYS


def test_textual_is_given_every_id_but_the_users_key_wins() -> None:
    keymap = full_keymap({"screen.traffic": "t", "sites.add": "e", "quit": "?"})
    assert keymap["screen.traffic"] == "t" and keymap["screen.dashboard"] == "1"
    # Sites' own "e" (edit) would clash with the user's: left for Textual to drop, as without defaults.
    assert keymap["sites.add"] == "e" and "sites.edit" not in keymap
    assert "screen.help" not in keymap  # "?" is "question_mark"
    # The Certificates screen's own "t" is another node's binding: no clash, it keeps its place.
    assert keymap["certificates.trust"] == "t"


def test_every_default_key_passes_the_config_check() -> None:
    for _name, b in tui_bindings():
        assert key_problem(b.key) is None, b.key


@pytest.fixture
def keymap_runtime(in_tmp: Path) -> Iterator[Runtime]:
    path = Path("config.toml")
    path.write_text(snapshot_config(LISTEN, PORT, SITES) + KEYMAP, encoding="utf-8")
    with snapshot_runtime_at(path, in_tmp / "log") as rt:
        yield rt


async def test_a_remapped_key_drives_the_app(keymap_runtime: Runtime) -> None:
    app = HomeproxyApp(keymap_runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")  # the default key no longer shows Traffic
        await pilot.pause()
        assert not isinstance(app.screen, TrafficScreen)
        await pilot.press("t")
        await wait_for(lambda: isinstance(app.screen, TrafficScreen), description="the Traffic screen on t")
        await pilot.press("2")
        await wait_for(lambda: isinstance(app.screen, SitesScreen), description="the Sites screen")
        screen = app.screen
        assert isinstance(screen, SitesScreen)
        keys = {b.binding.id: key for key, b in screen.active_bindings.items()}
        assert keys["sites.toggle"] == "o" and keys["screen.traffic"] == "t"
        await pilot.press("o")
        await wait_for(lambda: not keymap_runtime.store.config.sites[0].enabled, description="the site turned off by o")


async def test_a_config_change_remaps_at_once(keymap_runtime: Runtime) -> None:
    app = HomeproxyApp(keymap_runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        path = keymap_runtime.config_path
        path.write_text(path.read_text(encoding="utf-8").replace('"screen.traffic" = "t"', '"screen.traffic" = "r"'))
        assert await asyncio.to_thread(keymap_runtime.store.reload, force=True)
        await wait_for(
            lambda: "r" in {k for k, b in app.screen.active_bindings.items() if b.binding.id == "screen.traffic"},
            description="the new key in the bindings",
        )
        await pilot.press("r")
        await wait_for(lambda: isinstance(app.screen, TrafficScreen), description="the Traffic screen on r")


async def show_help(pilot: Pilot[None]) -> None:
    await pilot.press("h")
    await wait_for(lambda: isinstance(pilot.app.screen, HelpScreen), description="the Help screen on h")
    await pilot.pause()


def test_help_shows_the_remapped_keys(snap_compare: Callable[..., bool], keymap_runtime: Runtime) -> None:
    assert snap_compare(HomeproxyApp(keymap_runtime), terminal_size=(120, 40), run_before=show_help)


def footer_line(app: HomeproxyApp) -> list[str]:
    """The footer as shown, left to right: each key (with its description, if any) and group label."""
    footer = app.screen.query_one(Footer)
    parts = [(key.region.x, f"{key.key_display} {key.description}".strip()) for key in footer.query(FooterKey)]
    parts += [(label.region.x, str(label.content)) for label in footer.query(FooterLabel)]
    return [text for _x, text in sorted(parts)]


async def test_a_remapped_key_keeps_its_place_in_the_footer(keymap_runtime: Runtime) -> None:
    app = HomeproxyApp(keymap_runtime)
    async with app.run_test(size=(200, 40)) as pilot:
        await pilot.press("2")
        await wait_for(lambda: isinstance(app.screen, SitesScreen), description="the Sites screen")
        await wait_for(lambda: "t" in footer_line(app), description="the remapped key in the footer")
        # Traffic on "t" stays third in the compact "screens" group (alone at the end, Textual would
        # show it as a key of its own), and Sites' on/off on "o" stays where "space" was.
        assert footer_line(app) == [
            *("a Add", "e Edit", "d Duplicate", "o On/off", "x Delete", "p Purge cache"),
            *("1", "2", "t", "4", "5", "6", "screens"),
            *("q Quit", "^p palette"),
        ]
        # Every id is remapped under the hood: a binding with two keys ("x,delete") still acts once.
        depth = len(app.screen_stack)
        await pilot.press("delete")
        await wait_for(lambda: isinstance(app.screen, ConfirmModal), description="the delete question")
        assert len(app.screen_stack) == depth + 1


async def test_help_writes_the_users_keys_into_its_prose(keymap_runtime: Runtime) -> None:
    app = HomeproxyApp(keymap_runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await show_help(pilot)
        dashboard = " ".join(section(app, "help-dashboard-text").split())
        assert "v shows them in full" in dashboard and "u shows" not in dashboard
        assert "F2 opens it from anywhere" in " ".join(section(app, "help-help-text").split())
        # Keys left alone are still written as their defaults.
        assert "(a, e, d)" in section(app, "help-site-editor-text")
        sites = " ".join(section(app, "help-sites-text").split())
        assert "m puts a site in maintenance" in sites and "u shows its upstreams'" in sites


@pytest.mark.parametrize(
    ("screen", "binding_id", "default", "sentence"),
    [
        (CertificatesScreen, "certificates.renew", "r", "renews the selected certificate"),
        (CertificatesScreen, "certificates.trust", "t", "): the local CA's root"),
        (CertificatesScreen, "certificates.export", "x", "writes the root"),
        (DiscoveryScreen, "discovery.add", "a", "opens the site editor"),
        (SettingsScreen, "settings.restore", "r", "restores one"),
        (UpstreamsScreen, "dashboard.upstreams", "u", "on a site in the Dashboard"),
    ],
)
def test_every_screens_help_names_the_users_key(
    screen: type[Screen[None]], binding_id: str, default: str, sentence: str
) -> None:
    """The other screens' paragraphs in Help write their keys as `{key:<id>}` too: the default
    key without a keymap, the user's key with one (on the text Help renders)."""
    app: App[object] = App()
    help_text = screen.HELP or ""
    assert "{key:" + binding_id + "}" in help_text

    def key_before(keymap: dict[str, str]) -> str:
        text = with_keys(app, help_text, keymap)
        at = text.index(sentence)
        return text[max(0, at - 40) : at]

    assert re.search(rf"(^|\W){default}(\W|$)", key_before({}))
    assert "F7" in key_before({binding_id: "f7"})
