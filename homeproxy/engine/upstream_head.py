"""The request head a `Forwarder` sends upstream: the target, the client's headers kept, Host and X-Forwarded-*, Via."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from yarl import URL

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.hop import HOP_BY_HOP, connection_tokens, forwarded_for
from homeproxy.engine.paths import upstream_target
from homeproxy.engine.request import Request
from homeproxy.engine.upstream_exchange import Body

if TYPE_CHECKING:
    from homeproxy.engine.upstream import Forwarder

#: Request headers that homeproxy sets itself (the client's copies are not passed on as they are).
_FORWARDING = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip", "expect"}
)
_DROP = HOP_BY_HOP | _FORWARDING | {"host", "content-length"}
VIA_TOKEN = f"homeproxy-{secrets.token_hex(4)}"
"""This process's name in the `Via` header (RFC 9110 section 7.6.3) it adds upstream; a request
that comes back with it has looped through homeproxy (its own address as an upstream)."""
VIA = f"Via: 1.1 {VIA_TOKEN}"
#: Methods whose requests carry a body by definition: without one, say Content-Length: 0.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def target(fw: Forwarder, request: Request) -> str:
    """The request target sent upstream: the raw path and query, with the route's prefix
    replaced (`strip_prefix`, `rewrite`); for a path with dot segments, its normal form
    (`paths.py`, which also cuts prefixes spelled otherwise, such as `/%61pi/`)."""
    target = request.path_qs
    rewrite = fw.rewrite
    if rewrite is None:
        path = request.path
        if "%" in path or "/." in path or "\\" in path:  # may have dot segments
            return upstream_target(target, path, "", None)
        return target
    path = request.path
    if "%" in path or "/." in path or "//" in path or "\\" in path:
        return upstream_target(target, path, fw.prefix, rewrite)
    prefix = fw.prefix
    if target.startswith(prefix):
        target = target[len(prefix) :]
        target = rewrite + (target if target.startswith("/") else "/" + target)
    return target


def _kept(ex: Exchange) -> list[tuple[str, str]]:
    """The client's headers that go on: all but hop-by-hop ones and those homeproxy sets."""
    src = ex.headers
    drop = _DROP | connection_tokens(src) if "Connection" in src else _DROP
    return [(name, value) for name, value in src.items() if name.lower() not in drop]


def _forwarding(fw: Forwarder, ex: Exchange, authority: str) -> str:
    """Host and the X-Forwarded-* / X-Real-IP header lines homeproxy sets (in one format: this
    is on every request's path)."""
    request = ex.request
    src = ex.headers
    host = src.get("Host", authority) if fw.site.preserve_host else authority
    peer = request.remote
    if not ex.trusted_peer:  # the common case: nothing the client says about itself is believed
        return (
            f"Host: {host}\r\nX-Forwarded-For: {peer}\r\nX-Forwarded-Proto: {request.scheme}\r\n"
            f"X-Forwarded-Host: {src.get('Host') or ''}\r\nX-Forwarded-Port: {request.local_port}\r\n"
            f"X-Real-IP: {ex.client}"
        )
    xff = forwarded_for(src)
    return (
        f"Host: {host}\r\nX-Forwarded-For: {f'{xff}, {peer}' if xff else peer}\r\n"
        f"X-Forwarded-Proto: {src.get('X-Forwarded-Proto') or request.scheme}\r\n"
        f"X-Forwarded-Host: {src.get('X-Forwarded-Host') or src.get('Host') or ''}\r\n"
        f"X-Forwarded-Port: {src.get('X-Forwarded-Port') or request.local_port}\r\n"
        f"X-Real-IP: {ex.client}"
    )


def framed_head(fw: Forwarder, ex: Exchange, base: URL, base_path: str, body: Body) -> bytes:
    """The request line and headers, as bytes, with the body's framing."""
    if body.data is not None:
        framing = [f"Content-Length: {len(body.data)}"]
    elif body.streamed:
        framing = ["Transfer-Encoding: chunked" if body.length is None else f"Content-Length: {body.length}"]
    else:
        framing = ["Content-Length: 0"] if ex.request.method in _BODY_METHODS else []
    return head(fw, ex, base, base_path, framing)


def head(fw: Forwarder, ex: Exchange, base: URL, base_path: str, extra: list[str]) -> bytes:
    """The request line and headers sent to `base`, with `extra` header lines last (the body's
    framing, or a WebSocket handshake's Connection and Upgrade)."""
    request = ex.request
    lines = [f"{request.method} {base_path}{target(fw, request)} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in _kept(ex)]
    lines.append(_forwarding(fw, ex, base.raw_authority))
    lines.append(VIA)
    lines += extra
    lines.append("\r\n")
    # The client's header bytes were decoded as UTF-8 with surrogateescape: the same bytes go on.
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
