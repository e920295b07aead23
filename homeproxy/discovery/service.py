"""What a browse finds: `DiscoveredService`, and the `mdns://` upstream reference.

Everything here is plain data and pure functions (no zeroconf, no Textual), so
the config loader, the engine's resolver, the CLI and the TUI can all use it.

Text that came from the network is cleaned on the way in (`clean_text`):
control characters (ESC, NUL, newlines, C1) are shown as `\\x1b`-style escapes
and long values are cut, so nothing from the LAN can move a terminal's cursor
or grow without bound. Markup is the TUI's concern: it renders these strings
as `Text`, never as markup.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

#: Service types browsed by default: web UIs a home lab is likely to have.
DEFAULT_SERVICE_TYPES: tuple[str, ...] = (
    "_http._tcp.local.",
    "_https._tcp.local.",
    "_home-assistant._tcp.local.",
    "_plexmediasvr._tcp.local.",
    "_octoprint._tcp.local.",
    "_ipp._tcp.local.",
    "_ipps._tcp.local.",
    "_shelly._tcp.local.",
    "_wled._tcp.local.",
    "_hue._tcp.local.",
)

#: Friendly names for well-known types (shown in the TUI and `homeproxy discover`).
TYPE_LABELS: dict[str, str] = {
    "_http._tcp.local.": "Web (HTTP)",
    "_https._tcp.local.": "Web (HTTPS)",
    "_home-assistant._tcp.local.": "Home Assistant",
    "_plexmediasvr._tcp.local.": "Plex",
    "_octoprint._tcp.local.": "OctoPrint",
    "_ipp._tcp.local.": "Printer (IPP)",
    "_ipps._tcp.local.": "Printer (IPPS)",
    "_shelly._tcp.local.": "Shelly",
    "_wled._tcp.local.": "WLED",
    "_hue._tcp.local.": "Philips Hue",
    "_smb._tcp.local.": "File share (SMB)",
    "_ssh._tcp.local.": "SSH",
    "_sftp-ssh._tcp.local.": "SFTP",
    "_googlecast._tcp.local.": "Chromecast",
    "_airplay._tcp.local.": "AirPlay",
    "_esphomelib._tcp.local.": "ESPHome",
    "_hap._tcp.local.": "HomeKit",
    "_workstation._tcp.local.": "Workstation",
    "_device-info._tcp.local.": "Device info",
}

#: Types whose upstream speaks HTTPS.
HTTPS_TYPES = frozenset({"_https._tcp.local.", "_ipps._tcp.local.", "_hue._tcp.local."})

SELF_KEY = "homeproxy"
"""The TXT key homeproxy puts in its own adverts (at most 9 characters, RFC 6763 §6.4); its value
is the advertising process's instance id (`new_instance_id`), so a browser can tell its own."""

MAX_TEXT = 255
"""Longest name or TXT value kept (a DNS label is at most 63 bytes, a TXT string 255)."""
MAX_PROPERTIES = 64
"""Most TXT properties kept per service."""

_TYPE = re.compile(r"^_[A-Za-z0-9-]{1,63}\._(?:tcp|udp)\.local\.$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_text(value: str | bytes | None, limit: int = MAX_TEXT) -> str:
    """Network text made safe to show: decoded (bad UTF-8 replaced), control
    characters escaped, bidi overrides dropped, cut to `limit` characters."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = "".join(ch for ch in value if unicodedata.category(ch) != "Cf" or ch == "\u200d")
    value = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def normalize_type(type_: str) -> str:
    """`"_http._tcp"` / `"_HTTP._tcp.local"` -> `"_http._tcp.local."`; ValueError if not a service type."""
    t = type_.strip().lower().rstrip(".")
    if not t.endswith(".local"):
        t += ".local"
    t += "."
    if not _TYPE.match(t):
        raise ValueError(f'expected a service type such as "_http._tcp", got "{clean_text(type_, 80)}"')
    return t


def type_label(type_: str) -> str:
    """A friendly name for a service type (`"Plex"`), or the type without `.local.`."""
    return TYPE_LABELS.get(type_, type_.removesuffix(".local."))


def slugify(text: str, *, limit: int = 40) -> str:
    """A host-name label from an instance name: `"Living Room TV (2)"` -> `"living-room-tv-2"`."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")
    return slug[:limit].rstrip("-") or "service"


