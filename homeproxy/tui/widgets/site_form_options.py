"""The site form's option syncing: which options and auth fields show for what is switched on, and the hints."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from homeproxy.tui.widgets.form_parts import acme_hint, hsts_hint
from homeproxy.tui.widgets.site_form_base import SiteFormBase
from homeproxy.tui.widgets.site_form_rows import split_list


class SiteFormOptions(SiteFormBase):
    """Shows the options of what is switched on and the form's own advice (HSTS, ACME, verify upstream)."""

    def _speaks_tls(self) -> bool:
        """Whether an upstream (of the site or a route) is https or mdns:// (which may be https)."""
        upstreams = self.upstreams.urls()
        for route in self.routes.values():
            upstreams += [u if isinstance(u, str) else u["url"] for u in route["upstreams"]]
        return any(u.lower().startswith(("https://", "mdns://")) for u in upstreams)

    def _sync_options(self) -> None:
        """Show the options of what is switched on, the auth fields of the mode, and the TLS hint."""
        hint = not self.is_on("verify_upstream") and self._speaks_tls()
        self.query_one("#verify-upstream-hint").set_class(hint, "-visible")
        self.query_one("#rate-limit-options").display = self.is_on("rate_limit")
        self.query_one("#cache-options").display = self.is_on("cache")
        self.query_one("#compression-options").display = self.is_on("compression")
        self.query_one("#health-options").display = self.is_on("health")
        self.query_one("#passive-health-options").display = self.is_on("passive_health")
        for field in self.query(".auth-field"):
            field.display = field.has_class(f"auth-{self.auth_mode}")
        tls = self.is_on("tls")
        self.query_one("#tls-options").display = tls
        for field in self.query(".tls-files"):
            field.display = self.issuer_choice == "files"
        hosts = split_list(self.typed("hosts"))
        issuer = self.default_issuer if self.issuer_choice == "default" else self.issuer_choice
        self._hint("#issuer-hint", acme_hint(hosts) if tls and issuer == "acme" else "")
        self._hint("#hsts-hint", hsts_hint(hosts) if tls and self.is_on("headers.security") else "")

    def _hint(self, selector: str, text: str) -> None:
        """Show `text` under a field (hidden when "")."""
        if self._hints.get(selector) != text:  # every keystroke re-checks: touch only what changed
            self._hints[selector] = text
            hint = self.query_one(selector, Static)
            hint.update(Text(text))
            hint.set_class(bool(text), "-visible")

    def hint_text(self, name: str) -> str:
        """What the hint `#<name>` says now ("" when hidden)."""
        return self._hints.get(f"#{name}", "")

    def show_warnings(self, warnings: Sequence[str]) -> None:
        """The loader's warnings (a host the certificate files do not cover) under the key file."""
        self._hint("#cert-hint", "\n".join("⚠ " + w for w in warnings) if self.is_on("tls") else "")
