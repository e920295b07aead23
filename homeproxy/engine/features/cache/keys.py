"""The cache key: what a stored response is filed under (site, scheme, host, target) and its Vary variant."""

from __future__ import annotations

from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from homeproxy.engine.exchange import Exchange

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

#: A response whose Vary names more request headers than this is not stored.
MAX_VARY_FIELDS = 32

Key = tuple[str, str, str, str]
"""(site, scheme, host, request target): the primary cache key."""
Variant = tuple[str | None, ...]
"""The normalised values of the Vary-nominated request headers (None: absent)."""
Slot = tuple[Key, Variant]


def vary_fields(headers: Headers) -> tuple[str, ...] | None:
    """The request headers a response varies on, lower-cased, sorted; None for `Vary: *`."""
    names: set[str] = set()
    for line in headers.getall("Vary", ()):
        for name in line.split(","):
            name = name.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def variant_of(fields: tuple[str, ...], headers: Headers) -> Variant:
    """The normalised values of `fields` in request `headers`: all lines of a field joined,
    whitespace around list members removed (so `1,2`, ` 1, 2 ` and two lines match)."""
    out: list[str | None] = []
    for name in fields:
        lines = headers.getall(name, ())
        if not lines:
            out.append(None)
        else:
            out.append(",".join(m.strip() for line in lines for m in line.split(",")))
    return tuple(out)


def _target(ex: Exchange) -> str:
    return ex.request.path_qs


def _scheme(ex: Exchange) -> str:
    proto = ex.headers.get("X-Forwarded-Proto") if ex.trusted_peer else None
    if proto:
        return proto.split(",", 1)[0].strip().lower() or ex.request.scheme
    return ex.request.scheme


def _split_url(url: str) -> tuple[str | None, str]:
    """(host or None, request target) of a purge argument."""
    if url.startswith("/"):
        return None, url
    parts = urlsplit(url if "://" in url else "http://" + url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return (parts.hostname or "").lower() or None, target
