"""`SiteFormBase`: the site form's state (the site, its controls by key, what was touched) and its field builders."""

from __future__ import annotations

from typing import Any

from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Checkbox, Input

from homeproxy.config import Site
from homeproxy.tui.widgets.form_parts import Field, control_id
from homeproxy.tui.widgets.site_form_rows import HeaderList, RouteList
from homeproxy.tui.widgets.upstream_list import UpstreamList
from homeproxy.tui.widgets.user_list import UserList


class SiteFormBase(VerticalScroll, can_focus=False):
    """What every part of `SiteForm` shares: the state and the helpers that build and read a field."""

    def __init__(
        self, site: Site, *, id: str | None = None, default_issuer: str = "internal", https_port: int = 8443
    ) -> None:
        super().__init__(id=id)
        self.site = site
        """The site the form started from."""
        self.default_issuer = default_issuer
        """`[tls] issuer`: what "default" means in the certificate choice."""
        self.https_port = https_port
        self.issuer_choice = "files" if site.uses_own_cert else (site.issuer or "default")
        """The certificate Select's value: "default", "internal", "acme" or "files"."""
        self._hints: dict[str, str] = {}
        self.fields: dict[str, Field] = {}
        self.inputs: dict[str, Input] = {}
        self.checks: dict[str, Checkbox] = {}
        self.auth_mode = site.auth.mode or "off"
        self.publish_choice = {None: "default", True: "on", False: "off"}[site.publish]
        """The `publish` Select's value: "default", "on" or "off"."""
        self.upstreams = UpstreamList(site.upstreams, id="upstreams")
        self.balance = site.balance
        """The `balance` Select's value."""
        self.routes = RouteList(site.routes, id="routes")
        self.request_headers = HeaderList(site.headers.request_set, id="headers-request-set")
        self.response_headers = HeaderList(site.headers.response_set, id="headers-response-set")
        self.users = UserList(site.auth.users, id="auth-users")
        self.initial: dict[str, Any] = {}
        """`raw()` as the form started."""
        self.touched: set[str] = set()
        """Keys whose value has differed from the start at some point."""
        self.reveal = False
        """Show every error, touched or not (set after a save attempt)."""

    # --- building ------------------------------------------------------------------------

    def _field(self, key: str, label: str, control: Widget, classes: str | None = None) -> Field:
        field = Field(key, label, control, classes=classes)
        self.fields[key] = field
        return field

    def _input(
        self, key: str, label: str, value: str, placeholder: str, tooltip: str, classes: str | None = None
    ) -> Field:
        control = Input(value, placeholder=placeholder, id=control_id(key), compact=True, tooltip=tooltip)
        self.inputs[key] = control
        return self._field(key, label, control, classes)

    def _check(self, key: str, label: str, text: str, value: bool, tooltip: str, classes: str | None = None) -> Field:
        control = Checkbox(text, value, id=control_id(key), compact=True, tooltip=tooltip)
        self.checks[key] = control
        return self._field(key, label, control, classes)

    # --- reading a field -----------------------------------------------------------------

    def typed(self, key: str) -> str:
        """What the input `key` holds, stripped."""
        return self.inputs[key].value.strip()

    def is_on(self, key: str) -> bool:
        """Whether the checkbox `key` is ticked."""
        return self.checks[key].value