@dataclass(frozen=True, slots=True)
class MdnsRef:
    """An `mdns://` upstream: a service instance that the engine resolves to its current address.

    `mdns://Plex._plexmediasvr._tcp/web` is the instance "Plex" of type
    `_plexmediasvr._tcp.local.`, with the upstream path `/web`. Instance names
    may hold spaces, dots and any Unicode; the type is always the last
    `._name._tcp` (or `._udp`) before the path.
    """

    instance: str
    type: str
    """Normalised, e.g. `"_plexmediasvr._tcp.local."`."""
    path: str = ""
    """Upstream path prefix ("" or `/web`)."""

    @property
    def name(self) -> str:
        """The full mDNS service name, as zeroconf spells it."""
        return f"{self.instance}.{self.type}"

    @property
    def key(self) -> str:
        """Case-insensitive lookup key (mDNS names compare without case)."""
        return self.name.lower()

    def __str__(self) -> str:
        return f"mdns://{self.instance}.{self.type.removesuffix('.local.')}{self.path}"


_REF = re.compile(
    r"^mdns://(?P<instance>.+?)\.(?P<type>_[A-Za-z0-9-]{1,63}\._(?:tcp|udp))(?:\.local)?\.?(?P<path>/.*)?$"
)


def parse_mdns_ref(text: str) -> MdnsRef:
    """Parse `mdns://<instance>.<_type>._tcp[/path]`; ValueError with an example if it is not one."""
    m = _REF.match(text.strip())
    if not m or _CONTROL.search(text):
        raise ValueError(
            f'expected an mDNS upstream such as "mdns://Plex._plexmediasvr._tcp", got "{clean_text(text, 80)}"'
        )
    path = (m.group("path") or "").rstrip("/")
    if "?" in path or "#" in path:
        raise ValueError("an mDNS upstream takes no query or fragment")
    return MdnsRef(m.group("instance"), normalize_type(m.group("type")), path)


def is_mdns_ref(text: str) -> bool:
    return text.strip().lower().startswith("mdns://")


@dataclass(frozen=True, slots=True)
class DiscoveredService:
    """One service instance seen on the LAN, resolved as far as the network allowed."""

    name: str
    """The full mDNS name (`"Plex._plexmediasvr._tcp.local."`), its instance part cleaned like
    `instance`; the directory's key."""
    instance: str
    """The instance part of the name, cleaned for display (`"Plex"`)."""
    type: str
    """The service type (`"_plexmediasvr._tcp.local."`)."""
    host: str = ""
    """The target host name (`"plexbox.local."`), "" if not resolved."""
    addresses: tuple[str, ...] = ()
    """IP addresses, best first (see `sort_addresses`); IPv6 link-local ones carry `%scope`."""
    port: int = 0
    """0 while unresolved."""
    properties: tuple[tuple[str, str | None], ...] = ()
    """TXT properties, cleaned; a key with no `=` has the value None."""
    path: str = ""
    """The TXT `path` property, normalised to `/x` ("" when absent or `/`)."""
    seen: float = 0.0
    """When it was last added or updated (seconds since the epoch)."""
    own: bool = False
    """One of this homeproxy's own adverts (see `SelfIdentity`): adding it as a site would loop back."""

    @property
    def ref(self) -> MdnsRef:
        return MdnsRef(
            self.name[: -len(self.type) - 1] if self.name.endswith("." + self.type) else self.instance,
            self.type,
            self.path,
        )

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def scheme(self) -> str:
        if self.type in HTTPS_TYPES:
            return "https"
        for k, v in self.properties:
            if k.lower() in ("scheme", "protocol", "proto") and v and v.lower() == "https":
                return "https"
        return "http"

    @property
    def label(self) -> str:
        return type_label(self.type)

    @property
    def address(self) -> str | None:
        """The address an upstream URL should use, or None."""
        return self.addresses[0] if self.addresses else None

    @property
    def resolved(self) -> bool:
        return bool(self.addresses) and self.port > 0

    def base_url(self) -> str | None:
        """`"http://192.168.1.20:32400"` (no path), or None while unresolved."""
        if not self.resolved:
            return None
        addr = self.addresses[0]
        if ":" in addr:
            addr = "[" + addr.replace("%", "%25") + "]"
        return f"{self.scheme}://{addr}:{self.port}"

    def url(self) -> str | None:
        """The upstream URL with the TXT path (`"http://192.168.1.20:32400/web"`), or None."""
        base = self.base_url()
        return None if base is None else base + self.path


