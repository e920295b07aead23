"""The site form's first column: the Site, Balancing and health, HTTPS, Routes and Headers sections."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Select, Static

from homeproxy.config.model import HealthCheck
from homeproxy.tui.widgets.form_parts import duration_text
from homeproxy.tui.widgets.site_form_base import SiteFormBase
from homeproxy.tui.widgets.site_form_choices import BALANCE_CHOICES, ISSUER_CHOICES, PUBLISH_CHOICES, VERIFY_OFF_HINT


class SiteFields(SiteFormBase):
    """The fields of how the site is reached and proxied, one method per section."""

    def _site_fields(self) -> ComposeResult:
        """The Site section: name, hosts, upstreams, publishing, switches and timeouts."""
        s = self.site
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

    def _balance_fields(self) -> ComposeResult:
        """The Balancing and health section: the balance policy, health checks (active and passive) and retries."""
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
        yield from self._passive_fields()
        yield from self._retry_fields()

    def _passive_fields(self) -> ComposeResult:
        """Passive health: failing requests take an upstream out for a cool-down (on by default)."""
        passive = self.site.passive_health
        yield self._check(
            "passive_health",
            "Passive health",
            "take failing upstreams out",
            passive.enabled,
            "Requests that fail (refused, reset, timed out) count against their upstream: "
            "enough of them within the window take it out for the cool-down",
        )
        with Vertical(classes="options", id="passive-health-options"):
            yield self._input(
                "passive_health.fails",
                "Out after",
                str(passive.fails),
                "3",
                "Failed requests within the window that take an upstream out (1 to 1000)",
            )
            yield self._input(
                "passive_health.window",
                "Within",
                duration_text(passive.window),
                "30s",
                "The time over which failures are counted",
            )
            yield self._input(
                "passive_health.cooldown",
                "Out for",
                duration_text(passive.cooldown),
                "30s",
                "How long it stays out (with health checks on, passing checks bring it back sooner)",
            )
            yield self._check(
                "passive_health.status_5xx",
                "Gateway errors",
                "count 502, 503 and 504",
                passive.status_5xx,
                "Also count the upstream's own 502, 503 or 504 answers as failures (a 500 is the app's error)",
            )

    def _retry_fields(self) -> ComposeResult:
        """Retries on another upstream, their deadline, and the wait for an answer's headers."""
        s = self.site
        yield self._input(
            "retries",
            "Retries",
            str(s.retries),
            "2",
            "How many other upstreams a request may go to when one fails before anything was sent "
            "(refused, reset on connect); 0: never. 0 to 10",
        )
        yield self._input(
            "retry_deadline",
            "Retry deadline",
            duration_text(s.retry_deadline),
            "15s",
            "How long all the attempts of one request may take together: no retry starts after it",
        )
        yield self._check(
            "retry_idempotent",
            "Retry timeouts",
            "resend GET, PUT, DELETE...",
            s.retry_idempotent,
            "Also send GET, HEAD, OPTIONS, PUT and DELETE requests to the next upstream after a header "
            "timeout or a connection lost while waiting (the first one may have acted on it already)",
        )
        yield self._input(
            "header_timeout",
            "Header timeout",
            "" if s.header_timeout is None else duration_text(s.header_timeout),
            "as read timeout",
            "Wait this long for the answer's headers once the request is sent (then 504); blank: the read timeout",
        )

    def _tls_fields(self) -> ComposeResult:
        """The HTTPS section: TLS, where the certificate comes from, and the plain-HTTP redirect."""
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

    def _route_fields(self) -> ComposeResult:
        """The Routes section."""
        yield Static("Routes", classes="section")
        yield self._field("routes", "Path routes", self.routes, classes="-bare")

    def _header_fields(self) -> ComposeResult:
        """The Headers section: security headers, and headers set or removed each way."""
        headers = self.site.headers
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
