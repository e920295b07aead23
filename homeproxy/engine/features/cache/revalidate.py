"""Conditional requests: entity tags, validating and merging a 304 into an entry, answers made from an entry."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features.cache.keys import Headers
from homeproxy.engine.features.cache.policy import (
    _NOT_STORED,
    Directives,
    _dropped_fields,
    _next_element,
    age_value,
    http_date,
    parse_http_date,
)
from homeproxy.engine.features.cache.store import Entry, SharedCache
from homeproxy.engine.reply import Reply

#: Never updated from a 304 (RFC 9111 section 3.2): they describe the stored body.
_NOT_UPDATED = frozenset({"content-length", "content-encoding", "content-range", "transfer-encoding", "age"})
#: What a 304 from the cache carries (RFC 9110 section 15.4.5).
_NOT_MODIFIED_FIELDS = ("Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Vary")


def _opaque(tag: str) -> str:
    """An entity-tag for weak comparison: no W/ flag, no quotes (lenient with odd upstreams)."""
    tag = tag.strip()
    if tag[:2] in ("W/", "w/"):
        tag = tag[2:]
    if len(tag) >= 2 and tag[0] == '"' and tag[-1] == '"':
        tag = tag[1:-1]
    return tag


def _etag_list(value: str) -> list[str]:
    tags: list[str] = []
    i, n = 0, len(value)
    while i < n and len(tags) < 64:
        j = _next_element(value, i)
        tag = value[i:j].strip()
        if tag:
            tags.append(tag)
        i = j + 1
    return tags


def etag_matches(stored: str, if_none_match: Iterable[str]) -> bool:
    """If-None-Match against a stored ETag, by weak comparison (RFC 9110 section 13.1.2)."""
    mine = _opaque(stored)
    for line in if_none_match:
        for tag in _etag_list(line):
            if tag == "*" or tag == stored or _opaque(tag) == mine:
                return True
    return False


def _validates(entry: Entry, update: CIMultiDict[str]) -> bool:
    """Whether a 304 is about `entry` (RFC 9111 section 4.3.4, comparing tags weakly)."""
    etag = update.get("ETag")
    if etag is not None and etag.strip():
        return entry.etag is not None and _opaque(etag) == _opaque(entry.etag)
    modified = update.get("Last-Modified")
    if modified is not None and entry.last_modified_raw is not None:
        return parse_http_date(modified) == entry.last_modified
    return True


def _not_modified(entry: Entry, request: Headers) -> bool:
    """The client's If-None-Match (or, without one, If-Modified-Since) holds for `entry`."""
    inm = request.getall("If-None-Match", ())
    if inm:
        return entry.etag is not None and etag_matches(entry.etag, inm)
    ims = request.get("If-Modified-Since")
    if ims is None:
        return False
    since = parse_http_date(ims)
    if since is None:
        return False
    # RFC 9111 section 4.3.2: without Last-Modified, the stored Date stands in.
    modified = entry.last_modified if entry.last_modified is not None else entry.date
    return modified <= since


def freshen(
    entry: Entry,
    update: CIMultiDict[str],
    request_time: float,
    response_time: float,
    *,
    store: SharedCache,
    header: str,
) -> list[tuple[str, str]]:
    """Update `entry` from a 304 (RFC 9111 section 3.2); returns the fields for this client
    only (Set-Cookie and friends that are never stored). `header` (the site's cache-status
    header) is never stored; `store` recounts the entry's size."""
    stored = entry.headers
    for_client: list[tuple[str, str]] = []
    incoming: dict[str, list[tuple[str, str]]] = {}
    for k, v in update.items():
        incoming.setdefault(k.lower(), []).append((k, v))
    for lower, pairs in incoming.items():
        if lower in _NOT_UPDATED or (header and lower == header.lower()):
            continue
        if lower in _NOT_STORED:
            for_client.extend(pairs)
            continue
        if lower == "etag" and entry.etag is not None and entry.etag[:2] in ("W/", "w/"):
            continue  # our variant's weak tag (e.g. compressed) stays weak
        stored.popall(pairs[0][0], None)
        for k, v in pairs:
            stored.add(k, v)
    cc = Directives(stored.getall("Cache-Control", ()))
    for f in _dropped_fields(cc):
        stored.popall(f, None)
    entry.request_time = request_time
    entry.response_time = response_time
    entry.age = age_value(update)
    if "Date" not in update:
        stored["Date"] = http_date(response_time)
    entry.derive()
    store.resized(entry)
    return for_client


def from_entry(ex: Exchange, entry: Entry, now: float, *, client_request: Headers | None = None) -> Reply:
    """A reply made from `entry`: the stored response with its current Age, or a 304
    if the client's own conditional matches (RFC 9111 section 4.3.2)."""
    h = client_request if client_request is not None else ex.headers
    age = str(int(entry.current_age(now)))
    if 200 <= entry.status < 300 and _not_modified(entry, h):
        out: CIMultiDict[str] = CIMultiDict()
        for field_name in _NOT_MODIFIED_FIELDS:
            for value in entry.headers.getall(field_name, ()):
                out.add(field_name, value)
        if entry.etag is None and entry.last_modified_raw is not None:
            out["Last-Modified"] = entry.last_modified_raw
        out["Age"] = age
        return Reply(304, out, b"")
    out = entry.headers.copy()
    out["Age"] = age
    return Reply(entry.status, out, entry.body, reason=entry.reason)
