"""`make_cache`: the per-site middleware that answers from, fills and invalidates the shared cache."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

from multidict import CIMultiDict

from homeproxy.config.model import CacheSettings, Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.features.cache.keys import (
    MAX_VARY_FIELDS,
    Headers,
    Key,
    Slot,
    _authority,
    _scheme,
    _target,
    unkeyed,
    variant_of,
    vary_fields,
)
from homeproxy.engine.features.cache.policy import (
    ERROR_STATUS,
    HEURISTIC_STATUS,
    SAFE_METHODS,
    UNDERSTOOD_STATUS,
    Directives,
    _Request,
    _request_directives,
    _stored_headers,
    age_value,
)
from homeproxy.engine.features.cache.revalidate import _validates, freshen, from_entry
from homeproxy.engine.features.cache.store import Entry, entry_size
from homeproxy.engine.features.cache.tee import _Tee
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply

HIT = "HIT"
"""Answered from the cache without asking the upstream."""
MISS = "MISS"
"""Nothing usable stored: the upstream answered (and the answer may have been stored)."""
REVALIDATED = "REVALIDATED"
"""A stored response was confirmed by the upstream (304) and answered from the cache."""
STALE = "STALE"
"""The upstream failed and a stale stored response was served instead."""
BYPASS = "BYPASS"
"""The request is not one a cache may answer (method, Range, no-store, ...); passed through."""

#: Request headers that make a GET something a cache must not answer or store.
_BYPASS_REQUEST = ("Range", "If-Match", "If-Unmodified-Since", "If-Range", "Upgrade")


def _snapshot(headers: Headers) -> Headers:
    """Request headers as they are now (inner middlewares may edit a private copy in place)."""
    return CIMultiDict(headers) if isinstance(headers, CIMultiDict) else headers


async def _dispose(reply: Reply) -> None:
    """Release a reply the cache will not send (its body, its upstream connection)."""
    body = reply.body
    if isinstance(body, bytes):
        reply.done(True)
        return
    with contextlib.suppress(Exception):
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    reply.done(False)


def _content_length(headers: Headers) -> int | None:
    value = headers.get("Content-Length", "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def make_cache(site: Site, ctx: FeatureContext) -> Middleware:
    """Serve and store `site`'s responses through the engine's shared cache."""
    store = ctx.cache
    if store is None:
        raise RuntimeError("the engine makes the shared cache before building a caching site's chain")
    settings: CacheSettings = site.cache
    name = site.name
    header = ctx.cache_header
    clock = ctx.clock
    site_limit = settings.max_bytes
    entry_limit = min(settings.max_entry_bytes, settings.max_bytes)
    default_ttl = settings.default_ttl
    store_cookies = settings.cookies
    stale_on_error = settings.stale_on_error
    # Forward auth hands the upstream who the user is (Remote-User & co.): an answer made for
    # that identity is as personal as one made for Authorization (RFC 9111 section 3.5).
    credentials = ("Authorization", *(site.auth.forward_headers if site.auth.mode == "forward" else ()))
    # A waiter never waits longer than the leader's own fetch may take to answer.
    wait_limit = site.connect_timeout + site.read_timeout
    store.set_site_limit(name, site_limit)

    def label(reply: Reply, ex: Exchange, status: str) -> Reply:
        ex.cache = status
        if header and not reply.sent:
            reply.headers[header] = status
        return reply

    async def cache(ex: Exchange, nxt: Handler) -> Reply:
        request = ex.request
        method = request.method
        if method != "GET" and method != "HEAD":
            return await other_method(ex, nxt)
        headers = ex.headers
        for name_ in _BYPASS_REQUEST:
            if name_ in headers:
                return label(await nxt(ex), ex, BYPASS)
        if "Upgrade" in request.headers or (method == "GET" and request.body_exists):
            return label(await nxt(ex), ex, BYPASS)
        req = _request_directives(headers)
        if req is None:  # request no-store
            return label(await nxt(ex), ex, BYPASS)
        authority = _authority(ex)
        if unkeyed(ex, authority) is not None:
            # The answer may be built from a header the key does not hold (X-Original-URL,
            # Forwarded, ...): neither answered from the cache nor stored (cache poisoning).
            return label(await nxt(ex), ex, BYPASS)
        key: Key = (name, _scheme(ex), authority, _target(ex))
        return await serve(ex, nxt, key, req, collapse=True)

    async def serve(ex: Exchange, nxt: Handler, key: Key, req: _Request, *, collapse: bool) -> Reply:
        headers = ex.headers
        entry = store.find(key, headers)
        now = clock()
        if entry is not None and usable(entry, req, now):
            return label(from_entry(ex, entry, now), ex, HIT)
        if req.only_if_cached:
            # RFC 9111 section 5.2.1.7: nothing usable stored means a 504, not a fetch.
            return label(error_reply(504, ex.request), ex, MISS)
        conditional = "If-None-Match" in headers or "If-Modified-Since" in headers
        revalidating = entry is not None and entry.validators
        can_lead = (ex.request.method == "GET" and not conditional) or revalidating
        if collapse:
            fields = entry.fields if entry is not None else store.fields(key)
            slot: Slot = (key, variant_of(fields, headers) if fields else ())
            if not store.solo(slot, now):
                flight = store.flight(slot)
                if flight is not None:
                    store.waiting += 1
                    try:
                        await asyncio.wait({flight}, timeout=wait_limit)
                    finally:
                        store.waiting -= 1
                    return await serve(ex, nxt, key, req, collapse=False)
                if can_lead:
                    fut = store.take_off(slot)
                    handed = False

                    def landed(shared: bool) -> None:
                        if shared:
                            store.unmark_solo(slot)
                        else:
                            store.mark_solo(slot, clock())
                        store.land(slot, fut)

                    try:
                        reply, handed = await fetch(ex, nxt, key, req, entry, landed)
                        return reply
                    finally:
                        if not handed:
                            landed(False)
        reply, _ = await fetch(ex, nxt, key, req, entry, None)
        return reply

    def usable(entry: Entry, req: _Request, now: float) -> bool:
        """May `entry` answer this request without asking the upstream (RFC 9111 section 4.2)?"""
        if entry.no_cache or req.no_cache:
            return False
        age = entry.current_age(now)
        if req.max_age is not None and age > req.max_age:
            return False
        left = entry.lifetime - age
        if req.min_fresh is not None and left < req.min_fresh:
            return False
        if left > 0:
            return True
        # Stale: only with the client's max-stale, and never against must-revalidate & co.
        if req.max_stale is None or entry.no_stale:
            return False
        return req.max_stale < 0 or -left <= req.max_stale

    def stale_ok(entry: Entry, req: _Request, now: float) -> bool:
        """May `entry` stand in for an upstream error (RFC 5861 stale-if-error, `stale_on_error`)?"""
        if entry.no_stale:
            return False
        staleness = entry.current_age(now) - entry.lifetime
        allowance = max(entry.stale_if_error, req.stale_if_error, stale_on_error if stale_on_error > 0 else -1)
        return allowance >= 0 and staleness <= allowance

    async def fetch(
        ex: Exchange,
        nxt: Handler,
        key: Key,
        req: _Request,
        entry: Entry | None,
        landed: Callable[[bool], None] | None,
    ) -> tuple[Reply, bool]:
        """Ask the upstream (conditionally if `entry` has validators) and store what may be.
        Returns the reply and whether `landed` was handed on (to a streaming tee)."""
        request_headers = _snapshot(ex.headers)
        since = store.epoch
        revalidate = entry is not None and entry.validators
        if entry is not None and revalidate:
            out = ex.edit_headers()
            # Our validators replace the client's; its own condition is evaluated on our answer.
            out.popall("If-None-Match", None)
            out.popall("If-Modified-Since", None)
            if entry.etag is not None:
                out["If-None-Match"] = entry.etag if entry.etag[-1:] == '"' else f'"{entry.etag}"'
            if entry.last_modified_raw is not None and entry.last_modified is not None:
                out["If-Modified-Since"] = entry.last_modified_raw
        request_time = clock()
        reply = await nxt(ex)
        response_time = clock()
        if reply.sent:
            return label(reply, ex, BYPASS), False
        if entry is not None and revalidate and reply.status == 304:
            if _validates(entry, reply.headers):
                merged = freshen(entry, reply.headers, request_time, response_time, store=store, header=header)
                await _dispose(reply)
                if landed is not None:
                    landed(True)
                answer = from_entry(ex, entry, clock(), client_request=request_headers)
                # The 304's own Set-Cookie etc. go to this client, not into the entry.
                for name_, value in merged:
                    answer.headers.add(name_, value)
                return label(answer, ex, REVALIDATED), False
            # A 304 for some other representation (RFC 9111 4.3.4): ask again, unconditionally.
            await _dispose(reply)
            store.remove(entry)
            out = ex.edit_headers()
            out.popall("If-None-Match", None)
            out.popall("If-Modified-Since", None)
            entry = None
            request_time = clock()
            reply = await nxt(ex)
            response_time = clock()
        if entry is not None and reply.status in ERROR_STATUS and stale_ok(entry, req, response_time):
            await _dispose(reply)
            return label(from_entry(ex, entry, clock(), client_request=request_headers), ex, STALE), False
        if ex.request.method != "GET":
            return label(reply, ex, MISS), False
        new = storable(ex, key, reply, request_headers, request_time, response_time)
        body = reply.body
        expected = _content_length(reply.headers) if not isinstance(body, bytes) else None
        if new is None or (expected is not None and expected > entry_limit):
            if entry is not None and reply.status != 304 and reply.status not in ERROR_STATUS:
                store.remove(entry)  # outdated by an answer we may not keep
            return label(reply, ex, MISS), False
        label(reply, ex, MISS)

        def commit(data: bytes) -> None:
            assert new is not None
            if new.status != 204:
                new.headers["Content-Length"] = str(len(data))
            new.body = data
            new.size = entry_size(new.headers, data, key, new.variant)
            kept = store.put(new, site_limit=site_limit, since=since)
            if landed is not None:
                # Waiters can use it only if it needs no validation for a plain request.
                landed(kept and new.lifetime > 0 and not new.no_cache)

        if isinstance(body, bytes):
            commit(body)
            return reply, False

        def abandon() -> None:
            if landed is not None:
                landed(False)

        reply.body = _Tee(body, limit=entry_limit, expected=expected, commit=commit, abandon=abandon)
        return reply, landed is not None

    def storable(
        ex: Exchange,
        key: Key,
        reply: Reply,
        request_headers: Headers,
        request_time: float,
        response_time: float,
    ) -> Entry | None:
        """The entry to store for `reply` (headers copied now), or None if a shared cache may not."""
        status = reply.status
        if status < 200 or status in (206, 304):
            return None
        h = reply.headers
        cc = Directives(h.getall("Cache-Control", ()))
        if "must-understand" in cc:
            if status not in UNDERSTOOD_STATUS:
                return None
        elif "no-store" in cc:
            return None
        if cc.unqualified("private"):
            return None
        # RFC 9111 section 3.5: the upstream saw credentials; only an explicit yes shares the answer.
        if any(c in request_headers for c in credentials) and not (
            "public" in cc or "s-maxage" in cc or "must-revalidate" in cc
        ):
            return None
        if not store_cookies and ("Set-Cookie" in h or "Set-Cookie2" in h):
            return None
        fields = vary_fields(h)
        if fields is None or len(fields) > MAX_VARY_FIELDS:
            return None
        explicit = "s-maxage" in cc or "max-age" in cc or "Expires" in h
        validator = "ETag" in h or "Last-Modified" in h
        if not explicit and not (validator and (status in HEURISTIC_STATUS or "public" in cc)):
            return None
        if isinstance(reply.body, bytes):
            if len(reply.body) > entry_limit:
                return None
            declared = _content_length(h)
            if declared is not None and declared != len(reply.body):
                return None  # an upstream that lies about its length is not worth keeping
        stored = _stored_headers(h, cc, header)
        entry = Entry(
            key=key,
            variant=variant_of(fields, request_headers) if fields else (),
            fields=fields,
            status=status,
            reason=reply.reason,
            headers=stored,
            body=b"",
            request_time=request_time,
            response_time=response_time,
            age=age_value(h),
            default_ttl=default_ttl,
        )
        entry.derive()
        # Never reusable without a full fetch: kept only if it may stand in for an error.
        refetch_only = not entry.validators and (entry.lifetime <= 0 or entry.no_cache)
        if refetch_only and (entry.no_stale or (entry.stale_if_error < 0 and stale_on_error <= 0)):
            return None
        return entry

    async def other_method(ex: Exchange, nxt: Handler) -> Reply:
        method = ex.request.method
        reply = await nxt(ex)
        if method not in SAFE_METHODS and 200 <= reply.status < 400 and not reply.sent:
            # RFC 9111 section 4.4: the target and same-host Location/Content-Location go.
            scheme = _scheme(ex)
            target = _target(ex)
            authority = _authority(ex)
            # The URL under the Host as sent, and under the bare host name (the usual spelling).
            for spelling in {authority, ex.host}:
                store.invalidate((name, scheme, spelling, target))
            base = f"{scheme}://{ex.host}{target}"
            for field_name in ("Location", "Content-Location"):
                value = reply.headers.get(field_name)
                if not value:
                    continue
                try:
                    parts = urlsplit(urljoin(base, value.strip()))
                    host = (parts.hostname or "").lower()
                    netloc = parts.netloc.rpartition("@")[2].lower()
                except ValueError:
                    continue
                if host == ex.host:
                    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
                    for spelling in {host, netloc or host}:
                        store.invalidate((name, parts.scheme or scheme, spelling, path))
        return label(reply, ex, BYPASS)

    return cache
