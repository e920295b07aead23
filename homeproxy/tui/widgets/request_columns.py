"""The request log's columns: their layout for a width, and a request's cells drawn as a `Strip`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from homeproxy.engine import RequestCompleted
from homeproxy.tui.format import duration, safe_text
from homeproxy.tui.widgets.request_filter import status_class


def local_time(t: float) -> str:
    """HH:MM:SS.mmm in local time."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def short_size(n: int) -> str:
    """Bytes in at most 6 cells: 512 B, 9.5K, 120K, 3.2M."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("K", "M", "G"):
        value /= 1024
        if value < 1024 or unit == "G":
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{value:.0f}G"  # pragma: no cover


_CACHE_SHORT = {"REVALIDATED": "REVAL"}


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int
    right: bool = False


def layout(width: int) -> tuple[Column, ...]:
    """The columns for a view `width` cells wide; the path column takes what is left."""
    wide = width >= 100
    head = [Column("time", "TIME", 12)]
    if wide:
        head.append(Column("client", "CLIENT", 15))
    head += [
        Column("site", "SITE", 14 if wide else 9),
        Column("method", "METHOD", 7 if wide else 6),
        Column("status", "ST", 3),
    ]
    tail = [
        Column("duration", "DURATION" if wide else "DUR", 8 if wide else 6, right=True),
        Column("bytes", "BYTES", 7 if wide else 6, right=True),
        Column("cache", "CACHE", 6),
    ]
    used = 1 + sum(c.width for c in head + tail) + len(head) + len(tail) + 1  # a left margin, a gap after each column
    return (*head, Column("path", "HOST+PATH", max(8, width - used)), *tail)


def _exact(segments: list[Segment], width: int, style: Style) -> Strip:
    """A strip of exactly `width` cells (the columns add up to it unless the view is very narrow)."""
    strip = Strip(segments)
    return strip if strip.cell_length == width else strip.crop_extend(0, width, style)


def fit(text: str, width: int, right: bool = False) -> str:
    """`text` padded or cut (with an ellipsis) to exactly `width` cells."""
    if text.isascii():
        if len(text) > width:
            return text[: width - 1] + "…"
        return text.rjust(width) if right else text.ljust(width)
    cells = cell_len(text)
    if cells > width:
        return set_cell_size(text, width - 1) + "…"
    pad = " " * (width - cells)
    return pad + text if right else text + pad


def header_strip(columns: tuple[Column, ...], width: int, style: Style) -> Strip:
    """The header line: each column's title."""
    segments = [Segment(" ", style)]
    for column in columns:
        segments.append(Segment(fit(column.title, column.width, column.right), style))
        segments.append(Segment(" ", style))
    return _exact(segments, width, style)


def row_strip(
    ev: RequestCompleted, columns: tuple[Column, ...], width: int, base: Style, component: Callable[[str], Style]
) -> Strip:
    """A request's line; `component` gives the style of a component class by name ("muted", "status-4")."""
    muted = base + component("muted")
    segments = [Segment(" ", base)]
    add = segments.append
    for column in columns:
        w, key = column.width, column.key
        if key == "time":
            add(Segment(fit(local_time(ev.time), w), muted))
        elif key == "client":
            add(Segment(fit(safe_text(ev.client), w), muted))
        elif key == "site":
            add(Segment(fit(safe_text(ev.site) or "-", w), base if ev.site else muted))
        elif key == "method":
            add(Segment(fit(safe_text(ev.method) or "-", w), base))
        elif key == "status":
            style = base + component(f"status-{status_class(ev.status)}")
            add(Segment(fit(str(ev.status) if ev.status else "---", w), style))
        elif key == "path":
            target = safe_text(ev.host + ev.path)
            error = f"  {safe_text(ev.error)}" if ev.error else ""
            if cell_len(target) >= w or not error:
                add(Segment(fit(target, w), base))
            else:
                add(Segment(target, base))
                add(Segment(fit(error, w - cell_len(target)), base + component("error")))
        elif key == "duration":
            add(Segment(fit(duration(ev.duration), w, right=True), base))
        elif key == "bytes":
            add(Segment(fit(short_size(ev.bytes_out), w, right=True), muted))
        elif key == "cache":
            cache = _CACHE_SHORT.get(ev.cache, ev.cache)
            hit = ev.cache in ("HIT", "REVALIDATED", "STALE")
            add(Segment(fit(safe_text(cache), w), base + component("cache-hit") if hit else muted))
        add(Segment(" ", base))
    return _exact(segments, width, base)
