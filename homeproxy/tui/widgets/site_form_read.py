"""Reading the site form back: `raw()`, the site as the TOML table the loader takes, and the keys it may write."""

from __future__ import annotations

import re
from typing import Any

from homeproxy.tui.widgets.form_parts import number
from homeproxy.tui.widgets.site_form_base import SiteFormBase
from homeproxy.tui.widgets.site_form_choices import PUBLISH_VALUES
from homeproxy.tui.widgets.site_form_rows import split_list

FORM_KEYS = frozenset(
    {
        "name", "hosts", "upstreams", "routes", "verify_upstream", "enabled", "websockets", "preserve_host",
        "connect_timeout", "read_timeout", "allow", "deny", "headers", "publish", "tls", "redirect_to_https",
        "issuer", "cert", "key", "rate_limit", "auth", "cache", "compression", "balance", "health",
        "passive_health", "retries", "retry_idempotent", "retry_deadline", "header_timeout",
    }
)  # fmt: skip
"""The site keys `SiteForm.raw()` may write (a key it leaves out means its default); the editor
keeps every other key of the site as the file has it."""


def integer(text: str) -> int | str:
    """A whole number as an int, negative too (the loader says what range it takes), else as typed."""
    return int(text) if re.fullmatch(r"-?[0-9]+", text) else text


class SiteFormReading(SiteFormBase):
    """`raw()`: the form as plain TOML data, strings as typed."""

    def raw(self) -> dict[str, Any]:
        """The site as TOML data, as typed (the loader converts and checks it)."""
        text, on = self.typed, self.is_on
        raw: dict[str, Any] = {
            "name": text("name"),
            "hosts": split_list(text("hosts")),
            "upstreams": self.upstreams.values(),
            "routes": self.routes.values(),
            "balance": self.balance,
            "verify_upstream": on("verify_upstream"),
            "enabled": on("enabled"),
            "websockets": on("websockets"),
            "preserve_host": on("preserve_host"),
            "connect_timeout": text("connect_timeout"),
            "read_timeout": text("read_timeout"),
            "allow": split_list(text("allow")),
            "deny": split_list(text("deny")),
            "headers": {
                "security": on("headers.security"),
                "request": {
                    "set": self.request_headers.values(),
                    "remove": split_list(text("headers.request.remove")),
                },
                "response": {
                    "set": self.response_headers.values(),
                    "remove": split_list(text("headers.response.remove")),
                },
            },
        }
        raw["health"] = (
            {
                "path": text("health.path"),
                "interval": text("health.interval"),
                "timeout": text("health.timeout"),
                "status": text("health.status"),
                "body": text("health.body"),
                "fails": number(text("health.fails")),
                "passes": number(text("health.passes")),
            }
            if on("health")
            else False
        )
        raw["passive_health"] = (
            {
                "fails": integer(text("passive_health.fails")),
                "window": text("passive_health.window"),
                "cooldown": text("passive_health.cooldown"),
                "status_5xx": on("passive_health.status_5xx"),
            }
            if on("passive_health")
            else False
        )
        raw["retries"] = integer(text("retries"))
        raw["retry_deadline"] = text("retry_deadline")
        raw["retry_idempotent"] = on("retry_idempotent")
        if header_timeout := text("header_timeout"):  # blank: unset, as long as read_timeout
            raw["header_timeout"] = header_timeout
        if (publish := PUBLISH_VALUES[self.publish_choice]) is not None:
            raw["publish"] = publish
        raw["tls"] = on("tls")
        raw["redirect_to_https"] = on("redirect_to_https")
        if self.issuer_choice in ("internal", "acme"):
            raw["issuer"] = self.issuer_choice
        elif self.issuer_choice == "files" and on("tls"):
            # The files mean nothing without TLS (the loader says so): an off switch sends none.
            raw["cert"], raw["key"] = text("cert"), text("key")
        if on("rate_limit"):
            limit: dict[str, Any] = {"rate": text("rate_limit.rate")}
            if burst := text("rate_limit.burst"):
                limit["burst"] = number(burst)
            raw["rate_limit"] = limit
        mode = self.auth_mode
        if mode != "off":
            auth: dict[str, Any] = {"mode": mode, "bypass": split_list(text("auth.bypass"))}
            if mode in ("basic", "login"):
                if self.users.users:  # none: the loader says that this mode needs users
                    auth["users"] = dict(self.users.users)
                auth["realm"] = text("auth.realm")
            if mode == "basic":
                auth["pass_authorization"] = on("auth.pass_authorization")
            if mode == "login":
                auth["cookie_domain"] = text("auth.cookie_domain")
                auth["session_ttl"] = text("auth.session_ttl")
            if mode == "forward":
                auth["forward"] = text("auth.forward")
                auth["forward_headers"] = split_list(text("auth.forward_headers"))
            raw["auth"] = auth
        raw["cache"] = (
            {
                "enabled": True,
                "default_ttl": text("cache.default_ttl"),
                "max_entry_bytes": text("cache.max_entry_bytes"),
                "max_bytes": text("cache.max_bytes"),
                "stale_on_error": text("cache.stale_on_error"),
                "cookies": on("cache.cookies"),
            }
            if on("cache")
            else False
        )
        raw["compression"] = (
            {
                "enabled": True,
                "min_bytes": number(text("compression.min_bytes")),
                "types": split_list(text("compression.types")),
                "algorithms": split_list(text("compression.algorithms")),
            }
            if on("compression")
            else False
        )
        return raw
