"""The local CA's root as the Certificates screen shows it: where a device downloads it, and how to trust it.

`load_root()` reads the root (never a key; `LocalCA.open(create=False)` writes
nothing) and works out the download URL: the plain-HTTP listener's address as
another device on the LAN would use it (a LAN address of this machine when
homeproxy listens on every address), its port, and the fixed path the engine
serves the root on. `RootPanel` draws it: a QR code of that URL beside the
fingerprint and short per-platform steps. It is blocking file I/O: callers run
`load_root` in a thread.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from homeproxy.config import Config
from homeproxy.tui.widgets.qr import qr_text

ROOT_PATH = "/.well-known/homeproxy/root.crt"
"""Where the plain-HTTP listener serves the root (PEM), on any host (`[tls] serve_root`)."""
PROFILE_PATH = "/.well-known/homeproxy/root.mobileconfig"
"""The same root as an iOS configuration profile."""


@dataclass(frozen=True, slots=True)
class RootInfo:
    """The local CA's public root, and where a device can fetch it."""

    name: str
    """The root's common name, as a device lists it after installing."""
    fingerprint: str
    """SHA-256 of the root, "AB:CD:..." (what a device shows in the certificate's details)."""
    pem: bytes
    """The root certificate itself (public: safe to copy anywhere)."""
    file: str
    """Where it is on this machine (the CA's directory)."""
    url: str
    """The download URL for `ROOT_PATH`, or "" when `[tls] serve_root` is off."""
    profile_url: str = ""
    """The iOS profile's URL ("" when not served)."""
    not_after: datetime | None = None
    note: str = ""
    """Why the URL may not work from another device ("" when it should)."""


def download_host(listen: Sequence[str], lan: Sequence[str]) -> tuple[str, str]:
    """The host part of the download URL for a listener on `listen`, given this machine's LAN
    addresses; and a note when other devices cannot reach it ("" when they can)."""
    wildcard = False
    for addr in listen:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return addr, ""  # a host name: the user chose it
        if ip.is_unspecified:
            wildcard = True
            if lan:
                return lan[0], ""
        elif not ip.is_loopback:
            return addr, ""
    if wildcard:
        return socket.gethostname(), "No LAN address found for this machine: the URL uses its host name."
    first = listen[0] if listen else "127.0.0.1"
    return first, (
        f"homeproxy listens on {first} only, so other devices cannot open this URL: listen on 0.0.0.0 "
        "(Settings, key 4), or export the root with x and copy it over."
    )


def url_for(host: str, port: int, path: str) -> str:
    """`http://host:port/path` (no port for 80, brackets for IPv6)."""
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}{'' if port == 80 else f':{port}'}{path}"


def lan_addresses() -> list[str]:
    """This machine's LAN addresses, IPv4 first (discovery's own choice of LAN interfaces)."""
    from homeproxy.discovery.interfaces import lan_interfaces

    addresses = [a for i in lan_interfaces() for a in i.addresses]
    return sorted(addresses, key=lambda a: ":" in a)


def load_root(ca_dir: Path, config: Config, http_port: int, lan: Sequence[str] | None = None) -> RootInfo | None:
    """The root in `ca_dir` and its download URLs, or None when there is no CA yet. Blocking."""
    from cryptography.x509.oid import NameOID

    from homeproxy.certs.ca import CANotCreated, LocalCA

    try:
        ca = LocalCA.open(ca_dir, create=False)
    except CANotCreated:
        return None
    names = ca.root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else "homeproxy root"
    host, note = download_host(config.server.listen, lan_addresses() if lan is None else lan)
    served = config.tls.serve_root
    return RootInfo(
        name=name,
        fingerprint=ca.fingerprint(),
        pem=ca.root_pem(),
        file=str(ca.files["root certificate"]),
        url=url_for(host, http_port, ROOT_PATH) if served else "",
        profile_url=url_for(host, http_port, PROFILE_PATH) if served else "",
        not_after=ca.root.not_valid_after_utc,
        note=note if served else "",
    )


