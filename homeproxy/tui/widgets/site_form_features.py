"""The site form's second column: the Access (and rate limit), Authentication, Cache and Compression sections."""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Select, Static

from homeproxy.tui.widgets.form_parts import duration_text, rate_text, size_text
from homeproxy.tui.widgets.site_form_base import SiteFormBase
from homeproxy.tui.widgets.site_form_choices import AUTH_MODES


class FeatureFields(SiteFormBase):
    """The fields of the per-site features (access, rate limit, auth, cache, compression), one method per section."""

    def _access_fields(self) -> ComposeResult:
        """The Access section: allowed and denied networks, and the rate limit."""
        s = self.site
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

    def _auth_fields(self) -> ComposeResult:
        """The Authentication section: the mode, and the fields of each mode."""
        auth = self.site.auth
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

    def _cache_fields(self) -> ComposeResult:
        """The Cache section."""
        cache = self.site.cache
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

    def _compression_fields(self) -> ComposeResult:
        """The Compression section."""
        comp = self.site.compression
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
