"""What zeroconf resolved, made safe to keep: a service's name and instance, and its `DiscoveredService`."""

from __future__ import annotations

from zeroconf import BadTypeInNameException, ServiceInfo
from zeroconf.asyncio import AsyncServiceInfo

from homeproxy.discovery.service import MAX_PROPERTIES, DiscoveredService, clean_path, clean_text, sort_addresses

MAX_ADDRESSES = 16
"""Most addresses kept per service."""
MAX_KEY = 64
"""Longest TXT key kept (RFC 6763 section 6.4 recommends at most 9 characters)."""


def service_name(type_: str, name: str) -> tuple[str, str]:
    """`(name, instance)` as the directory keeps them: the instance part cleaned
    (`clean_text`) and the type appended as browsed (normalised)."""
    suffix = "." + type_
    raw = name[: -len(suffix)] if name.lower().endswith(suffix.lower()) else name.rstrip(".")
    instance = clean_text(raw)
    return f"{instance}{suffix}", instance


def service_from_info(info: ServiceInfo, type_: str, name: str, *, seen: float) -> DiscoveredService:
    """A `DiscoveredService` from what zeroconf resolved (complete or not): every string cleaned,
    properties capped at `MAX_PROPERTIES`, a bare `{'': None}` TXT ignored, addresses best first."""
    full, instance = service_name(type_, name)
    props: list[tuple[str, str | None]] = []
    seen_keys: set[str] = set()
    for k, v in info.properties.items():
        if not k:  # an empty TXT (one zero-length string) decodes as {b'': None}
            continue
        key = clean_text(k, MAX_KEY)
        if key.lower() in seen_keys:
            continue
        seen_keys.add(key.lower())
        props.append((key, None if v is None else clean_text(v)))
        if len(props) >= MAX_PROPERTIES:
            break
    path = clean_path(next((v for k, v in props if k.lower() == "path"), None))
    addresses = sort_addresses(info.parsed_scoped_addresses())[:MAX_ADDRESSES]
    return DiscoveredService(
        name=full,
        instance=instance,
        type=type_,
        host=clean_text(info.server or ""),
        addresses=addresses,
        port=info.port or 0,
        properties=tuple(props),
        path=path,
        seen=seen,
    )


def _service_info(type_: str, name: str) -> AsyncServiceInfo:
    """An `AsyncServiceInfo` to resolve `name`, even one zeroconf's name check refuses
    (control characters, an instance over 63 bytes): such names exist on real networks,
    and the record lookups themselves work with any name."""
    try:
        return AsyncServiceInfo(type_, name)
    except BadTypeInNameException:
        info = AsyncServiceInfo(type_, f"unnamed.{type_}")
        info.name = name
        return info
