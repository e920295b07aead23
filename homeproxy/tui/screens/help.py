"""`HelpScreen`: the keys and what each screen does.

Nothing here is written twice: the key tables are read from the real
`BINDINGS` of the app and of each screen class in the app's `MODES` (a key
added or remapped there shows up here), with the user's keys from the
config's `[tui.keymap]` in their place, and a screen's paragraph is its
`HELP` text when it has one. A key named in a paragraph is written as a
binding id, `{key:sites.add}`, and shown as the user's key for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingsMap
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, Static

from homeproxy.keymap import DEFAULT_KEYS
from homeproxy.tui.bridge import ConfigEventArrived
from homeproxy.tui.screens.confirm import ConfirmModal
from homeproxy.tui.screens.site_editor import SiteEditorModal
from homeproxy.tui.screens.upstreams import UpstreamsScreen
from homeproxy.tui.services import Services
from homeproxy.tui.widgets.upstream_list import UpstreamList

#: What a screen does, for screens whose class has no `HELP` of its own.
SCREEN_HELP = {
    "dashboard": (
        "The proxy at a glance. The top line says whether the engine serves, where it listens, for how long, "
        "and the total request rate and 5xx count; under it, a chart of the total rate over the last two minutes. "
        "The table has one row per site: its hosts, its upstreams (a dot each: green up, red down, yellow "
        "cooling down after failing requests, grey not checked yet; **{key:dashboard.upstreams}** shows them "
        "in full), the features it has on (the legend at the bottom), requests per second, median and 95th "
        "percentile latency, the share of 5xx answers and of cache hits, and the last seconds as a sparkline "
        "(up to 30, as many as the width allows; narrow terminals drop the hosts and upstreams columns). "
        "A red banner shows a listener that could not be opened or a config file edit that was rejected."
    ),
    "sites": (
        "Every site in the config file: add one (it starts with the defaults from Settings), edit its hosts, "
        "upstreams and features, turn it on or off, or remove it. Each change is validated, applied to the "
        "running proxy and saved to the config file with its comments kept. Purge empties a site's cache; "
        "{key:sites.maintenance} puts a site in maintenance (a 503 page, its upstreams untouched) and back; "
        "{key:sites.upstreams} shows its upstreams' health and traffic. A toast says when an upstream goes "
        "down or comes back."
    ),
    "traffic": (
        "The live request log: each request as it finishes, with its site, method, path, status and timing. "
        "The most recent requests are kept in memory (the oldest fall off); the access log on disk keeps them all."
    ),
}

EDITOR_HELP = (
    "Opened from Sites ({key:sites.add}, {key:sites.edit}, {key:sites.duplicate}). Every field is checked "
    "as you type, with the same rules as the config file. Upstreams are a row each (URL, weight, backup, "
    "most connections at once): while the cursor is in one, these keys add, remove and reorder them:"
)

INTRO = (
    "homeproxy puts your services behind one address and answers each by its own host name. "
    "Switch screens with the number keys; the footer always shows the keys of the screen you are on, "
    "and every action is also in the command palette. Keys that act on a field or a list work "
    "when it has the focus (Tab moves it). While you type in a field, letters and digits go into it."
)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One action and the keys that trigger it."""

    keys: tuple[str, ...]
    description: str
    tooltip: str


def class_bindings(cls: type[DOMNode], *, stop_at: type[DOMNode] | None = None) -> list[Binding]:
    """The bindings declared by `cls` and its bases, as Textual merges them (a subclass's key wins).

    With `stop_at`, only those declared by classes that `stop_at` does not already have.
    """
    keys: dict[str, list[Binding]] = {}
    skip = set(stop_at.__mro__) if stop_at is not None else set()
    for base in reversed(cls.__mro__):
        if base in skip or not (isinstance(base, type) and issubclass(base, DOMNode)):
            continue
        if not base._inherit_bindings:
            keys.clear()
        keys.update(BindingsMap(base.__dict__.get("BINDINGS", [])).key_to_bindings)
    return [b for bindings in keys.values() for b in bindings]


def remapped(bindings: Iterable[Binding], keymap: Mapping[str, str]) -> list[Binding]:
    """The bindings with the user's keys (`[tui.keymap]`: binding id -> keys), as Textual applies them."""
    out: list[Binding] = []
    for b in bindings:
        keys = keymap.get(b.id) if b.id else None
        if keys:
            out.extend(b.with_key(key.strip(), key_display=None) for key in keys.split(","))
        else:
            out.append(b)
    return out


def key_rows(app: App[object], bindings: Iterable[Binding], keymap: Mapping[str, str] | None = None) -> list[KeyRow]:
    """One row per action (several keys for one action share a row), with the user's keys from
    `keymap`; bindings without a description (internal ones) are left out."""
    rows: dict[tuple[str, str], tuple[list[str], str]] = {}
    for b in remapped(bindings, keymap or {}):
        if not b.description:
            continue
        keys, tooltip = rows.setdefault((b.action, b.description), ([], b.tooltip))
        display = app.get_key_display(b)
        if display not in keys:
            keys.append(display)
        if not tooltip and b.tooltip:
            rows[(b.action, b.description)] = (keys, b.tooltip)
    return [KeyRow(tuple(keys), description, tooltip) for (_, description), (keys, tooltip) in rows.items()]


def key_table(rows: list[KeyRow]) -> Table:
    """The rows as a three-column table: keys, action, what it does."""
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=True)
    # Fixed widths, so that every section's table lines up with the others.
    table.add_column("keys", style="bold", no_wrap=True, width=12)
    table.add_column("action", no_wrap=True, width=18)
    table.add_column("what", style="dim", ratio=1)
    for row in rows:
        table.add_row(Text("  ".join(row.keys)), Text(row.description), Text(row.tooltip))
    return table


