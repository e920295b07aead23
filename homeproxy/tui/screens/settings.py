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

import difflib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
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
from homeproxy.tui.format import size
from homeproxy.tui.screens.confirm import ConfirmModal
from homeproxy.tui.screens.discovery import interfaces_text
from homeproxy.tui.services import Services

log = logging.getLogger(__name__)

Kind = Literal["list", "types", "port", "count", "duration", "size", "text", "access_log", "level", "switch"]

LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Field:
    """One editable key of a top-level table."""

    table: str
    key: str
    label: str
    kind: Kind
    help: str
    placeholder: str = ""
    """What an empty text field shows (what empty means)."""

    @property
    def id(self) -> str:
        """The editor widget's id (kebab-case), e.g. `server-http-port`."""
        return f"{self.table}-{self.key.replace('_', '-')}"

    @property
    def name(self) -> str:
        """As the file and its errors spell it, e.g. `server.http_port`."""
        return f"{self.table}.{self.key}"


@dataclass(frozen=True, slots=True)
class Pane:
    """One tab of fields."""

    id: str
    title: str
    intro: str
    fields: tuple[Field, ...]


PANES = (
    Pane(
        "listeners",
        "Listeners",
        "Where homeproxy listens. A change takes effect at once; if the new address or port "
        "cannot be opened, the old one stays and nothing changes.",
        (
            Field("server", "listen", "Listen on", "list", 'Addresses, comma-separated: "0.0.0.0" (all IPv4), "::".'),
            Field("server", "http_port", "HTTP port", "port", "80 needs CAP_NET_BIND_SERVICE; 0 picks a free port."),
            Field(
                "server", "https_port", "HTTPS port", "port", "Reserved for TLS: checked now, opened once TLS lands."
            ),
            Field("server", "trusted_proxies", "Trusted proxies", "list", "CIDRs whose X-Forwarded-For is believed."),
            Field(
                "server", "drain_timeout", "Drain timeout", "duration", "How long a stop waits for requests, e.g. 10s."
            ),
        ),
    ),
    Pane(
        "logging",
        "Logging",
        "The access log has one JSON line per request; the process log says what homeproxy does.",
        (
            Field(
                "logging",
                "access_log",
                "Access log",
                "access_log",
                "true (access.log in the log dir), false, or a path.",
            ),
            Field("logging", "level", "Log level", "level", "How much the process log says."),
            Field("logging", "max_bytes", "Rotate at", "size", 'Rotate the access log past this size, e.g. "10MiB".'),
            Field("logging", "keep_files", "Keep files", "count", "How many rotated access logs to keep."),
        ),
    ),
    Pane(
        "new-sites",
        "New sites",
        "What a site added from the Sites screen starts with; existing sites are not changed.",
        (
            Field("defaults", "websockets", "WebSockets", "switch", "Proxy WebSocket upgrades."),
            Field("defaults", "compression", "Compression", "switch", "Compress responses for clients that accept it."),
            Field("defaults", "cache", "Cache", "switch", "Store and serve cacheable responses."),
            Field("defaults", "connect_timeout", "Connect timeout", "duration", "Wait this long for a connection."),
            Field("defaults", "read_timeout", "Read timeout", "duration", "Wait this long for data between reads."),
        ),
    ),
    Pane(
        "cache",
        "Cache",
        "The memory cache shared by every site that turns caching on.",
        (
            Field("cache", "max_bytes", "Cache size", "size", "Its memory bound; least recently used go first."),
            Field("cache", "header", "Cache header", "text", "Says HIT, MISS, STALE...; empty sends none."),
        ),
    ),
    Pane(
        "discovery",
        "Discovery",
        "mDNS (Bonjour/Avahi) on the LAN: finding devices for the Discovery screen, and answering "
        "for sites' .local names so phones and laptops find them without a DNS server.",
        (
            Field("discovery", "browse", "Browse", "switch", "Look for services on the LAN (the Discovery screen)."),
            Field(
                "discovery",
                "browse_all_types",
                "All types",
                "switch",
                "Also browse every type the LAN's devices list, not only those below.",
            ),
            Field("discovery", "service_types", "Service types", "types", 'Comma-separated, e.g. "_http._tcp".'),
            Field(
                "discovery",
                "publish_hostnames",
                "Publish names",
                "switch",
                "Answer for sites' .local hosts (plex.local); a name another machine holds is never taken.",
            ),
            Field(
                "discovery",
                "advertise",
                "Advertise",
                "switch",
                "Also list each site as a web service in other mDNS browsers.",
            ),
            Field(
                "discovery",
                "interfaces",
                "Interfaces",
                "list",
                "Names or addresses, comma-separated; empty: the LAN interfaces.",
                "automatic: the LAN interfaces",
            ),
            Field("discovery", "domain", "Domain", "text", "Suggested hosts for a discovered service: plex.<domain>."),
        ),
    ),
)

