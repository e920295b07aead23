"""The Settings screen's Backups tab: listing the config's backups, diffing one, restoring it."""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Button, DataTable, Static, TabbedContent

from homeproxy.config import Config, ConfigInvalid
from homeproxy.tui.format import size
from homeproxy.tui.screens.confirm import ConfirmModal
from homeproxy.tui.services import Services

log = logging.getLogger(__name__)

#: How the Backups tab names a file's time when its name has none.
_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d{6}))?$")


@dataclass(frozen=True, slots=True)
class Backup:
    """One backup file, as listed."""

    path: Path
    when: str
    """The time in its name ("2026-01-31 08:15:02"), or its modification time."""
    bytes: int


def backup_time(path: Path, stem: str) -> str | None:
    """The time in a backup's name (`config-20260131-081502-123456.toml`), or None."""
    m = _STAMP.search(path.stem[len(stem) :])
    if m is None:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def diff_text(old: str, new: str, old_label: str, new_label: str) -> Text:
    """A unified diff of `old` against `new`, coloured: removed lines red, added lines green."""
    lines = list(
        difflib.unified_diff(old.splitlines(), new.splitlines(), fromfile=old_label, tofile=new_label, lineterm="")
    )
    if not lines:
        return Text("The backup is the same as the current file.", style="dim")
    text = Text()
    for line in lines:
        if line.startswith(("--- ", "+++ ")):
            style = "bold"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        else:
            style = ""
        text.append(line + "\n", style=style)
    text.rstrip()
    return text


class BackupsPane(Screen[None]):
    """The Backups tab's behaviour, a base of `SettingsScreen` (which composes the tab's widgets)."""

    services: Services
    _backups: dict[str, Backup]

    def _status(self, text: Text) -> None:
        self.query_one("#settings-status", Static).update(text)

    def _show_config(self, config: Config) -> None:
        """Show `config` in the fields (`SettingsScreen` overrides this)."""

    @work(thread=True, exclusive=True, group="settings-backups")
    def _load_backups(self) -> None:
        """List the backups (in a thread: it reads the directory)."""
        store = self.services.store
        stem = store.path.stem
        entries: list[Backup] = []
        for path in reversed(store.backups()):
            try:
                st = path.stat()
            except OSError:
                continue  # removed meanwhile (only the last N are kept)
            when = backup_time(path, stem) or datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M:%S")
            entries.append(Backup(path, when, st.st_size))
        self.app.call_from_thread(self._show_backups, entries)

    def _show_backups(self, entries: list[Backup]) -> None:
        if not self.is_attached:
            return  # the worker finished after the screen went (the app is closing)
        table = self.query_one("#backup-list", DataTable)
        selected = self._selected_key()
        self._backups = {str(b.path): b for b in entries}
        table.clear()
        for b in entries:
            table.add_row(Text(b.when), Text(size(b.bytes), justify="right"), Text(b.path.name), key=str(b.path))
        store = self.services.store
        where = f"{store.path.stem}.backups/"
        info = self.query_one("#backups-info", Static)
        if entries:
            keys = list(self._backups)
            table.move_cursor(row=keys.index(selected) if selected in keys else 0)
            info.update(
                Text(
                    f"{len(entries)} backup(s) of {store.path.name} in {where}, newest first; "
                    f"each save keeps the previous file (the last {store.keep_backups})."
                )
            )
        else:
            info.update(Text(f"No backups yet: each save keeps the previous {store.path.name} in {where}."))
        self.query_one("#restore", Button).disabled = not entries
        self._diff_selected()
        self.refresh_bindings()

    def _selected_key(self) -> str | None:
        table = self.query_one("#backup-list", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return key if key in self._backups else None

    def selected_backup(self) -> Backup | None:
        """The backup under the cursor in the Backups tab."""
        key = self._selected_key()
        return self._backups[key] if key is not None else None

    @on(DataTable.RowHighlighted, "#backup-list")
    def _backup_highlighted(self) -> None:
        self._diff_selected()

    def _diff_selected(self) -> None:
        backup = self.selected_backup()
        if backup is None:
            self.query_one("#backup-diff", Static).update("")
            return
        self._load_diff(backup)

    @work(thread=True, exclusive=True, group="settings-diff")
    def _load_diff(self, backup: Backup) -> None:
        """Diff a backup against the current file (in a thread: it reads both)."""
        current = self.services.store.path
        try:
            old = backup.path.read_text(encoding="utf-8")
            new = current.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as e:
            text = Text(f"Cannot read the files: {e}", style="red")
        else:
            text = diff_text(old, new, f"backup of {backup.when}", f"{current.name} (current)")
        self.app.call_from_thread(self._show_diff, backup, text)

    def _show_diff(self, backup: Backup, text: Text) -> None:
        if not self.is_attached:
            return
        try:
            if self.selected_backup() == backup:
                self.query_one("#backup-diff", Static).update(text)
        except NoMatches:  # the screen is closing: its widgets are gone already
            pass

    @on(Button.Pressed, "#restore")
    def _restore_pressed(self) -> None:
        self.action_restore()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "restore":
            if self.query_one("#settings-tabs", TabbedContent).active != "backups":
                return False
            return True if self.selected_backup() is not None else None
        return True

    def action_restore(self) -> None:
        """Ask, then make the selected backup the config again."""
        backup = self.selected_backup()
        if backup is None:
            return
        self.app.push_screen(
            ConfirmModal(
                f"Restore the backup of {backup.when}? The current file is backed up first, "
                "then the backup is validated and applied.",
                confirm="Restore",
                cancel="Keep",
            ),
            partial(self._restore_if, backup),
        )

    def _restore_if(self, backup: Backup, confirmed: bool | None) -> None:
        if confirmed:
            self._status(Text(f"Restoring the backup of {backup.when}…"))
            self._restore(backup)

    @work(thread=True, exclusive=True, group="settings-restore")
    def _restore(self, backup: Backup) -> None:
        error: str | None = None
        try:
            self.services.store.restore(backup.path)
        except ConfigInvalid as e:
            error = "the backup is not a valid config: " + "; ".join(str(err) for err in e.errors)
        except Exception as e:  # the engine refused it (a busy port), or the file could not be written
            log.exception("restoring %s failed", backup.path)
            error = str(e) or type(e).__name__
        self.app.call_from_thread(self._restored, backup, error)

    def _restored(self, backup: Backup, error: str | None) -> None:
        if error is None:
            message = f"Restored the backup of {backup.when} and applied it live."
            self._status(Text(message, style="green"))
            self.app.notify(Text(message).markup, title="Config restored")
        else:
            self._status(Text("The backup was not restored; nothing changed.", style="red"))
            self.app.notify(
                Text(f"{error}\nNothing was changed.").markup, title="Not restored", severity="error", timeout=10
            )
        self._show_config(self.services.store.config)
        self._load_backups()
