"""`SettingsScreen`: the `[server]`, `[logging]`, `[defaults]`, `[cache]` and `[discovery]` tables, and backups.

Every edit is one `ConfigStore.set_option` transaction: validated (an invalid
value shows its error under its field and is not saved), applied to the running
engine (a port that cannot be bound is refused with the engine's message, in a
toast) and saved atomically with the file's comments kept. Saving and applying
block on the engine, so they run in a thread worker, never on the UI loop.

The Backups tab lists the timestamped copies that the store keeps (newest
first), shows a unified diff of the selected one against the current file, and
restores it after a confirmation (the current file is backed up first).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    Select,
    Static,
    TabbedContent,
    TabPane,
)

from homeproxy.config import Config, ConfigInvalid
from homeproxy.engine import BindError
from homeproxy.tui.bridge import ConfigEventArrived
from homeproxy.tui.screens.discovery import interfaces_text
from homeproxy.tui.screens.settings_backups import Backup, BackupsPane, backup_time, diff_text
from homeproxy.tui.screens.settings_fields import (
    FIELD_BY_ID,
    FIELDS,
    LEVELS,
    PANES,
    Field,
    Kind,
    Pane,
    _display,
    _on_off,
    parse,
    shown,
)
from homeproxy.tui.services import Services

__all__ = [
    "FIELDS",
    "FIELD_BY_ID",
    "LEVELS",
    "PANES",
    "Backup",
    "Field",
    "Kind",
    "Pane",
    "SettingsScreen",
    "backup_time",
    "diff_text",
    "parse",
    "shown",
]

log = logging.getLogger(__name__)


class SettingsScreen(BackupsPane):
    """Listeners, logging, defaults for new sites, the shared cache, mDNS discovery, and the config's backups."""

    TITLE = "Settings"
    HELP = (
        "Listeners, logging, what new sites start with, the shared cache, mDNS discovery, and the config's "
        "backups. Type a value and press **Enter** to save it (**Esc** undoes an edit, **ctrl+s** saves every "
        "edited field); check boxes and choices save at once. Each change is validated, applied to the "
        "running proxy and written to the config file with its comments kept: an invalid value shows its "
        "error under the field and is not saved, and a port that cannot be opened is refused. The **Backups** "
        "tab lists the copies kept before each save (newest first) with a diff against the current file; "
        "**{key:settings.restore}** restores one."
    )
    BINDINGS = [
        Binding(
            "ctrl+s",
            "save_all",
            "Save all",
            id="settings.save_all",
            tooltip="Save every edited field (each is validated and applied on its own)",
        ),
        Binding("escape", "revert", "Undo edit", id="settings.revert", tooltip="Put the focused field back as saved"),
        Binding(
            "r",
            "restore",
            "Restore",
            id="settings.restore",
            tooltip="Make the selected backup the config again (asks first)",
        ),
    ]
    CSS_PATH = "settings.tcss"

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self._backups: dict[str, Backup] = {}
        self._interfaces_help: Text | None = None
        # What each editor was last set to from the config: an editor holding anything else holds
        # an edit. Comparing values (not a flag set on Input.Changed) means a config refresh that
        # arrives between a keystroke and its Changed message still sees the edit and keeps it.
        self._last_shown: dict[str, str | bool] = {}

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        config = self.services.store.config
        yield Header(icon="⇄")
        with TabbedContent(id="settings-tabs"):
            for pane in PANES:
                with TabPane(pane.title, id=pane.id), VerticalScroll(classes="form"):
                    yield Static(Text(pane.intro), classes="pane-intro")
                    for field in pane.fields:
                        yield from self._field(field, config)
            with TabPane("Backups", id="backups"):
                yield Static(id="backups-info")
                yield DataTable(id="backup-list", cursor_type="row", zebra_stripes=True)
                with Horizontal(id="backup-actions"):
                    yield Button("Restore…", id="restore", variant="warning", compact=True)
                    yield Static(Text("Restoring undoes the + lines and brings back the − lines."), id="backup-hint")
                with VerticalScroll(id="backup-diff-scroll"):
                    yield Static(id="backup-diff")
        yield Static(id="settings-status")
        yield Footer()

    def _field(self, field: Field, config: Config) -> Iterator[Widget]:
        value = shown(field, config)
        self._last_shown[field.id] = value
        editor: Widget
        if field.kind == "switch":
            editor = Checkbox(_on_off(bool(value)), bool(value), id=field.id, classes="field-editor", compact=True)
        elif field.kind == "level":
            editor = Select(
                [(level, level) for level in LEVELS],
                value=str(value),
                allow_blank=False,
                id=field.id,
                classes="field-editor",
                compact=True,
            )
        else:
            editor = Input(str(value), placeholder=field.placeholder, id=field.id, classes="field-editor", compact=True)
        yield Vertical(
            Horizontal(Label(field.label, classes="field-label"), editor, classes="field-row"),
            Static(Text(field.help), classes="field-help", id=f"{field.id}-help"),
            Static(id=f"{field.id}-error", classes="field-error"),
            id=f"{field.id}-field",
            classes="field",
        )

    def on_mount(self) -> None:
        table = self.query_one("#backup-list", DataTable)
        table.add_column("When", key="when")
        table.add_column("Size", key="size")
        table.add_column("File", key="file")
        self._status(self._hint())
        self._show_interfaces()
        self._load_backups()
        # mDNS picks its interfaces in its own thread (after a save, or when the LAN changes).
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        if self.is_current:
            self._show_interfaces()

    def on_screen_resume(self) -> None:
        self._show_config(self.services.store.config)
        self._load_backups()

    @on(ConfigEventArrived)
    def _config_changed(self, message: ConfigEventArrived) -> None:
        # The app handed this to the screen; bubbling back up would make the app hand it over
        # again, forever (it does when the change came from one of this screen's workers).
        message.stop()
        self._show_config(self.services.store.config)
        self._load_backups()

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self._status(self._hint())
        self.refresh_bindings()

    def _hint(self) -> Text:
        """What the status line says until something happens."""
        if self.query_one("#settings-tabs", TabbedContent).active == "backups":
            return Text.assemble(
                ("r", "bold"), " restores the selected backup, after asking; the current file is kept too"
            )
        return Text.assemble(
            ("Enter", "bold"), " saves a field · ", ("Esc", "bold"), " undoes an edit · changes apply at once"
        )

    # --- fields --------------------------------------------------------------------------

    def _container(self, field: Field) -> Vertical:
        return self.query_one(f"#{field.id}-field", Vertical)

    def _editor_value(self, field: Field) -> str | bool:
        if field.kind == "switch":
            return self.query_one(f"#{field.id}", Checkbox).value
        if field.kind == "level":
            return str(self.query_one(f"#{field.id}", Select).value)
        return self.query_one(f"#{field.id}", Input).value

    def _set_editor(self, field: Field, value: str | bool) -> None:
        """Show `value` (from the config) in the field's editor."""
        self._last_shown[field.id] = bool(value) if field.kind == "switch" else str(value)
        if field.kind == "switch":
            box = self.query_one(f"#{field.id}", Checkbox)
            box.value = bool(value)
            box.label = _on_off(box.value)
        elif field.kind == "level":
            self.query_one(f"#{field.id}", Select).value = str(value)
        else:
            self.query_one(f"#{field.id}", Input).value = str(value)

    def is_dirty(self, field: Field) -> bool:
        """Whether the field's editor holds an edit: anything but what it last showed from the config."""
        return self._editor_value(field) != self._last_shown.get(field.id)

    def _show_config(self, config: Config) -> None:
        """Show `config` in every field that holds no unsaved edit."""
        for field in FIELDS:
            value = shown(field, config)
            current = self._editor_value(field)
            if current == value:
                # Unedited and unchanged, or an edit that the config now holds too.
                self._last_shown[field.id] = value
            elif not self.is_dirty(field):
                self._set_editor(field, value)
        self._mark_all()
        self._show_interfaces()

    def _show_interfaces(self) -> None:
        """Under the interfaces field: the ones mDNS runs on now."""
        field = FIELD_BY_ID["discovery-interfaces"]
        text = Text(field.help)
        discovery = self.services.discovery
        if discovery is None:
            text.append(" mDNS is off in this run.", style="bold")
        elif discovery.error:
            text.append(" mDNS failed: ", style="bold")
            text.append(discovery.error)
        elif discovery.running:
            text.append(" In use: ", style="bold")
            text.append(interfaces_text(discovery.interfaces) or "none (no interface has a LAN address)")
        if text != self._interfaces_help:
            self._interfaces_help = text
            self.query_one(f"#{field.id}-help", Static).update(text)

    def _mark(self, field: Field) -> None:
        self._container(field).set_class(self.is_dirty(field), "-dirty")
        self._update_unsaved()

    def _mark_all(self) -> None:
        for field in FIELDS:
            self._container(field).set_class(self.is_dirty(field), "-dirty")
        self._update_unsaved()

    def _update_unsaved(self) -> None:
        dirty = [f.name for f in FIELDS if self._container(f).has_class("-dirty")]
        if dirty:
            self.services.unsaved["settings"] = "Settings: " + ", ".join(dirty)
        else:
            self.services.unsaved.pop("settings", None)

    def _clear_error(self, field: Field) -> None:
        self._container(field).remove_class("-invalid")
        self.query_one(f"#{field.id}-error", Static).update("")

    @on(Input.Changed, ".field-editor")
    def _typed(self, event: Input.Changed) -> None:
        if event.input.id in FIELD_BY_ID:
            self._mark(FIELD_BY_ID[event.input.id])

    @on(Input.Submitted, ".field-editor")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id in FIELD_BY_ID:
            self._save([FIELD_BY_ID[event.input.id]])

    @on(Checkbox.Changed, ".field-editor")
    @on(Select.Changed, ".field-editor")
    def _chosen(self, event: Checkbox.Changed | Select.Changed) -> None:
        widget = event.control
        if isinstance(widget, Checkbox):
            widget.label = _on_off(widget.value)
        field = FIELD_BY_ID.get(widget.id or "")
        # Showing the config sets these widgets too; only a real change is saved.
        if field is not None and self.is_dirty(field):
            self._save([field])

    def action_save_all(self) -> None:
        """Save every field with an unsaved edit."""
        dirty = [f for f in FIELDS if self.is_dirty(f)]
        if not dirty:
            self._status(Text("Nothing to save: every field is as in the config file."))
            return
        self._save(dirty)

    def action_revert(self) -> None:
        """Put the focused field back as it is in the config."""
        focused = self.focused
        field = FIELD_BY_ID.get(focused.id or "") if focused is not None else None
        if field is None:
            return
        self._set_editor(field, shown(field, self.services.store.config))
        self._clear_error(field)
        self._mark(field)

    def _typed_value(self, field: Field) -> Any:
        value = self._editor_value(field)
        return parse(field, value) if isinstance(value, str) else value

    def _save(self, fields: list[Field]) -> None:
        edits = [(f, self._typed_value(f)) for f in fields]
        self._status(Text("Saving " + ", ".join(f.name for f in fields) + "…"))
        self._store(edits)

    # Not exclusive: a save that started must finish and report (the store's lock keeps them in order).
    @work(thread=True, group="settings-save")
    def _store(self, edits: list[tuple[Field, Any]]) -> None:
        """Each edit as its own transaction (in a thread: applying waits on the engine)."""
        store = self.services.store
        for field, value in edits:
            error: str | None = None
            refused = False
            try:
                store.set_option(field.table, field.key, value)
            except ConfigInvalid as e:
                error = "\n".join(err.message if err.key == field.name else str(err) for err in e.errors)
            except BindError as e:
                error, refused = str(e), True
            except Exception as e:  # a failed write, or an engine that refused otherwise
                log.exception("saving %s failed", field.name)
                error, refused = str(e) or type(e).__name__, True
            self.app.call_from_thread(self._stored, field, error, refused)

    def _stored(self, field: Field, error: str | None, refused: bool) -> None:
        """Show how one save went (on the UI loop)."""
        config = self.services.store.config
        name = self.services.config_path.name
        if error is None:
            self._clear_error(field)
            self._set_editor(field, shown(field, config))
            self._mark(field)
            message = f"Saved {field.name} = {_display(shown(field, config))} to {name} and applied it live"
            engine = self.services.engine
            if field.table == "server" and engine is not None and engine.addresses:
                message += ": listening on " + ", ".join(f"http://{h}:{p}" for h, p in engine.addresses)
            self._status(Text(message + ".", style="green"))
            self.app.notify(Text(message + ".").markup, title="Settings saved")
            return
        self._container(field).add_class("-invalid")
        self.query_one(f"#{field.id}-error", Static).update(Text(error))
        if field.kind in ("switch", "level"):
            # A choice that was refused goes back to what is in force.
            self._set_editor(field, shown(field, config))
        self._mark(field)
        if refused:
            self._status(Text(f"{field.name} was refused; nothing changed.", style="red"))
            self.app.notify(
                Text(f"{error}\nNothing was changed.").markup,
                title=f"{field.name} refused",
                severity="error",
                timeout=10,
            )
        else:
            self._status(Text(f"{field.name} is not valid; it was not saved.", style="red"))
            self.app.bell()
