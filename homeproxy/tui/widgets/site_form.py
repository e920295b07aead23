"""`SiteForm`: every per-site setting as a form, read back as the TOML table the loader takes.

The form does not validate anything itself. `raw()` gives the site as plain
TOML data (strings as typed: "30s", "8MiB", "20/s"), the editor runs the real
loader over it, and `show_errors` puts each of the loader's messages (keyed by
its key path inside the site, e.g. `cache.default_ttl` or `routes[1].path`)
under the field it belongs to. Fields the user has not touched keep their
errors to themselves until `reveal` (after a save attempt).

A switched-off feature (cache, compression, rate limit, auth, health checks,
passive health) is sent as off, without its options, but the inputs keep what
was typed while the form is open.
HTTPS follows the same rule for the certificate files; the hints under it (HSTS
on internal names, ACME for names it cannot issue) are the form's own, since
they are advice and not errors.

The parts: `site_form_base` (the state and the field builders), `site_form_fields`
and `site_form_features` (the two columns' sections), `site_form_read` (`raw()`),
`site_form_options` (options and hints that follow the switches), `site_form_errors`
(error placement) and `site_form_choices` (what the Selects offer). This module
joins them: the layout, the key bindings and the `Changed` message.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.message import Message
from textual.widgets import Checkbox, Input, Select

from homeproxy.tui.widgets.site_form_choices import (
    AUTH_MODES,
    BALANCE_CHOICES,
    ISSUER_CHOICES,
    PUBLISH_CHOICES,
    PUBLISH_VALUES,
    VERIFY_OFF_HINT,
)
from homeproxy.tui.widgets.site_form_errors import SiteFormErrors
from homeproxy.tui.widgets.site_form_features import FeatureFields
from homeproxy.tui.widgets.site_form_fields import SiteFields
from homeproxy.tui.widgets.site_form_options import SiteFormOptions
from homeproxy.tui.widgets.site_form_read import FORM_KEYS, SiteFormReading
from homeproxy.tui.widgets.site_form_rows import RowList
from homeproxy.tui.widgets.user_list import UserList

__all__ = [
    "AUTH_MODES",
    "BALANCE_CHOICES",
    "FORM_KEYS",
    "ISSUER_CHOICES",
    "PUBLISH_CHOICES",
    "PUBLISH_VALUES",
    "TWO_COLUMNS",
    "VERIFY_OFF_HINT",
    "SiteForm",
]

#: Wider than this, the form shows two columns.
TWO_COLUMNS = 100


class SiteForm(SiteFormErrors, SiteFormReading, SiteFormOptions, SiteFields, FeatureFields, can_focus=False):
    """Every setting of one site; posts `Changed` on any edit.

    Tab and shift+tab are priority bindings here. Textual resolves an ordinary binding
    (the screen's tab) only once the key has bubbled from the focused input up through
    every ancestor's message queue, while the app keeps handing the keys after it to the
    input that still has the focus: typed in one burst (a fast typist, tmux send-keys),
    "plex<tab>plex.lan" all landed in the first field, and the as-you-type check, which
    runs on the screen's queue, made the window wide enough to hit at human speed. A
    priority binding moves the focus as the app receives the key, before the next one.
    """

    DEFAULT_CSS = """
    SiteForm {
        height: 1fr;
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    SiteForm #form-columns {
        height: auto;
        layout: vertical;
    }
    SiteForm.-wide #form-columns {
        layout: horizontal;
    }
    SiteForm .form-column {
        height: auto;
    }
    SiteForm.-wide .form-column {
        width: 1fr;
    }
    SiteForm.-wide #form-column-2 {
        margin-left: 3;
    }
    SiteForm .section {
        text-style: bold;
        color: $text-accent;
        margin-top: 1;
    }
    SiteForm #form-column-1 > .section.-first, SiteForm.-wide .form-column > .section.-first {
        margin-top: 0;
    }
    SiteForm .options {
        height: auto;
    }
    SiteForm .options > Field > .field-label {
        padding-left: 2;
    }
    SiteForm Input.-textual-compact:focus, SiteForm Select.-textual-compact:focus > SelectCurrent {
        background: $boost;
    }
    SiteForm .field-hint {
        display: none;
        height: auto;
        margin-left: 18;
        color: $text-warning;
    }
    SiteForm .field-hint.-visible {
        display: block;
    }
    """

    BINDINGS = [
        Binding(
            "tab",
            "app.focus_next",
            "Next field",
            id="site-form.next",
            tooltip="Go to the next field (also right after typing fast)",
            show=False,
            priority=True,
        ),
        Binding(
            "shift+tab",
            "app.focus_previous",
            "Previous field",
            id="site-form.previous",
            tooltip="Go to the previous field",
            show=False,
            priority=True,
        ),
    ]

    class Changed(Message):
        """Something in the form was edited."""

        def __init__(self, form: SiteForm) -> None:
            super().__init__()
            self.form = form

        @property
        def control(self) -> SiteForm:
            return self.form

        def can_replace(self, message: Message) -> bool:
            # A burst of keystrokes is checked once: only the latest state of the form matters.
            return isinstance(message, SiteForm.Changed) and message.form is self.form

    def compose(self) -> ComposeResult:
        with Horizontal(id="form-columns"):
            with Vertical(classes="form-column", id="form-column-1"):
                yield from self._site_fields()
                yield from self._balance_fields()
                yield from self._tls_fields()
                yield from self._route_fields()
                yield from self._header_fields()
            with Vertical(classes="form-column", id="form-column-2"):
                yield from self._access_fields()
                yield from self._auth_fields()
                yield from self._cache_fields()
                yield from self._compression_fields()

    def on_mount(self) -> None:
        self.initial = self.raw()
        self._sync_options()

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width > TWO_COLUMNS, "-wide")

    # --- reacting ------------------------------------------------------------------------

    @on(Input.Changed)
    @on(Checkbox.Changed)
    @on(RowList.Changed)
    @on(UserList.Changed)
    def _edited(self, event: Message) -> None:
        # Translated into one `Changed` (which coalesces): the screen sees only that.
        event.stop()
        self._sync_options()
        self.post_message(self.Changed(self))

    @on(Select.Changed, "#auth-mode")
    def _mode_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.auth_mode = str(event.value)
        self._sync_options()
        self.post_message(self.Changed(self))

    @on(Select.Changed, "#issuer")
    def _issuer_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.issuer_choice = str(event.value)
        self._sync_options()
        self.post_message(self.Changed(self))

    @on(Select.Changed, "#balance")
    def _balance_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.balance = str(event.value)
        self.post_message(self.Changed(self))

    @on(Select.Changed, "#publish")
    def _publish_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.publish_choice = str(event.value)
        self.post_message(self.Changed(self))
