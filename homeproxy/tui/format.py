"""Small formatting helpers shared by the screens (no widgets here)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.text import Text

from homeproxy.config import Site

_BLOCKS = " ▁▂▃▄▅▆▇█"

# SECURITY: neither Rich's `Text` nor Textual's `Content` drops ESC or the C1 controls (they
# strip only BEL, BS, VT, FF and CR), and Textual writes a segment's text to the terminal as
# it is: an ESC in a Host header would be a terminal escape sequence. So every string from the
# network goes through `safe_text` on its way to the screen: C0 and C1 controls and DEL, the line
# and paragraph separators, the bidi overrides and isolates (they reorder what is shown), and
# lone surrogates (aiohttp decodes header bytes that are not UTF-8 with "surrogateescape"; a
# surrogate cannot even be written to the terminal).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
        code -= 0xDC00
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """`text` (from the network) with control characters shown as escapes (`\\x1b`, `\\u202e`),
    so it is only ever text. Pass the result on as `Text`/`Content` or with `markup=False`:
    escaping markup is not enough (Textual's markup reads `[ @click=app.quit]`, which
    `rich.markup.escape` and `textual.markup.escape` leave alone)."""
    return text if text.isprintable() else _UNSAFE.sub(_escape, text)


def sparkline(values: Sequence[int | float]) -> str:
    """`values` as a one-line bar chart, scaled to its own maximum."""
    top = max(values, default=0)
    if top <= 0:
        return "▁" * len(values)
    return "".join(_BLOCKS[max(1, round(v / top * 8))] if v else "▁" for v in values)


def rate(per_second: float) -> str:
    """Requests per second, short."""
    if per_second >= 1000:
        return f"{per_second / 1000:.1f}k"
    return f"{per_second:.1f}" if per_second < 100 else f"{per_second:.0f}"


def duration(seconds: float) -> str:
    """A latency, in the unit that reads best."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms" if seconds < 0.1 else f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s"


def size(n: float) -> str:
    """Bytes, short."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


FLAGS = (
    ("C", "cache"),
    ("Z", "compression"),
    ("A", "auth"),
    ("L", "allow/deny"),
    ("R", "rate limit"),
    ("W", "websockets"),
    ("T", "TLS"),
)


#: After a TLS site's name in the Dashboard and Sites tables.
PADLOCK = "🔒"


def site_name(site: Site) -> Text:
    """A site's name for a table: struck through when disabled, a padlock after it when it has HTTPS."""
    text = Text(site.name, style="" if site.enabled else "dim strike")
    if site.tls:
        text.append(" " + PADLOCK, style="" if site.enabled else "dim")
    return text


def feature_flags(site: Site) -> Text:
    """One letter per feature: bright when the site has it on, a dim dot when off."""
    on = (
        site.cache.enabled,
        site.compression.enabled,
        bool(site.auth.mode),
        bool(site.allow or site.deny),
        site.rate_limit is not None,
        site.websockets,
        site.tls,
    )
    text = Text()
    for (letter, _name), enabled in zip(FLAGS, on, strict=True):
        text.append(letter if enabled else "·", style="bold" if enabled else "dim")
    return text


def ago(seconds: float) -> str:
    """How long ago, short: "just now", "42s ago", "5m ago", "3h ago", "2d ago"."""
    s = int(max(0.0, seconds))
    if s < 1:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"


#: The feature letters of the sites tables (Dashboard and Sites), and a shorter one for narrow terminals.
LEGEND = "C cache  Z compression  A auth  L allow/deny  R rate limit  W websockets  T TLS"
LEGEND_SHORT = "C cache  Z compress  A auth  L allow/deny  R rate limit  W websockets  T TLS"
#: Cells left and right of each column's text (DataTable's cell padding).
PADDING = 2

#: An upstream's health state as a dot and its colour ("" is a state the TUI does not know yet).
HEALTH_DOTS = {
    "up": ("●", "green"),
    "down": ("●", "red"),
    "cooling": ("◐", "yellow"),
    "unchecked": ("○", "dim"),
    "": ("○", "dim"),
}


def health_dot(state: str) -> Text:
    """The dot for an upstream's health state ("up", "down", "cooling", "unchecked")."""
    dot, style = HEALTH_DOTS.get(state, HEALTH_DOTS[""])
    return Text(dot, style=style)
