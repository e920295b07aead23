"""The site form's parts: `Field` (a label, its control and its errors), values written as
people type them ("5s", "8MiB", "20/s"), and the advice shown under TLS fields.

Pure helpers and one self-contained widget, shared by `SiteForm` and its sections.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Input, Label

from homeproxy.tui.widgets.site_form_rows import ErrorLine

#: Names that only mean something at home: no public CA issues for them, and HSTS pins them in every browser.
INTERNAL_SUFFIXES = (".local", ".home.arpa", ".lan", ".internal", ".home", ".localdomain", ".test")


def internal_names(hosts: Sequence[str]) -> list[str]:
    """The hosts that are internal names: a home-network suffix (`.local`, `.home.arpa`, `.lan`,
    `.internal`, ...) or no dot at all (`nas`). IP addresses are not names (browsers ignore HSTS for them)."""
    found = []
    for host in hosts:
        name = host.lower().rstrip(".").removeprefix("*.")
        try:
            ipaddress.ip_address(name.strip("[]"))
            continue
        except ValueError:
            pass
        if "." not in name or name.endswith(INTERNAL_SUFFIXES):
            found.append(host)
    return found


def hsts_hint(hosts: Sequence[str]) -> str:
    """The warning for HSTS (security headers on a TLS site) on internal names, or ""."""
    names = internal_names(hosts)
    if not names:
        return ""
    return (
        f"⚠ HSTS on internal names ({', '.join(names)}): once a browser has seen it, it refuses plain HTTP "
        "and any certificate problem on them for a year, with no way past the error. Turn security headers "
        "on only when every device trusts homeproxy's root."
    )


def acme_hint(hosts: Sequence[str]) -> str:
    """What ACME cannot do for these hosts (internal names, wildcards over HTTP-01), or ""."""
    problems = []
    names = internal_names(hosts)
    if names:
        problems.append(f"no public CA issues for internal names ({', '.join(names)}): use the local CA")
    wild = [h for h in hosts if h.startswith("*.") and h not in names]
    if wild:
        problems.append(f"HTTP-01 cannot prove a wildcard ({', '.join(wild)}): list the names, or bring your own files")
    return "⚠ " + "; ".join(problems) if problems else ""


def duration_text(secs: float) -> str:
    """Seconds as people type them: "5s", "500ms", "2m", "7d", "1.5s"; 0 is "0"."""
    secs = float(secs)
    if secs == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs > 60 and secs >= size and (secs / size).is_integer():
            return f"{int(secs // size)}{unit}"
    if secs.is_integer():
        return f"{int(secs)}s"
    ms = secs * 1000
    if secs < 1 and math.isclose(ms, round(ms)) and ms.is_integer():
        return f"{int(ms)}ms"
    return f"{secs!r}s"


def size_text(n: int) -> str:
    """Bytes as people type them: "8MiB", "512KiB", or the plain number."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def rate_text(per_second: float) -> str:
    """A rate in the unit that makes it a whole number ("20/s", "20/m", "5/h"), as the loader reads it."""
    for unit, seconds in (("s", 1), ("m", 60), ("h", 3600)):
        count = per_second * seconds
        if math.isclose(count, round(count), rel_tol=1e-9):
            return f"{round(count)}/{unit}"
    return f"{per_second!r}/s"


def number(text: str) -> int | str:
    """A whole number as an int (the loader wants one), anything else as typed (for its message)."""
    return int(text) if text.isdigit() else text


def dig(data: Mapping[str, Any], key: str) -> Any:
    """`data["cache"]["default_ttl"]` for `"cache.default_ttl"`, or None."""
    value: Any = data
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def control_id(key: str) -> str:
    """`"auth.session_ttl"` -> `"auth-session-ttl"`."""
    return key.replace(".", "-").replace("_", "-")


class Field(Vertical):
    """A label, its control and the errors under it."""

    DEFAULT_CSS = """
    Field {
        layout: grid;
        grid-size: 2;
        grid-columns: 18 1fr;
        grid-rows: auto;
        height: auto;
    }
    Field > .field-label {
        padding-right: 1;
        color: $text-muted;
    }
    Field > ErrorLine {
        column-span: 2;
        margin-left: 18;
    }
    Field.-bare {
        grid-size: 1;
        grid-columns: 1fr;
    }
    Field.-bare > .field-label {
        display: none;
    }
    Field.-bare > ErrorLine {
        column-span: 1;
        margin-left: 0;
    }
    """

    def __init__(self, key: str, label: str, control: Widget, *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.key = key
        """The setting's key path inside the site (`cache.default_ttl`)."""
        self.label = label
        self.control = control
        self.error_line = ErrorLine()

    def compose(self) -> ComposeResult:
        yield Label(self.label, classes="field-label")
        yield self.control
        yield self.error_line

    def show_errors(self, messages: Sequence[str]) -> None:
        self.error_line.show(messages)
        self.set_class(bool(messages), "-invalid")
        if isinstance(self.control, Input):
            self.control.set_class(bool(messages), "-invalid")
