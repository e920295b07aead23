"""`SiteForm`: every per-site setting as a form, read back as the TOML table the loader takes.

The form does not validate anything itself. `raw()` gives the site as plain
TOML data (strings as typed: "30s", "8MiB", "20/s"), the editor runs the real
loader over it, and `show_errors` puts each of the loader's messages (keyed by
its key path inside the site, e.g. `cache.default_ttl` or `routes[1].path`)
under the field it belongs to. Fields the user has not touched keep their
errors to themselves until `reveal` (after a save attempt).

A switched-off feature (cache, compression, rate limit, auth) is sent as off,
without its options, but the inputs keep what was typed while the form is open.
HTTPS follows the same rule for the certificate files; the hints under it (HSTS
on internal names, ACME for names it cannot issue) are the form's own, since
they are advice and not errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Select, Static

from homeproxy.config import Site
from homeproxy.config.model import BALANCE_POLICIES, HealthCheck
from homeproxy.tui.widgets.form_parts import (
    Field,
    acme_hint,
    control_id,
    dig,
    duration_text,
    hsts_hint,
    number,
    rate_text,
    size_text,
)
from homeproxy.tui.widgets.site_form_rows import (
    HeaderList,
    ListRow,
    RouteList,
    RowList,
    focus_first,
    split_list,
)
from homeproxy.tui.widgets.upstream_list import UpstreamList
from homeproxy.tui.widgets.user_list import UserList

#: Wider than this, the form shows two columns.
TWO_COLUMNS = 100

#: The three states of a site's `publish` (None: as `[discovery] publish_hostnames` says).
PUBLISH_CHOICES: tuple[tuple[Text, str], ...] = (
    (Text("as the discovery settings say"), "default"),
    (Text("announce them"), "on"),
    (Text("do not announce them"), "off"),
)
PUBLISH_VALUES: dict[str, bool | None] = {"default": None, "on": True, "off": False}

#: Under "Verify upstream" when it is off and an upstream speaks TLS.
VERIFY_OFF_HINT = "⚠ not checked: right for self-signed gear on your LAN, not for servers across the internet"

#: Where a TLS site's certificate comes from; "default" is `[tls] issuer` (its label says which).
ISSUER_CHOICES = (
    ("homeproxy's local CA", "internal"),
    ("ACME (Let's Encrypt or another CA)", "acme"),
    ("my own certificate files", "files"),
)

#: How a request picks one of several upstreams (`balance`), as the Select offers them.
BALANCE_CHOICES: tuple[tuple[str, str], ...] = (
    ("round robin: each in turn", "round_robin"),
    ("weighted: by their weight", "weighted"),
    ("least busy: fewest requests now", "least_conn"),
    ("client IP: the same one per client", "ip_hash"),
    ("cookie: the same one per browser", "cookie"),
    ("first: failover in the listed order", "first"),
    ("random two: the less busy of two", "random_two"),
)
assert tuple(v for _, v in BALANCE_CHOICES) == BALANCE_POLICIES

AUTH_MODES = (
    ("off", "off"),
    ("Basic auth", "basic"),
    ("login page", "login"),
    ("forward auth service", "forward"),
)


FORM_KEYS = frozenset(
    {
        "name", "hosts", "upstreams", "routes", "verify_upstream", "enabled", "websockets", "preserve_host",
        "connect_timeout", "read_timeout", "allow", "deny", "headers", "publish", "tls", "redirect_to_https",
        "issuer", "cert", "key", "rate_limit", "auth", "cache", "compression", "balance", "health",
    }
)  # fmt: skip
"""The site keys `SiteForm.raw()` may write (a key it leaves out means its default); the editor
keeps every other key of the site as the file has it."""


class SiteForm(VerticalScroll, can_focus=False):
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

    def compose(self) -> ComposeResult:
        s = self.site
        auth, cache, comp, headers = s.auth, s.cache, s.compression, s.headers
        with Horizontal(id="form-columns"):
            with Vertical(classes="form-column", id="form-column-1"):
                yield Static("Site", classes="section -first")
                yield self._input("name", "Name", s.name, "plex", "Unique name, shown here and in the access log")
                yield self._input(
                    "hosts",
                    "Hosts",
                    ", ".join(s.hosts),
                    "plex.home.arpa, *.plex.lan",
                    "Host names this site answers, separated by commas or spaces (*.x.lan for subdomains)",
                )
                yield self._field("upstreams", "Upstreams", self.upstreams, classes="-bare")
                yield self._check(
                    "verify_upstream",
                    "Verify upstream",
                    "check HTTPS certificates",
                    s.verify_upstream,
                    "Check https upstreams' certificates. Turn off for LAN gear with a self-signed certificate "
                    "(a NAS, a printer, a Hue bridge); the connection is still encrypted",
                )
                yield Static(VERIFY_OFF_HINT, id="verify-upstream-hint", classes="field-hint", markup=False)
                publish: Select[str] = Select(
                    PUBLISH_CHOICES,
                    value=self.publish_choice,
                    allow_blank=False,
                    id="publish",
                    compact=True,
                    tooltip=Text(
                        "Announce this site's .local host names over mDNS, so devices on the LAN find them "
                        "without DNS set-up (default: as publish_hostnames in the discovery settings says)"
                    ),
                )
                yield self._field("publish", "Publish .local", publish)
                yield self._check(
                    "enabled", "Enabled", "serve this site", s.enabled, "A disabled site's hosts get the 404 page"
                )
                yield self._check(
                    "websockets",
                    "WebSockets",
                    "proxy upgrades",
                    s.websockets,
                    "Proxy WebSocket upgrades (Home Assistant, Plex and others need this)",
                )
                yield self._check(
                    "preserve_host",
                    "Preserve Host",
                    "send the client's Host upstream",
                    s.preserve_host,
                    "Off: send the upstream's own host name instead",
                )
                yield self._input(
                    "connect_timeout",
                    "Connect timeout",
                    duration_text(s.connect_timeout),
                    "5s",
                    "Wait this long for a TCP connection to an upstream (then 504)",
                )
                yield self._input(
                    "read_timeout",
                    "Read timeout",
                    duration_text(s.read_timeout),
                    "60s",
                    "Wait this long for upstream data, between reads (then 504)",
                )
                yield from self._balance_fields()
                yield from self._tls_fields()
                yield Static("Routes", classes="section")
                yield self._field("routes", "Path routes", self.routes, classes="-bare")
                yield Static("Headers", classes="section")
                yield self._check(
                    "headers.security",
                    "Security headers",
                    "nosniff, frame, referrer, HSTS",
                    headers.security,
                    "Add X-Content-Type-Options, X-Frame-Options and Referrer-Policy if absent, and "
                    "Strict-Transport-Security (HSTS) on HTTPS responses",
                )
                yield Static(id="hsts-hint", classes="field-hint", markup=False)
                yield self._field("headers.request.set", "Request: set", self.request_headers)
                yield self._input(
                    "headers.request.remove",
                    "Request: remove",
                    ", ".join(headers.request_remove),
                    "X-Forwarded-Server",
                    "Request headers removed before the upstream sees them",
                )
                yield self._field("headers.response.set", "Response: set", self.response_headers)
                yield self._input(
                    "headers.response.remove",
                    "Response: remove",
                    ", ".join(headers.response_remove),
                    "Server, X-Powered-By",
                    "Response headers removed before the client sees them",
                )
            with Vertical(classes="form-column", id="form-column-2"):
                yield Static("Access", classes="section -first")
                yield self._input(
                    "allow",
                    "Allow only",
                    ", ".join(s.allow),
                    "192.168.0.0/16, fd00::/8",
                    "If set, only clients in these networks are served; others get 403",
                )
                yield self._input(
                    "deny",
                    "Deny",
                    ", ".join(s.deny),
                    "192.168.1.66/32",
                    "Clients in these networks get 403 (checked first)",
                )
                rl = s.rate_limit
                yield self._check(
                    "rate_limit",
                    "Rate limit",
                    "limit each client IP",
                    rl is not None,
                    "A token bucket per client IP; over the limit: 429",
                )
                with Vertical(classes="options", id="rate-limit-options"):
                    yield self._input(
                        "rate_limit.rate",
                        "Rate",
                        rate_text(rl.rate) if rl else "20/s",
                        "20/s",
                        'Requests allowed on average: "20/s", "600/m" or "1000/h"',
                    )
                    yield self._input(
                        "rate_limit.burst",
                        "Burst",
                        str(rl.burst) if rl and rl.burst != max(1, math.ceil(rl.rate)) else "",
                        "as the rate",
                        "How many requests may come at once before the rate applies (blank: the rate per second)",
                    )
                yield Static("Authentication", classes="section")
                mode_select: Select[str] = Select(
                    AUTH_MODES,
                    value=self.auth_mode,
                    allow_blank=False,
                    id="auth-mode",
                    compact=True,
                    tooltip="Basic auth, a login page, or ask a forward-auth service (Authelia, ...)",
                )
                yield self._field("auth.mode", "Mode", mode_select)
                yield self._field("auth.users", "Users", self.users, classes="auth-field auth-basic auth-login")
                yield self._input(
                    "auth.realm",
                    "Realm",
                    auth.realm,
                    "homeproxy",
                    "The name the browser's password prompt (or the login page) shows",
                    classes="auth-field auth-basic auth-login",
                )
                yield self._check(
                    "auth.pass_authorization",
                    "Authorization",
                    "pass it upstream",
                    auth.pass_authorization,
                    "Forward the client's Authorization header after Basic auth (off: it is removed)",
                    classes="auth-field auth-basic",
                )
                yield self._input(
                    "auth.forward",
                    "Auth service",
                    auth.forward,
                    "http://authelia:9091/api/verify",
                    "The service asked about every request; its 2xx lets it through",
                    classes="auth-field auth-forward",
                )
                yield self._input(
                    "auth.forward_headers",
                    "Copy headers",
                    ", ".join(auth.forward_headers),
                    "Remote-User, Remote-Groups",
                    "Headers copied from the auth service's answer onto the request upstream",
                    classes="auth-field auth-forward",
                )
                yield self._input(
                    "auth.cookie_domain",
                    "Cookie domain",
                    auth.cookie_domain,
                    "home.arpa (blank: this host only)",
                    "The parent domain the session cookie covers: one login for all its sites",
                    classes="auth-field auth-login",
                )
                yield self._input(
                    "auth.session_ttl",
                    "Session length",
                    duration_text(auth.session_ttl),
                    "7d",
                    "How long a login lasts",
                    classes="auth-field auth-login",
                )
                yield self._input(
                    "auth.bypass",
                    "No login from",
                    ", ".join(auth.bypass),
                    "192.168.0.0/16",
                    "Networks whose clients need no login (the LAN)",
                    classes="auth-field auth-basic auth-login auth-forward",
                )
                yield Static("Cache", classes="section")
                yield self._check(
                    "cache",
                    "Cache",
                    "store cacheable responses",
                    cache.enabled,
                    "HTTP caching (RFC 9111) in homeproxy's shared memory cache",
                )
                with Vertical(classes="options", id="cache-options"):
                    yield self._input(
                        "cache.default_ttl",
                        "Default TTL",
                        duration_text(cache.default_ttl),
                        "0",
                        "Freshness for responses with a validator but no lifetime (0: revalidate every time)",
                    )
                    yield self._input(
                        "cache.max_entry_bytes",
                        "Max entry",
                        size_text(cache.max_entry_bytes),
                        "8MiB",
                        "Larger responses stream through uncached",
                    )
                    yield self._input(
                        "cache.max_bytes",
                        "Site's share",
                        size_text(cache.max_bytes),
                        "64MiB",
                        "The most this site may hold in the shared cache",
                    )
                    yield self._input(
                        "cache.stale_on_error",
                        "Stale on error",
                        duration_text(cache.stale_on_error),
                        "0",
                        "Serve a stale entry this long past its freshness when the upstream fails",
                    )
                    yield self._check(
                        "cache.cookies",
                        "Cookies",
                        "also store Set-Cookie responses",
                        cache.cookies,
                        "Off: responses that set cookies are never stored",
                    )
                yield Static("Compression", classes="section")
                yield self._check(
                    "compression",
                    "Compression",
                    "compress responses",
                    comp.enabled,
                    "Compress responses for clients that accept it (br, zstd, gzip)",
                )
                with Vertical(classes="options", id="compression-options"):
                    yield self._input(
                        "compression.min_bytes",
                        "Min size",
                        str(comp.min_bytes),
                        "1024",
                        "Smaller responses (of known length) are sent as they are, in bytes",
                    )
                    yield self._input(
                        "compression.types",
                        "Types",
                        ", ".join(comp.types),
                        "text/*, application/json",
                        "Media types to compress (type/* and type/*+suffix patterns allowed)",
                    )
                    yield self._input(
                        "compression.algorithms",
                        "Codings",
                        " ".join(comp.algorithms),
                        "br zstd gzip",
                        "Codings homeproxy may use, in order of preference",
                    )

    def _balance_fields(self) -> ComposeResult:
        health = self.site.health or HealthCheck()
        yield Static("Balancing and health", classes="section")
        balance: Select[str] = Select(
            ((Text(label), value) for label, value in BALANCE_CHOICES),
            value=self.balance,
            allow_blank=False,
            id="balance",
            compact=True,
            tooltip=Text(
                "How a request picks one of several upstreams; whatever the policy, upstreams that are down "
                "are skipped and one that refuses the connection hands the request to the next"
            ),
        )
        yield self._field("balance", "Balance", balance)
        yield self._check(
            "health",
            "Health checks",
            "ask each upstream regularly",
            self.site.health is not None,
            "Active checks: an upstream that fails them in a row is taken out until it passes again "
            "(failing requests take one out for a while even without them)",
        )
        low, high = health.status
        with Vertical(classes="options", id="health-options"):
            yield self._input("health.path", "Path", health.path, "/healthz", "The path asked for (GET)")
            yield self._input(
                "health.interval", "Every", duration_text(health.interval), "10s", "Time between two checks"
            )
            yield self._input(
                "health.timeout", "Timeout", duration_text(health.timeout), "5s", "A slower answer fails the check"
            )
            yield self._input(
                "health.status",
                "Status",
                str(low) if low == high else f"{low}-{high}",
                "200-399",
                "The status codes that pass: one (204) or a range (200-399)",
            )
            yield self._input(
                "health.body", "Body contains", health.body, "(anything)", "If set, the answer must contain this text"
            )
            yield self._input(
                "health.fails", "Down after", str(health.fails), "3", "Failing checks in a row that take it out"
            )
            yield self._input(
                "health.passes", "Up after", str(health.passes), "2", "Passing checks in a row that bring it back"
            )

    def _tls_fields(self) -> ComposeResult:
        s = self.site
        yield Static("HTTPS", classes="section")
        yield self._check(
            "tls",
            "TLS",
            f"serve over HTTPS on port {self.https_port}",
            s.tls,
            "Serve this site over HTTPS with a certificate for all its hosts (the one HTTPS port; "
            "each site's certificate is chosen by the name the browser asks for)",
        )
        with Vertical(classes="options", id="tls-options"):
            default = ISSUER_CHOICES[[v for _, v in ISSUER_CHOICES].index(self.default_issuer)][0]
            choices = ((Text(f"as [tls] says: {default}"), "default"), *((Text(t), v) for t, v in ISSUER_CHOICES))
            issuer: Select[str] = Select(
                choices,
                value=self.issuer_choice,
                allow_blank=False,
                id="issuer",
                compact=True,
                tooltip=Text(
                    "Where the certificate comes from: homeproxy's local CA (devices trust its root once), "
                    "ACME (Let's Encrypt: public names, port 80 forwarded here), or your own PEM files"
                ),
            )
            yield self._field("issuer", "Certificate", issuer)
            yield Static(id="issuer-hint", classes="field-hint", markup=False)
            yield self._input(
                "cert",
                "Cert file",
                s.cert,
                "/etc/letsencrypt/live/ha/fullchain.pem",
                "PEM with the chain, leaf first (absolute path); reloaded when it changes",
                classes="tls-files",
            )
            yield self._input(
                "key",
                "Key file",
                s.key,
                "/etc/letsencrypt/live/ha/privkey.pem",
                "The certificate's private key, PEM (absolute path; keep it readable only by homeproxy)",
                classes="tls-files",
            )
            yield Static(id="cert-hint", classes="field-hint", markup=False)
            yield self._check(
                "redirect_to_https",
                "Plain HTTP",
                "redirect to HTTPS (308)",
                s.redirect_to_https,
                "Answer http:// requests with a redirect to the same URL on HTTPS "
                "(ACME challenges and the root certificate download are exempt)",
            )

    def on_mount(self) -> None:
        self.initial = self.raw()
        self._sync_options()

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width > TWO_COLUMNS, "-wide")

    # --- reading -------------------------------------------------------------------------

    def typed(self, key: str) -> str:
        return self.inputs[key].value.strip()

    def is_on(self, key: str) -> bool:
        return self.checks[key].value

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

    def local_problems(self) -> dict[str, list[str]]:
        """What the loader cannot see: a user typed but not added."""
        pending = self.users.pending if self.auth_mode in ("basic", "login") else ""
        return {"auth.users": [pending]} if pending else {}

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

    def note_touched(self, raw: Mapping[str, Any]) -> None:
        """Remember the keys whose value now differs from the start."""
        for key in self.fields:
            if dig(raw, key) != dig(self.initial, key):
                self.touched.add(key)

    # --- errors --------------------------------------------------------------------------

    def _target(self, key: str) -> str | None:
        """The field that shows an error about `key`."""
        if key == "auth":
            # "basic auth needs at least one user", "forward auth needs forward = ..."
            return {"basic": "auth.users", "login": "auth.users", "forward": "auth.forward"}.get(
                self.auth_mode, "auth.mode"
            )
        if key == "rate_limit":
            return "rate_limit.rate"
        best: str | None = None
        for k in self.fields:
            if (key == k or key.startswith((k + ".", k + "["))) and (best is None or len(k) > len(best)):
                best = k
        return best

    def show_errors(self, errors: Mapping[str, Sequence[str]]) -> list[str]:
        """Put each error under its field (if touched, or `reveal`); return those that have no field."""
        placed: dict[str, list[str]] = {}
        route_rows: dict[int, list[str]] = {}
        unplaced: list[str] = []
        for key, messages in errors.items():
            if m := re.fullmatch(r"routes\[(\d+)\](?:\.(\w+))?", key):
                sub = f"{m.group(2)}: " if m.group(2) else ""
                route_rows.setdefault(int(m.group(1)), []).extend(sub + msg for msg in messages)
                continue
            if key == "health":  # one converter for the table: "interval: expected a duration ..."
                for msg in messages:
                    sub, _, rest = msg.partition(": ")
                    option = f"health.{sub}"
                    if option in self.fields:
                        placed.setdefault(option, []).append(rest)
                    else:
                        placed.setdefault("health", []).append(msg)
                continue
            target = self._target(key) if key else None
            if target is None:
                unplaced.extend(f"{key}: {msg}" if key else msg for msg in messages)
            else:
                placed.setdefault(target, []).extend(messages)
        for key, field in self.fields.items():
            field.show_errors(placed.get(key, []) if self.reveal or key in self.touched else [])
        self.upstreams.show_problems(self.fields["upstreams"].error_line.messages.splitlines())
        self.routes.show_errors(route_rows if self.reveal or "routes" in self.touched else {})
        return unplaced

    def focus_first_error(self) -> bool:
        """Focus the first field (or route row) that shows an error."""
        for widget in self.query(".-invalid"):
            if isinstance(widget, (Field, ListRow)):
                target = widget.control if isinstance(widget, Field) else widget
                if target is self.upstreams and self.upstreams.focus_invalid():
                    widget.scroll_visible()
                    return True
                if focus_first(target):
                    widget.scroll_visible()
                    return True
        return False

    def error_text(self) -> str:
        """Every error the form shows, one per line (for tests and the status line)."""
        lines = [f.error_line.messages for f in self.fields.values() if f.error_line.messages]
        lines += [row.error_line.messages for row in self.routes.rows if row.error_line.messages]
        return "\n".join(lines)
