"""The Sites table without Textual: its columns, their widths on a narrow screen, a site's row as `Text`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rich.text import Text

from homeproxy.config import Site
from homeproxy.tui.format import HEALTH_DOTS, PADDING, feature_flags, site_name

COLUMNS = (("Site", "name"), ("State", "state"), ("On", "features"), ("Hosts", "hosts"), ("Upstreams", "upstreams"))
#: The columns that give way (ending in "…"), widest first, when the table is wider than the screen.
SHRINKABLE = ("upstreams", "hosts", "name")


def fit_widths(natural: Mapping[str, int], width: int, shrink: Sequence[str], floor: int = 8) -> dict[str, int]:
    """Column widths that fit in `width` cells (each column also takes `PADDING`): the `shrink`
    columns give way one cell at a time, the widest first, down to `floor` cells each."""
    widths = dict(natural)
    excess = sum(w + PADDING for w in widths.values()) - width
    while excess > 0:
        key = max(shrink, key=lambda k: widths[k])
        if widths[key] <= floor:
            break
        widths[key] -= 1
        excess -= 1
    return widths


def site_cells(site: Site, upstream_state: Callable[[str, str], str]) -> tuple[Text, ...]:
    """The table's row for `site` (`upstream_state(site, url)` colours each upstream's dot), cut with "…"."""
    name = site_name(site)
    if not site.enabled:
        state = Text("○ off", style="dim")
    elif site.maintenance:
        state = Text("◐ maint", style="yellow")
    else:
        state = Text("● on", style="green")
    # "http://" is the rule and costs a narrow column the port; https:// and mdns:// say something.
    ups = Text()
    for i, url in enumerate(site.upstream_urls):
        dot, style = HEALTH_DOTS.get(upstream_state(site.name, url), HEALTH_DOTS[""])
        ups.append(", " if i else "")
        ups.append(dot + " ", style=style)
        ups.append(url.removeprefix("http://"))
    if site.redirect:
        ups = Text(f"→ {site.redirect}")
    if site.routes:
        ups.append(f" +{len(site.routes)} route{'s' if len(site.routes) > 1 else ''}", style="dim")
    cells = name, state, feature_flags(site), Text(", ".join(site.hosts)), ups
    for cell in cells:  # a column narrower than its text ends it in "…"
        cell.no_wrap = True
        cell.overflow = "ellipsis"
    return cells
