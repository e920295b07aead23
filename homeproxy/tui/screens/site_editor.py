"""`SiteEditorModal`: add, edit or duplicate one site, validated by the real loader as you type.

Every edit turns the form into TOML data, puts it into a copy of the config
document in place of the site being edited, and runs `build_config` on that:
the errors shown under the fields are the loader's own (a duplicate host, a
bad URL, an empty name), and Save is refused until there are none. Saving goes
through `ConfigStore` (validated, applied live, written atomically with the
file's comments kept) in a worker thread, since applying waits on the engine.
While the form has changes, `app.unsaved` says so (the quit confirmation reads it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

from homeproxy.config import Config, ConfigError, ConfigInvalid, ConfigStore, Site, build_config
from homeproxy.config.model import CacheSettings, CompressionSettings, SiteDefaults
from homeproxy.tui.bridge import ConfigEventArrived
from homeproxy.tui.screens.confirm import ConfirmModal
from homeproxy.tui.services import Services
from homeproxy.tui.widgets.site_form import FORM_KEYS, SiteForm


def new_site(defaults: SiteDefaults) -> Site:
    """An empty site with the `[defaults]` a new site starts from."""
    return Site(
        name="",
        hosts=(),
        upstreams=(),
        websockets=defaults.websockets,
        connect_timeout=defaults.connect_timeout,
        read_timeout=defaults.read_timeout,
        cache=CacheSettings(enabled=defaults.cache),
        compression=CompressionSettings(enabled=defaults.compression),
    )


def copy_name(config: Config, name: str) -> str:
    """A free name for a copy of `name`: "plex-copy", "plex-copy-2", ..."""
    candidate, n = f"{name}-copy", 2
    while config.site(candidate) is not None:
        candidate, n = f"{name}-copy-{n}", n + 1
    return candidate


def check_site(
    document: Mapping[str, Any],
    original: str | None,
    raw: Mapping[str, Any],
    warnings: list[str] | None = None,
) -> tuple[Site | None, dict[str, list[str]]]:
    """Validate `raw` (a site as TOML data) as it would be in `document` (the config as plain data).

    The site replaces the one named `original` (or is added) and goes last, so that a
    clash with another site (a host, a name) is reported on it. Returns the built site,
    or None and the loader's messages keyed by their key path inside the site ("" for
    what is not about one key of it). The loader's warnings about this site (a host its
    own certificate does not cover) are appended to `warnings` when given.
    """
    data = dict(document)
    sites = data.get("sites", [])
    others = [
        s
        for s in (sites if isinstance(sites, list) else [])
        if not (isinstance(s, Mapping) and s.get("name") == original)
    ]
    index = len(others)
    # Keys the form does not show (upstream_keepalive, access_log, ...) keep the file's values:
    # editing a site in the TUI never drops a setting made in an editor.
    previous = next((s for s in sites if isinstance(s, Mapping) and s.get("name") == original), None)
    kept = {k: v for k, v in previous.items() if k not in FORM_KEYS} if isinstance(previous, Mapping) else {}
    data["sites"] = [*others, {**kept, **raw}]
    prefix = f"sites[{index}]"
    found: list[ConfigError] = []
    try:
        config = build_config(data, warnings=found)
    except ConfigInvalid as e:
        errors: dict[str, list[str]] = {}
        for err in e.errors:
            if err.key.startswith((prefix + ".", prefix + "[")):
                errors.setdefault(err.key[len(prefix) + 1 :], []).append(_without_index(err.message))
            else:
                errors.setdefault("", []).append(f"{err.key}: {err.message}" if err.key else err.message)
        return None, errors
    finally:
        if warnings is not None:
            ours = (prefix + ".", prefix + "[")
            warnings.extend(w.message for w in found if w.key == prefix or w.key.startswith(ours))
    return config.sites[index], {}


def _without_index(message: str) -> str:
    """The loader names other sites by their index in the file; here (where the edited site was
    moved last) the index can be off by one, and the name says it better."""
    message = re.sub(r" \(sites\[\d+\]\)", "", message)
    return re.sub(r"\bby sites\[\d+\]", "by another site", message)


def save_site(store: ConfigStore, original: Site | None, site: Site) -> Config:
    """Add `site`, or put it in place of `original`, through the store (call in a thread)."""
    if original is None:
        return store.add_site(site)
    for name in ("cache", "compression", "passive_health"):
        old = getattr(original, name)
        if not old.enabled and not getattr(site, name).enabled:
            # Still off: keep the options the file has (the form sends an off switch bare).
            site = replace(site, **{name: old})
    return store.update_site(original.name, site)


class SiteEditorModal(ModalScreen[Site | None]):
    """The site form with its status and Save/Cancel; dismisses with the saved site, or None."""

    CSS_PATH = "site_editor.tcss"

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="site-editor.save", tooltip="Check, apply live and write the config file"),
        Binding(
            "escape",
            "close",
            "Close",
            id="site-editor.close",
            tooltip="Close the editor (asks first if there are unsaved changes)",
        ),
    ]

    def __init__(
        self,
        services: Services,
        site: Site | None = None,
        *,
        duplicate: bool = False,
        start: Site | None = None,
        note: Text | None = None,
    ) -> None:
        """Edit `site`, or add a copy of it (`duplicate`), or add a new site: empty, or
        filled in from `start` (e.g. a discovered service), with `note` saying where it came from."""
        super().__init__()
        self.services = services
        self.store = store = services.store
        self.original: Site | None = None if site is None or duplicate else site
        """The site being edited (None when adding)."""
        self.duplicate = duplicate and site is not None
        self.prefilled = site is None and start is not None
        """A new site filled in by someone else: unsaved work from the start."""
        self.note = note
        """Shown above the status line (where a prefilled site came from)."""
        self.source = site
        """The site the form started from (the copied one, for a duplicate)."""
        if site is None:
            start = start if start is not None else new_site(store.config.defaults)
        elif duplicate:
            start = replace(site, name=copy_name(store.config, site.name))
        else:
            start = site
        self.start = start
        self.candidate: Site | None = None
        """The site as the form stands, if it is valid."""
        self.errors: dict[str, list[str]] = {}
        self.saving = False
        self._document: dict[str, Any] = store.document.unwrap()
        self._unsaved_key = f"site-editor-{id(self)}"

    @property
    def form(self) -> SiteForm:
        return self.query_one(SiteForm)

    def compose(self) -> ComposeResult:
        with Vertical(id="editor"):
            config = self.store.config
            yield SiteForm(
                self.start, id="site-form", default_issuer=config.tls.issuer, https_port=config.server.https_port
            )
            if self.note is not None:
                yield Static(self.note, id="editor-note")
            yield Static(id="editor-status")
            with Horizontal(id="editor-buttons"):
                yield Button(
                    "Save", variant="primary", id="save", compact=True, tooltip="Check, apply and write (ctrl+s)"
                )
                yield Button("Cancel", id="cancel", compact=True, tooltip="Close without saving (esc)")
        yield Footer()

    def on_mount(self) -> None:
        editor = self.query_one("#editor", Vertical)
        if self.original is not None:
            editor.border_title = Text.assemble("Edit site ", (self.original.name, "bold"))
        elif self.duplicate and self.source is not None:
            editor.border_title = Text.assemble("New site, a copy of ", (self.source.name, "bold"))
        elif self.prefilled:
            editor.border_title = Text("New site, filled in for you")
        else:
            editor.border_title = Text("New site")
        editor.border_subtitle = Text("ctrl+s save · esc close")
        # A copy clashes with its original (hosts): show that at once; so does a prefilled site.
        self.form.reveal = self.duplicate or self.prefilled
        self.form.inputs["name"].focus()
        self.call_after_refresh(self.validate)

    # --- validation ----------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether the form holds work that is not saved."""
        return self.duplicate or self.prefilled or self.form.raw() != self.form.initial

    @on(SiteForm.Changed)
    def _form_changed(self, _message: SiteForm.Changed) -> None:
        if not self.saving:
            self.validate()

    @on(ConfigEventArrived)
    def _config_changed(self, _message: ConfigEventArrived) -> None:
        # Another site may now clash with this one (or stop clashing).
        if not self.saving:
            self._document = self.store.document.unwrap()
            self.validate()

    def validate(self) -> bool:
        """Run the loader over the form; show its errors; True if the site is valid."""
        form = self.form
        raw = form.raw()
        original = self.original.name if self.original is not None else None
        warnings: list[str] = []
        site, errors = check_site(self._document, original, raw, warnings)
        form.show_warnings(warnings)
        for key, messages in form.local_problems().items():
            errors.setdefault(key, []).extend(messages)
        self.errors = errors
        self.candidate = None if errors else site
        form.note_touched(raw)
        general = form.show_errors(errors)
        self._show_status(general)
        self._note_unsaved(raw != form.initial or self.duplicate or self.prefilled, str(raw.get("name", "")))
        return self.candidate is not None

    def _show_status(self, general: list[str]) -> None:
        status = self.query_one("#editor-status", Static)
        count = sum(len(m) for m in self.errors.values())
        if count:
            line = Text(f"✗ {count} problem{'s' if count != 1 else ''} to fix before saving")
            if not self.form.reveal:
                line.append(" (each shows once its field is filled in)", style="dim")
            for message in general:
                line.append("\n" + message)
        elif self.dirty:
            line = Text("✓ Valid. Save applies it live and writes the config file.")
        else:
            line = Text("No changes.")
        status.update(line)
        status.set_class(bool(count) and (self.form.reveal or bool(self.form.touched)), "-invalid")
        status.set_class(not count and self.dirty, "-ready")

    def _note_unsaved(self, dirty: bool, name: str) -> None:
        if dirty:
            what = f'site "{name}"' if name else "a new site"
            self.services.unsaved[self._unsaved_key] = f"{what} in the site editor"
        else:
            self.services.unsaved.pop(self._unsaved_key, None)

    def on_unmount(self) -> None:
        self.services.unsaved.pop(self._unsaved_key, None)

    # --- actions -------------------------------------------------------------------------

    @on(Button.Pressed, "#save")
    def _save_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_close()

    def action_save(self) -> None:
        """Save if the form is valid; otherwise say why not and go to the first problem."""
        if self.saving:
            return
        self.form.reveal = True
        if not self.validate() or self.candidate is None:
            first = next((m for messages in self.errors.values() for m in messages), "the form is not valid")
            count = sum(len(m) for m in self.errors.values())
            more = f" (+{count - 1} more)" if count > 1 else ""
            self.notify(first + more, title="Not saved: fix the form first", severity="error", markup=False)
            self.form.focus_first_error()
            return
        if not self.dirty:
            self.notify("Nothing changed.", title="Sites", markup=False)
            self._leave(None)
            return
        self._save(self.candidate)

    @work(exclusive=True, group="site-editor-save")
    async def _save(self, site: Site) -> None:
        self.saving = True
        status = self.query_one("#editor-status", Static)
        status.update(Text("Saving…"))
        try:
            await asyncio.to_thread(save_site, self.store, self.original, site)
        except ConfigInvalid as e:
            self.saving = False
            self.notify(
                "\n".join(err.message for err in e.errors[:3]), title="Not saved", severity="error", markup=False
            )
            self._document = self.store.document.unwrap()
            self.validate()
        except Exception as e:  # the engine refused, the file could not be written, the site went away
            self.saving = False
            self.notify(f"{type(e).__name__}: {e}", title="Not saved", severity="error", markup=False)
            self.validate()
        else:
            self.notify(
                f'Site "{site.name}" saved: applied live and written to {self.store.path}',
                title="Saved",
                markup=False,
            )
            self._leave(site)

    def action_close(self) -> None:
        """Close; with unsaved changes, ask first."""
        if self.saving:
            return
        if not self.dirty:
            self._leave(None)
            return
        name = self.form.typed("name")
        what = f'your changes to "{name}"' if self.original is not None else f'the new site "{name}"'
        self.app.push_screen(
            ConfirmModal(
                f"Discard {what}?" if name else "Discard the new site?", confirm="Discard", cancel="Keep editing"
            ),
            self._discard_if,
        )

    def _discard_if(self, confirmed: bool | None) -> None:
        if confirmed:
            self._leave(None)

    def _leave(self, site: Site | None) -> None:
        self.services.unsaved.pop(self._unsaved_key, None)
        self.dismiss(site)
