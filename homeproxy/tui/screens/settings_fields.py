"""The Settings screen's field table: `FIELDS`, `FIELD_BY_ID`, and how a value is shown and parsed (no Textual)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from homeproxy.config import Config

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
