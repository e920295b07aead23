"""What the Sites screen's detail pane says about a site: every setting, a line per topic."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text

from homeproxy.config import Site
from homeproxy.config.model import Upstream
from homeproxy.tui.format import PADLOCK, health_dot, size
from homeproxy.tui.widgets.form_parts import duration_text


def upstream_list(upstreams: tuple[Upstream, ...], state: Callable[[str], str]) -> Text:
    """`● http://a, ● http://b (backup, max 20)`: each with its health dot and its options."""
    text = Text()
    for i, u in enumerate(upstreams):
        if i:
            text.append(", ")
        text.append_text(health_dot(state(u.url)))
        text.append(" " + u.url)
        options = [f"weight {u.weight}"] if u.weight != 1 else []
        options += ["backup"] if u.backup else []
        options += [f"max {u.max_conns}"] if u.max_conns else []
        if options:
            text.append(f" ({', '.join(options)})", style="dim")
    return text


def site_summary(site: Site, state: Callable[[str], str] = lambda _url: "") -> Text:
    """Everything about one site, a line per topic (for the detail pane); `state` gives each
    upstream URL's health ("up", "down", "cooling", "unchecked", or "" for unknown)."""
    text = Text()

    def line(label: str, *parts: str | Text) -> None:
        if text:
            text.append("\n")
        text.append(f"{label:<12}", style="bold")
        for part in parts:
            text.append(part)

    dim = "dim"
    text.append(site.name, style="bold")
    text.append("  ● enabled" if site.enabled else "  ○ disabled: its hosts get the 404 page", style=dim)
    line("Hosts", ", ".join(site.hosts))
    if site.maintenance:
        text.append("  ◐ in maintenance: a 503 page for everyone", style="yellow")
    if site.redirect:
        keep = " (path and query kept)" if site.keep_path else ""
        line("Redirect", f"{site.redirect_code} to {site.redirect}{keep}")
    if site.upstreams:
        line("Upstreams", upstream_list(site.upstreams, state))
    for route in site.routes:
        strip = " (prefix stripped)" if route.strip_prefix else ""
        if route.rewrite:
            strip = f" (prefix becomes {route.rewrite})"
        line("Route", route.path, Text(" → ", style=dim), upstream_list(route.upstreams, state), strip)
    if site.upstreams or site.routes:
        balancing = [site.balance.replace("_", " ")]
        if (check := site.health) is not None:
            balancing.append(f"checks {check.path} every {duration_text(check.interval)}")
        if not site.passive_health.enabled:
            balancing.append("failing requests not counted")
        if site.retries != 2 or site.retry_idempotent:
            balancing.append(f"{site.retries} retries" + (", idempotent too" if site.retry_idempotent else ""))
        line("Balancing", " · ".join(balancing), Text("  (u: each upstream's health)", style=dim))
    proxy = ["WebSockets" if site.websockets else "no WebSockets"]
    proxy.append("client Host" if site.preserve_host else "upstream's Host")
    proxy.append(f"connect {duration_text(site.connect_timeout)}, read {duration_text(site.read_timeout)}")
    if not site.verify_upstream:
        proxy.append("HTTPS certificates not checked")
    line("Proxying", " · ".join(proxy))
    if site.tls:
        if site.uses_own_cert:
            source = f"own files {site.cert}"
        else:
            source = {"internal": "the local CA", "acme": "ACME"}.get(site.issuer, "the [tls] issuer")
        redirect = "plain HTTP redirected (308)" if site.redirect_to_https else "plain HTTP served too"
        line("HTTPS", f"{PADLOCK} on · certificate from {source} · {redirect}")
    else:
        line("HTTPS", Text("off", style=dim))
    if site.publish is not None:
        line("mDNS", "announces its .local names" if site.publish else "does not announce its .local names")
    access: list[str] = []
    if site.allow:
        access.append("allow " + ", ".join(site.allow))
    if site.deny:
        access.append("deny " + ", ".join(site.deny))
    if site.rate_limit is not None:
        access.append(f"{site.rate_limit.rate:g}/s per client, burst {site.rate_limit.burst}")
    line("Access", " · ".join(access) or Text("anyone, no limit", style=dim))
    auth = site.auth
    if not auth.mode:
        line("Auth", Text("off", style=dim))
    elif auth.mode == "forward":
        line("Auth", f"forward to {auth.forward}")
    else:
        users = ", ".join(name for name, _ in auth.users)
        line("Auth", f"{auth.mode} · users: {users}")
    if auth.mode and auth.bypass:
        text.append(f" · no login from {', '.join(auth.bypass)}")
    cache = site.cache
    if cache.enabled:
        ttl = duration_text(cache.default_ttl)
        line("Cache", f"on · default TTL {ttl} · entries up to {size(cache.max_entry_bytes)}")
    else:
        line("Cache", Text("off", style=dim))
    comp = site.compression
    if comp.enabled:
        line("Compression", f"on · from {size(comp.min_bytes)} · {' '.join(comp.algorithms)}")
    else:
        line("Compression", Text("off", style=dim))
    h = site.headers
    rules = ["security headers"] if h.security else []
    rules += [f"set {k}" for k, _ in (*h.request_set, *h.response_set)]
    rules += [f"remove {k}" for k in (*h.request_remove, *h.response_remove)]
    line("Headers", ", ".join(rules) or Text("as they come", style=dim))
    return text
