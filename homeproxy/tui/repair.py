"""`RepairApp`: what `homeproxy` opens when its config file is broken at start.

Instead of exiting with the errors, it shows them (file, line, key, what was expected) over
the file itself, opened at the first error's line. The user fixes it there (ctrl+s checks
and saves, atomically; nothing is written while it has errors) or in their own editor (ctrl+e runs `$EDITOR`;
a save from anywhere else is picked up too). As soon as the file is valid the app exits with
`True`, and the CLI starts homeproxy as usual. Quitting leaves the file as it is.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Header, Static, TextArea

from homeproxy.config import ConfigError, ConfigInvalid
from homeproxy.config.load import decode_config, parse_config
from homeproxy.config.store import atomic_write


def check(path: Path) -> tuple[ConfigError, ...]:
    """The errors of the file at `path` (none: it is valid)."""
    try:
        parse_config(decode_config(path.read_bytes(), str(path)), str(path))
    except ConfigInvalid as e:
        return e.errors
    except OSError as e:
        return (ConfigError(str(path), None, "", f"cannot read the file: {e.strerror or e}"),)
    return ()


def check_text(text: str, path: Path) -> tuple[ConfigError, ...]:
    try:
        parse_config(text, str(path))
    except ConfigInvalid as e:
        return e.errors
    return ()


class RepairApp(App[bool]):
    """The config file's errors above the file, until it is valid."""

    CSS_PATH = "repair.tcss"
    TITLE = "homeproxy"
    BINDINGS = [
        Binding(
            "ctrl+s",
            "save",
            "Check and save",
            id="repair.save",
            tooltip="Check the text and save it if it is valid",
            priority=True,
        ),
        Binding(
            "ctrl+e",
            "editor",
            "Open in $EDITOR",
            id="repair.editor",
            tooltip="Edit the file in your $EDITOR",
            priority=True,
        ),
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            id="repair.quit",
            tooltip="Leave without starting the proxy",
            priority=True,
        ),
    ]

    def __init__(self, path: Path, errors: tuple[ConfigError, ...]) -> None:
        super().__init__()
        self.path = path
        self.errors = errors
        self.sub_title = f"the config file needs a fix: {path}"
        self._seen = self._stamp()

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="repair"):
            yield Static(id="errors")
            yield TextArea(self._read(), show_line_numbers=True, soft_wrap=False, tab_behavior="indent", id="file")
            yield Static(
                "homeproxy starts as soon as the file is valid: fix it here and press ctrl+s, or in your own "
                "editor (ctrl+e, or any editor: a save is picked up). ctrl+q leaves it as it is.",
                id="hint",
            )
        yield Footer()

    def on_mount(self) -> None:
        self._show(self.errors)
        self.set_interval(0.5, self._outside_edit)

    def _read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _show(self, errors: tuple[ConfigError, ...]) -> None:
        self.errors = errors
        text = Text()
        text.append(f"{len(errors)} problem{'s' if len(errors) != 1 else ''} in {self.path}:\n", style="bold red")
        for e in errors:
            where = f"line {e.line}" if e.line else "the file"
            text.append(f"  {where}: ", style="bold")
            text.append(f"{e.key}: " if e.key else "", style="cyan")
            text.append(e.message + "\n")
        self.query_one("#errors", Static).update(text)
        first = next((e.line for e in errors if e.line), None)
        if first is not None:
            area = self.query_one("#file", TextArea)
            area.move_cursor((first - 1, 0), center=True)
            area.focus()

    def action_save(self) -> None:
        area = self.query_one("#file", TextArea)
        errors = check_text(area.text, self.path)
        if errors:
            self._show(errors)
            self.notify("Not saved: the file still has problems (listed above).", severity="error", markup=False)
            return
        atomic_write(self.path, area.text)
        self.exit(True)

    def action_editor(self) -> None:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "nano"
        with self.suspend():
            subprocess.run([*shlex.split(editor), str(self.path)], check=False)
        self._outside_edit(force=True)

    def _outside_edit(self, force: bool = False) -> None:
        stamp = self._stamp()
        if stamp == self._seen and not force:
            return
        self._seen = stamp
        errors = check(self.path)
        if not errors:
            self.exit(True)
            return
        self.query_one("#file", TextArea).load_text(self._read())
        self._show(errors)

    @on(TextArea.Changed)
    def _typed(self) -> None:
        self.query_one("#hint", Static).set_class(True, "-edited")