#: A key in a paragraph: `{key:<binding id>}`.
KEY_MARK = re.compile(r"\{key:([^{}\s]+)\}")


def keys_of(binding_id: str, keymap: Mapping[str, str]) -> list[str]:
    """The keys of a binding: the user's from `keymap`, else its default ones."""
    return [k.strip() for k in (keymap.get(binding_id) or DEFAULT_KEYS[binding_id]).split(",")]


def with_keys(app: App[object], text: str, keymap: Mapping[str, str]) -> str:
    """`text` (Markdown) with each `{key:<id>}` written as that binding's key(s), as the footer shows
    them (a function key in capitals, as prose writes it: "F1"); several keys are joined with "/"."""

    def key(match: re.Match[str]) -> str:
        shown = []
        for k in keys_of(match.group(1), keymap):
            display = app.get_key_display(Binding(k, ""))
            shown.append(display.upper() if re.fullmatch(r"f\d+", display) else display)
        # A key such as "*" or "_" is a character, not Markdown's emphasis.
        return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", "/".join(shown))

    return KEY_MARK.sub(key, text)


def screen_paragraph(mode: str, cls: type[Screen[Any]]) -> str:
    """What a screen does: its class's `HELP`, else the text here, else its docstring."""
    own = cls.HELP
    if own:
        return own
    if mode in SCREEN_HELP:
        return SCREEN_HELP[mode]
    return (cls.__doc__ or "").strip()


class HelpScreen(Screen[None]):
    """Every key, grouped by screen, and a paragraph on what each screen does."""

    TITLE = "Help"
    HELP = (
        "This page. It lists the keys that work everywhere, then each screen with its own keys, read from "
        "the app itself; **{key:screen.help.f1}** opens it from anywhere."
    )
    CSS_PATH = "help.tcss"

    def __init__(self, services: Services | None = None) -> None:
        """`services` is what every screen is built with; Help reads only the app's bindings."""
        super().__init__()
        self.services = services
        self._shown_keymap: dict[str, str] = {}

    @property
    def keymap(self) -> dict[str, str]:
        """The user's keys (`[tui.keymap]`), or none without services."""
        return dict(self.services.store.config.tui.keymap) if self.services is not None else {}

    def on_screen_resume(self) -> None:
        if self.keymap != self._shown_keymap:
            self.refresh(recompose=True)

    @on(ConfigEventArrived)
    def _config_changed(self) -> None:
        if self.keymap != self._shown_keymap:
            self.refresh(recompose=True)

    def compose(self) -> ComposeResult:
        yield Header(icon="⇄")
        with VerticalScroll(id="help"):
            yield Static(Text(INTRO), classes="help-text", id="help-intro")
            yield from self._sections()
        yield Footer()

    def _sections(self) -> Iterator[Widget]:
        app = self.app
        keymap = self._shown_keymap = self.keymap
        app_bindings = class_bindings(type(app))
        if app.ENABLE_COMMAND_PALETTE:
            app_bindings.append(
                Binding(
                    app.COMMAND_PALETTE_BINDING,
                    "command_palette",
                    "Command palette",
                    key_display=app.COMMAND_PALETTE_DISPLAY,
                    tooltip="Search every action (show a screen, reload the config, change the theme...)",
                )
            )
        everywhere = key_rows(app, [*app_bindings, *class_bindings(Screen)], keymap)
        yield from self._section("everywhere", Text("Everywhere"), None, everywhere)
        for mode, screen in app.MODES.items():
            if not (isinstance(screen, type) and issubclass(screen, Screen)):
                continue
            shows = [b for b in remapped(app_bindings, keymap) if b.action == f"show('{mode}')"]
            keys = "  ".join(dict.fromkeys(app.get_key_display(b) for b in shows))
            title = screen.TITLE or mode.title()
            heading = Text.assemble((f" {keys} ", "reverse"), " ", title) if keys else Text(title)
            rows = key_rows(app, class_bindings(screen, stop_at=Screen), keymap)
            paragraph = with_keys(app, screen_paragraph(mode, screen), keymap)
            yield from self._section(mode, heading, paragraph, rows)
        rows = key_rows(app, class_bindings(UpstreamsScreen, stop_at=Screen), keymap)
        opens = "  ".join(app.get_key_display(Binding(k, "")) for k in keys_of("sites.upstreams", keymap))
        heading = Text.assemble((f" {opens} ", "reverse"), " ", UpstreamsScreen.TITLE or "Upstreams")
        yield from self._section("upstreams", heading, with_keys(app, UpstreamsScreen.HELP, keymap), rows)
        editor = [*class_bindings(SiteEditorModal, stop_at=ModalScreen), *class_bindings(UpstreamList)]
        paragraph = with_keys(app, EDITOR_HELP, keymap)
        yield from self._section("site-editor", Text("Site editor"), paragraph, key_rows(app, editor, keymap))
        dialogs = [ConfirmModal]
        rows = key_rows(app, [b for d in dialogs for b in class_bindings(d, stop_at=ModalScreen)], keymap)
        yield from self._section(
            "dialogs", Text("Questions"), "A question such as “Quit without saving?” waits for an answer:", rows
        )

    def _section(self, name: str, heading: Text, paragraph: str | None, rows: list[KeyRow]) -> Iterator[Widget]:
        yield Static(heading, classes="help-heading", id=f"help-{name}")
        if paragraph:
            yield Static(Markdown(paragraph), classes="help-text", id=f"help-{name}-text")
        body: RenderableType = key_table(rows) if rows else Text("No keys of its own.")
        yield Static(body, classes="help-keys" if rows else "help-keys help-none", id=f"help-{name}-keys")
