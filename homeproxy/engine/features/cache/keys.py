"""The cache key: what a stored response is filed under (site, scheme, host, target) and its Vary
variant, and `unkeyed()`: the request headers that could change an answer but are not in the key."""

from __future__ import annotations

from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.routing import normalize_host

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

#: A response whose Vary names more request headers than this is not stored.
MAX_VARY_FIELDS = 32

#: Request headers that tell an application another host, scheme, port, path prefix, URL or
#: method than the request's own (Symfony and Laminas read X-Original-URL and X-Rewrite-URL,
#: Rails and Django X-Forwarded-Host & co., many frameworks X-HTTP-Method-Override, RFC 7239
#: defines Forwarded). homeproxy passes them on as the client sent them and does not key on
#: them: an answer built from them ("cache poisoning") must not be stored for others.
_UNKEYED = frozenset(
    {
        "forwarded",
        "x-host",
        "x-http-host-override",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "front-end-https",
        "x-url-scheme",
    }
)
_UNKEYED_PREFIXES = ("x-forwarded-", "x-original-", "x-rewrite-")
#: Set by homeproxy itself from the connection; from a trusted proxy, its Proto is keyed (the
#: scheme), its Host is checked against Host, its For and Port are believed.
_OWN = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"})

Key = tuple[str, str, str, str]
"""(site, scheme, authority, request target): the primary cache key. The authority is the Host
header as the upstream gets it, in lower case (`app.test`, `app.test:8443`)."""
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


def _authority(ex: Exchange) -> str:
    """The Host header as the upstream gets it (X-Forwarded-Host quotes it as it is), lower case.

    Not the normalised host the request was routed by: `app.test:1337` and `app.test.` route
    like `app.test`, but an upstream that builds links from X-Forwarded-Host would build
    different ones, so they are different entries. Purge and invalidation match by host name."""
    return ex.headers.get("Host", "").strip().lower() or ex.host


def hostname(authority: str) -> str:
    """The host name of a key's authority (`app.test:8443` -> `app.test`)."""
    return normalize_host(authority)


def unkeyed(ex: Exchange, authority: str) -> str | None:
    """The first request header that goes to the upstream as the client sent it, may change the
    answer, and is not in the cache key (see `_UNKEYED`); None if there is none.

    A header a site's own `headers.request` rules set (or removed) is the owner's, not the
    client's, and does not count."""
    sent = ex.headers
    client = ex.request.headers
    for name in sent:
        lower = name.lower()
        risky = lower in _UNKEYED or (lower.startswith(_UNKEYED_PREFIXES) and lower not in _OWN)
        if risky and (sent is client or sent.getall(name) == client.getall(name, [])):
            return name
    if ex.trusted_peer:
        # A trusted proxy's X-Forwarded-Host goes on as it is: keyed only when it is Host.
        forwarded_host = sent.getall("X-Forwarded-Host", ())
        if forwarded_host and (len(forwarded_host) > 1 or forwarded_host[0].strip().lower() != authority):
            return "X-Forwarded-Host"
    return None


def _scheme(ex: Exchange) -> str:
    proto = ex.headers.get("X-Forwarded-Proto") if ex.trusted_peer else None
    if proto:
        return proto.split(",", 1)[0].strip().lower() or ex.request.scheme
    return ex.request.scheme


def _split_url(url: str) -> tuple[str | None, str]:
    """(host name or None, request target) of a purge argument."""
    if url.startswith("/"):
        return None, url
    parts = urlsplit(url if "://" in url else "http://" + url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return (parts.hostname or "").lower() or None, target
