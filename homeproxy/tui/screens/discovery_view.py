"""The Discovery screen's text, no Textual: the discovery seam, status, names and detail as `Text`, the Site column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from rich.text import Text

from homeproxy.config import Config
from homeproxy.config.model import DiscoverySettings
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.service import DiscoveredService
from homeproxy.tui.format import safe_text

# --- what the screen reads of the running discovery (a seam: tests give canned ones) ---


class InterfaceView(Protocol):
    """An interface mDNS runs on."""

    @property
    def name(self) -> str: ...
    @property
    def addresses(self) -> tuple[str, ...]: ...


class NameView(Protocol):
    """A `.local` name homeproxy answers for (or would, but another machine holds it)."""

    @property
    def host(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def holders(self) -> tuple[str, ...]: ...
    @property
    def detail(self) -> str: ...


class DiscoveryView(Protocol):
    """The state of the runtime's discovery."""

    @property
    def interfaces(self) -> Sequence[InterfaceView]: ...
    @property
    def running(self) -> bool: ...
    @property
    def error(self) -> str: ...
    @property
    def names(self) -> Mapping[str, NameView]: ...


# --- pure helpers ----------------------------------------------------------------------

THIS_HOMEPROXY = "this homeproxy"
"""The label of homeproxy's own adverts, in the Site column and the detail."""

OWN_STYLE = "dim"


def interfaces_text(interfaces: Sequence[InterfaceView]) -> str:
    """`"eth0 (192.168.1.5), wlan0 (192.168.1.6)"`."""
    return ", ".join(f"{i.name} ({', '.join(i.addresses)})" if i.addresses else i.name for i in interfaces)


def status_text(discovery: DiscoveryView | None, settings: DiscoverySettings) -> Text:
    """What is browsed, on which interfaces, and the names announced (or why nothing is)."""
    if discovery is None:
        return Text("mDNS discovery is off in this run, so nothing is browsed or announced.", style="dim")
    if discovery.error:
        return Text.assemble(("✗ mDNS discovery failed: ", "bold red"), safe_text(discovery.error))
    if not settings.browse and not settings.publish_hostnames and not settings.advertise:
        return Text("mDNS is off: turn on Browse in Settings → Discovery (key 4).", style="dim")
    if not discovery.running:
        return Text("mDNS discovery is starting…", style="dim")
    where = interfaces_text(discovery.interfaces) or "no interface (none has a LAN address)"
    text = Text()
    if settings.browse:
        count = len(settings.service_types)
        text.append("Browsing ", style="bold")
        text.append(f"{count} service type{'s' if count != 1 else ''}")
        if settings.browse_all_types:
            text.append(" and every type the LAN lists")
    else:
        text.append("Not browsing ", style="bold")
        text.append("(Browse is off in Settings → Discovery)")
    text.append(" on ")
    text.append(where)
    text.append("\n")
    text.append_text(names_text(discovery.names, settings))
    return text


def names_text(names: Mapping[str, NameView], settings: DiscoverySettings) -> Text:
    """One line: each announced name and its state."""
    if not names:
        if settings.publish_hostnames:
            return Text("No .local names announced: no site has a host such as plex.local.", style="dim")
        return Text("Not announcing site names (Publish host names is off).", style="dim")
    text = Text("Answering ", style="bold")
    for i, name in enumerate(sorted(names.values(), key=lambda n: n.host)):
        if i:
            text.append(" · ", style="dim")
        text.append(safe_text(name.host))
        if name.status == "announced":
            text.append(" ●", style="green")
        elif name.status == "conflict":
            held = f" held by {', '.join(name.holders)}" if name.holders else " held by another machine"
            text.append(" ✗" + safe_text(held), style="red")
        elif name.status == "error":
            text.append(" ✗ " + safe_text(name.detail or "error"), style="red")
        else:
            text.append(f" {safe_text(name.status)}", style="dim")
    return text


def mapped_sites(directory: ServiceDirectory, services: Sequence[DiscoveredService], config: Config) -> dict[str, str]:
    """Service key -> the names of the sites whose upstreams point at it (only those that have one);
    homeproxy's own adverts are "this homeproxy"."""
    upstreams = [(s.name, s.all_upstreams) for s in config.sites]
    out: dict[str, str] = {}
    for service in services:
        if service.own:
            out[service.key] = THIS_HOMEPROXY
            continue
        names = [name for name, ups in upstreams if directory.maps(service, ups)]
        if names:
            out[service.key] = ", ".join(names)
    return out


def suggestion_note(service: DiscoveredService) -> Text:
    """What the editor says about a site made from `service`."""
    text = Text.assemble(
        "From discovery: ", (safe_text(service.instance), "bold"), f" ({safe_text(service.label)}), now at "
    )
    text.append(safe_text(service.url() or "an unknown address"), style="bold")
    text.append(". The upstream ")
    text.append(safe_text(str(service.ref)))
    text.append(" follows the device when its address changes.")
    if service.scheme == "https":
        text.append(
            "\nCertificate checks are off for this self-signed device; "
            "turn Verify upstream on if it has a real certificate.",
            style="yellow",
        )
    return text


def detail_text(service: DiscoveredService) -> Text:
    """Two lines about one service: its names and addresses, then its TXT properties (dimmed, and
    labelled, for homeproxy's own adverts)."""
    text = Text()
    if service.own:
        text.append(THIS_HOMEPROXY, style="bold")
        text.append(" · ")
    text.append(safe_text(service.instance), style="bold")
    text.append(" · ")
    text.append(safe_text(service.type))
    text.append(" · host ")
    text.append(safe_text(service.host or "unknown"))
    if service.resolved:
        text.append(" · ")
        text.append(safe_text(", ".join(service.addresses)))
    else:
        text.append(" · not resolved yet: no address and port", style="dim")
    text.append("\nTXT ", style="dim")
    if service.properties:
        for i, (key, value) in enumerate(service.properties):
            if i:
                text.append(" ")
            text.append(safe_text(key if value is None else f"{key}={value}"))
    else:
        text.append("none", style="dim")
    if service.own:
        text.stylize(OWN_STYLE)
    return text