#: Platform, steps. Short on purpose: docs/tls.md has the long version.
STEPS = (
    (
        "iPhone, iPad",
        "Scan the code (or open the .mobileconfig link) in Safari and allow the download; install the "
        "profile in Settings > General > VPN & Device Management; then Settings > General > About > "
        "Certificate Trust Settings: turn on full trust for the root.",
    ),
    (
        "Android",
        "Download root.crt, then Settings > Security > Install a certificate > CA certificate (the menu's "
        "place varies by maker). Browsers honour it; many apps ignore CAs a user installs.",
    ),
    (
        "Windows",
        "Open root.crt > Install Certificate > Local Machine > Place all certificates in: Trusted Root "
        "Certification Authorities.",
    ),
    ("macOS", "Open root.crt (Keychain Access), double-click the root > Trust > When using: Always Trust."),
    (
        "Linux",
        "On this machine: homeproxy ca trust. Elsewhere: copy it to /usr/local/share/ca-certificates/"
        "homeproxy.crt and run update-ca-certificates.",
    ),
    (
        "Firefox",
        "Has its own store: Settings > Privacy & Security > Certificates > View Certificates > "
        "Authorities > Import, and tick “Trust this CA to identify websites”.",
    ),
)


def steps_table() -> Table:
    """`STEPS` with a hanging indent: the platform, then what to do there."""
    table = Table(box=None, show_header=False, padding=(0, 1, 0, 0), expand=True)
    table.add_column("platform", style="bold", no_wrap=True, width=12)
    table.add_column("steps", ratio=1)
    for platform, steps in STEPS:
        table.add_row(Text(platform), Text(steps))
    return table


def fingerprint_lines(fingerprint: str, per_line: int = 16) -> str:
    """A SHA-256 fingerprint on lines of `per_line` bytes (its 95 characters fit no panel)."""
    parts = fingerprint.split(":")
    return "\n".join(":".join(parts[i : i + per_line]) for i in range(0, len(parts), per_line))


def root_text(root: RootInfo | None, *, per_line: int = 16) -> Text:
    """What the root is, its fingerprint, the URLs, and the one rule (the root, never a leaf)."""
    if root is None:
        return Text.assemble(
            ("No local CA yet.\n", "bold"),
            "homeproxy creates its own certificate authority when the first site with HTTPS on uses the "
            "internal issuer (the default). Its root then shows here, with a QR code to install it on "
            "your phone.",
        )
    text = Text.assemble(
        ("Install the ROOT on each device, once: ", "bold"),
        "the root (",
        (root.name, "bold"),
        "), never a site's certificate. The root vouches for every site and every renewal; "
        "a site's certificate stops working at its next renewal.\n",
        ("SHA-256 ", "dim"),
        "(check it on the device)\n",
        fingerprint_lines(root.fingerprint, per_line),
        "\n",
    )
    if root.url:
        text.append("Scan the code or open ", style="dim")
        text.append(root.url, style="bold")
        text.append("\niOS profile ", style="dim")
        text.append(root.profile_url)
    else:
        text.append(
            "Serving the root over HTTP is off ([tls] serve_root = false): export it with x and copy it to the device."
        )
    if root.note:
        text.append("\n⚠ " + root.note, style="yellow")
    return text


def root_line(root: RootInfo | None) -> Text:
    """The root in three short lines, for terminals too short for the panel."""
    if root is None:
        return Text("No local CA yet: it is made when the first site with HTTPS on uses the internal issuer.")
    text = Text.assemble(
        ("Root ", "bold"),
        root.name,
        ("  install it on each device: t shows how\n", "dim"),
        ("SHA-256 ", "dim"),
        root.fingerprint[:47] + "…",
    )
    if root.url:
        text.append("\n")
        text.append(root.url)
    return text


class RootPanel(Horizontal):
    """A QR code of the root's download URL beside what to do with it; `show()` a root (or None)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: RootInfo | None = None
        self._drawn = False

    def compose(self) -> ComposeResult:
        yield Static(classes="root-qr")
        with VerticalScroll(classes="root-info"):
            yield Static(classes="root-text")
            yield Static(steps_table(), classes="root-steps")

    def on_mount(self) -> None:
        self._draw()

    def on_resize(self) -> None:
        if self._drawn:
            self._draw()  # the fingerprint's lines follow the width

    def show(self, root: RootInfo | None) -> None:
        """Draw `root` (only when it changed: a QR code is a few hundred cells)."""
        if root != self._shown or not self._drawn:
            self._shown = root
            if self.is_mounted:
                self._draw()

    def _draw(self) -> None:
        self._drawn = True
        root = self._shown
        qr = self.query_one(".root-qr", Static)
        qr.update(qr_text(root.url) if root is not None and root.url else "")
        qr.display = root is not None and bool(root.url)
        per_line = 16 if self.size.width >= 90 or not self.size.width else 8
        self.query_one(".root-text", Static).update(root_text(root, per_line=per_line))
        self.query_one(".root-steps", Static).display = root is not None