def clean_path(value: str | None) -> str:
    """A TXT `path` as an upstream path: `"web/"` -> `"/web"`, `"/"` or junk -> ""."""
    if not value:
        return ""
    p = clean_text(value, 200).strip()
    if not p or "\\x" in p or any(c in p for c in ' ?#"<>`{}|^') or "://" in p:
        return ""
    if not p.startswith("/"):
        p = "/" + p
    return p.rstrip("/")


def sort_addresses(addresses: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Deduplicated, best first: IPv4, then global IPv6, then IPv4 link-local, then IPv6 link-local."""

    def rank(a: str) -> tuple[int, str]:
        try:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
        except ValueError:
            return (9, a)
        if ip.version == 4:
            return (2 if ip.is_link_local else 0, a)
        return (3 if ip.is_link_local else 1, a)

    return tuple(sorted(dict.fromkeys(addresses), key=rank))


def new_instance_id() -> str:
    """A random id for one running homeproxy, put in its adverts' TXT (`SELF_KEY`)."""
    return secrets.token_hex(8)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0].strip("[] "))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class SelfIdentity:
    """How this homeproxy recognises itself on the LAN: the instance id in its adverts' TXT, and
    the addresses and ports it listens on (for adverts without the id: an older homeproxy's, or a
    crashed run's still in the LAN's caches). Loopback addresses are always ours."""

    instance_id: str
    addresses: frozenset[str] = frozenset()
    """This machine's addresses as mDNS sees them (and the listen addresses), without zone ids."""
    ports: frozenset[int] = frozenset()
    """The ports the proxy listens on (plain HTTP, and HTTPS while a site has TLS)."""

    @classmethod
    def of(cls, instance_id: str, addresses: Iterable[str], ports: Iterable[int]) -> SelfIdentity:
        """An identity from address strings (normalised; wildcards and junk dropped) and ports."""
        ips = (_ip(a) for a in addresses)
        return cls(
            instance_id,
            frozenset(str(ip) for ip in ips if ip is not None and not ip.is_unspecified),
            frozenset(p for p in ports if p > 0),
        )

    def is_us(self, host: str, port: int) -> bool:
        """Does `host:port` (an address, or `localhost`) reach this homeproxy's own listener?"""
        if port not in self.ports:
            return False
        if host.lower().rstrip(".") == "localhost":
            return True
        ip = _ip(host)
        return ip is not None and (ip.is_loopback or str(ip) in self.addresses)

    def recognizes(self, service: DiscoveredService) -> bool:
        """Is `service` this homeproxy's own advert: our instance id in its TXT, or one of our
        addresses with one of our ports?"""
        if self.instance_id and any(k.lower() == SELF_KEY and v == self.instance_id for k, v in service.properties):
            return True
        return service.port > 0 and any(self.is_us(a, service.port) for a in service.addresses)