FIELDS = tuple(f for pane in PANES for f in pane.fields)
FIELD_BY_ID = {f.id: f for f in FIELDS}

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?\d+\.\d*|[+-]?\.\d+")

#: How the Backups tab names a file's time when its name has none.
_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d{6}))?$")


# --- values: model -> editor text, editor text -> TOML ---------------------------------


def _duration_text(secs: float) -> str:
    if secs.is_integer():
        s = int(secs)
        for unit, n in (("h", 3600), ("m", 60)):
            if s >= n and s % n == 0:
                return f"{s // n}{unit}"
        return f"{s}s"
    ms = secs * 1000
    if secs < 1 and ms.is_integer():
        return f"{int(ms)}ms"
    return f"{secs:g}s"


def _size_text(n: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def shown(field: Field, config: Config) -> str | bool:
    """What the field's editor shows for `config` (a bool for switches)."""
    if field.key == "access_log":
        lg = config.logging
        return (lg.access_log_path or "true") if lg.access_log else "false"
    value = getattr(getattr(config, field.table), field.key)
    if field.kind == "switch":
        return bool(value)
    if field.kind == "list":
        return ", ".join(value)
    if field.kind == "types":
        return ", ".join(t.removesuffix(".local.") for t in value)
    if field.kind == "duration":
        return _duration_text(float(value))
    if field.kind == "size":
        return _size_text(int(value))
    return str(value)


def parse(field: Field, text: str) -> Any:
    """The TOML value for what was typed. Nothing is judged here: the store validates, and its
    error (e.g. `got "abc"`) is what the user sees."""
    t = text.strip()
    if field.kind in ("list", "types"):
        return [part for part in re.split(r"[,\s]+", t) if part]
    if field.kind in ("port", "count", "duration", "size") and _INT.fullmatch(t):
        return int(t)
    if field.kind == "duration" and _FLOAT.fullmatch(t):
        return float(t)
    if field.kind == "access_log":
        low = t.lower()
        if low in ("true", "on", "yes"):
            return True
        if low in ("false", "off", "no", ""):
            return False
    return t


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _display(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value or '""'


# --- backups ---------------------------------------------------------------------------


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


# --- the screen ------------------------------------------------------------------------


class SettingsScreen(Screen[None]):
    """Listeners, logging, defaults for new sites, the shared cache, mDNS discovery, and the config's backups."""

    TITLE = "Settings"
    HELP = (
        "Listeners, logging, what new sites start with, the shared cache, mDNS discovery, and the config's backups. "
        "Type a value and press **Enter** to save it (**Esc** undoes an edit, **ctrl+s** saves every edited field); "
        "check boxes and choices save at once. Each change is validated, applied to the running proxy and "
        "written to the config file with its comments kept: an invalid value shows its error under the field "
        "and is not saved, and a port that cannot be opened is refused. The **Backups** tab lists the copies "
        "kept before each save (newest first) with a diff against the current file; **r** restores one."
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
        if field.kind == "switch":
            box = self.query_one(f"#{field.id}", Checkbox)
            box.value = bool(value)
            box.label = _on_off(box.value)
        elif field.kind == "level":
            self.query_one(f"#{field.id}", Select).value = str(value)
        else:
            self.query_one(f"#{field.id}", Input).value = str(value)

    def is_dirty(self, field: Field) -> bool:
        """Whether the field's editor holds an edit that is not saved."""
        return self._editor_value(field) != shown(field, self.services.store.config)

    def _show_config(self, config: Config) -> None:
        """Show `config` in every field that holds no unsaved edit."""
        for field in FIELDS:
            if not self._container(field).has_class("-dirty"):
                self._set_editor(field, shown(field, config))
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

    def _status(self, text: Text) -> None:
        self.query_one("#settings-status", Static).update(text)

    # --- backups -------------------------------------------------------------------------

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
