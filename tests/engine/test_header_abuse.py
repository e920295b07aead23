"""Hostile request heads: sizes, bytes that do not belong in a head, Host games, Connection games.

The real engine on loopback, raw sockets for the client, `RecordingUpstream`s behind it (one per
site, so a test sees which site a request reached and the exact bytes it got). What must hold:
an oversized head is a 414 or 431 (limits from `[server]`), a malformed one a 400, and neither
reaches an upstream; a request reaches the site its target's authority names (RFC 9112 section
3.2.2), with a Host header that says the same; a `Connection` header can remove what the client
sent, never what homeproxy sets (X-Forwarded-*, X-Real-IP, Host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.engine.conftest import Proxy, StartProxy, StartRawBackend, make_config, record, site
from tests.engine.recording import RecordingUpstream
from tests.engine.test_smuggling import exchange, still_serves


@dataclass
class Sites:
    """Two sites (s.lan and other.lan), each with its own recording upstream."""

    proxy: Proxy
    s: RecordingUpstream
    other: RecordingUpstream

    @property
    def port(self) -> int:
        return self.proxy.port


async def start(proxy: StartProxy, raw_backend: StartRawBackend, **server: Any) -> Sites:
    s, other = RecordingUpstream(), RecordingUpstream()
    s_url, other_url = (await raw_backend(s)).url, (await raw_backend(other)).url
    p = await proxy(make_config(site("s", ["s.lan"], [s_url]), site("other", ["other.lan"], [other_url]), **server))
    return Sites(p, s, other)


def get(target: bytes = b"/", *lines: bytes) -> bytes:
    """A GET with these header lines, and `Connection: close` unless they say otherwise."""
    if not any(line.lower().startswith(b"connection:") for line in lines):
        lines += (b"Connection: close",)
    return b"GET %s HTTP/1.1\r\n%s\r\n" % (target, b"".join(line + b"\r\n" for line in lines))


# --- sizes ------------------------------------------------------------------------------------

SMALL_LIMITS = {"max_request_line": 1024, "max_header_size": "4KiB", "max_headers": 20}
HOST = b"Host: s.lan"

SIZES = {
    "target-at-the-limit": (get(b"/" + b"a" * 1023, HOST), 200),
    "target-over-the-limit": (get(b"/" + b"a" * 1024, HOST), 414),
    "header-line-over-the-limit": (get(b"/", HOST, b"X-Long: " + b"a" * 1020), 431),
    "header-block-over-the-limit": (get(b"/", HOST, *(b"X-H%d: " % i + b"a" * 900 for i in range(5))), 431),
    # 20 lines with Host and Connection
    "headers-at-the-count": (get(b"/", HOST, *(b"X-H%d: v" % i for i in range(18))), 200),
    "headers-over-the-count": (get(b"/", HOST, *(b"X-H%d: v" % i for i in range(19))), 431),
}


@pytest.mark.parametrize(("request_bytes", "status"), list(SIZES.values()), ids=list(SIZES))
async def test_head_limits_come_from_the_server_settings(
    proxy: StartProxy, raw_backend: StartRawBackend, request_bytes: bytes, status: int
) -> None:
    sites = await start(proxy, raw_backend, **SMALL_LIMITS)

    resp, _ = await exchange(sites.port, request_bytes)

    assert resp is not None and resp.status == status
    assert len(sites.s.complete()) == (1 if status == 200 else 0)


async def test_no_header_count_limit_when_max_headers_is_zero(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    sites = await start(proxy, raw_backend, max_headers=0)

    resp, _ = await exchange(sites.port, get(b"/", HOST, *(b"X-H%d: v" % i for i in range(1000))))

    assert resp is not None and resp.status == 200
    [got] = sites.s.requests()
    assert len(got.all("X-H999")) == 1


async def test_thousands_of_headers_are_a_431_and_the_engine_keeps_serving(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    """5,000 header lines in one write (default limits: 200 lines, 64 KiB)."""
    up = RecordingUpstream()
    p = await proxy(make_config(site("s", ["s.lan"], [(await raw_backend(up)).url])))
    events = record(p)

    resp, after = await exchange(p.port, get(b"/", HOST, *(b"X-%d: v" % i for i in range(5000))))

    assert resp is not None and (resp.status, after) == (431, b"")
    assert (await events.wait(1))[0].status == 431
    assert up.raw == b""
    await still_serves(p, up)


async def test_a_header_line_that_never_ends_is_a_431(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    """httptools keeps a header line until its end: one without an end is cut at the head's limit."""
    sites = await start(proxy, raw_backend, **SMALL_LIMITS)
    events = record(sites.proxy)

    resp, _ = await exchange(sites.port, b"GET / HTTP/1.1\r\nHost: s.lan\r\nX-Endless: " + b"a" * 200_000)

    # The 431 may be lost to a reset: the client was still sending when the proxy closed.
    assert resp is None or resp.status == 431
    [event] = await events.wait(1)
    assert event.status == 431
    assert sites.s.raw == b""


# --- bytes that do not belong in a head ---------------------------------------------------------

MALFORMED = {
    "nul-in-value": get(b"/", HOST, b"X-A: a\x00b"),
    "nul-in-name": get(b"/", HOST, b"X-\x00A: b"),
    "nul-in-host": get(b"/", b"Host: s.l\x00an"),
    "lf-in-value": get(b"/", HOST, b"X-A: a\nX-Injected: 1"),
    "control-char-in-value": get(b"/", HOST, b"X-A: a\x01b"),
    "del-in-value": get(b"/", HOST, b"X-A: a\x7fb"),
    "non-ascii-in-name": get(b"/", HOST, b"X-\xc3\xa9: b"),
    "non-ascii-in-path": get(b"/caf\xc3\xa9", HOST),
    "non-ascii-in-method": b"G\xc3\xa9T / HTTP/1.1\r\nHost: s.lan\r\n\r\n",
    "lower-case-method": b"get / HTTP/1.1\r\nHost: s.lan\r\n\r\n",
    "nul-in-path": get(b"/a\x00b", HOST),
    "two-host-headers": get(b"/", HOST, b"Host: other.lan"),
    "two-host-headers-other-case": get(b"/", b"host: other.lan", HOST),
    "no-host-in-http11": get(b"/", b"X-A: b"),
    "target-without-slash": get(b"s.lan/x", HOST),
    "http-2.0-request-line": b"GET / HTTP/2.0\r\nHost: s.lan\r\n\r\n",
    "http-0.9-request-line": b"GET / HTTP/0.9\r\nHost: s.lan\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_heads_are_refused_and_reach_no_upstream(
    proxy: StartProxy, raw_backend: StartRawBackend, request_bytes: bytes
) -> None:
    sites = await start(proxy, raw_backend)

    resp, after = await exchange(sites.port, request_bytes)

    assert resp is not None and resp.status in (400, 505)
    assert after == b""
    assert (sites.s.raw, sites.other.raw) == (b"", b"")


async def test_a_version_other_than_1x_is_a_505(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    """RFC 9112 section 2.3: only HTTP/1.0 and 1.1 are framed the way homeproxy frames them."""
    sites = await start(proxy, raw_backend)

    for version in (b"2.0", b"0.9"):
        resp, _ = await exchange(sites.port, b"GET / HTTP/%s\r\nHost: s.lan\r\n\r\n" % version)
        assert resp is not None and resp.status == 505, version


async def test_non_ascii_header_values_are_passed_byte_exact(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    sites = await start(proxy, raw_backend)

    resp, _ = await exchange(
        sites.port, get(b"/", HOST, b"X-Utf8: caf\xc3\xa9", b"X-Latin1: caf\xe9", b"X-Obs: \x80\xff")
    )

    assert resp is not None and resp.status == 200
    [raw] = sites.s.connections
    for line in (b"X-Utf8: caf\xc3\xa9\r\n", b"X-Latin1: caf\xe9\r\n", b"X-Obs: \x80\xff\r\n"):
        assert line in raw


# --- which site, and which Host ----------------------------------------------------------------

ROUTED = {
    # (target, Host header or None, site that must get it or None for homeproxy's 404, Host upstream)
    "absolute-form-beats-host": (b"http://s.lan/x", b"other.lan", "s", "s.lan"),
    "absolute-form-other-way": (b"http://other.lan/x", b"s.lan", "other", "other.lan"),
    "absolute-form-unknown-host": (b"http://nowhere.lan/x", b"s.lan", None, None),
    "absolute-form-userinfo": (b"http://other.lan@s.lan/x", b"other.lan", "s", "s.lan"),
    "absolute-form-port-dot-case": (b"http://S.LAN.:99/x", b"other.lan", "s", "S.LAN.:99"),
    "absolute-form-no-path": (b"http://s.lan?q=1", b"other.lan", "s", "s.lan"),
    "absolute-form-empty-authority": (b"http:///x", b"s.lan", None, None),
    "absolute-form-without-host-header": (b"http://s.lan/x", None, "s", "s.lan"),
    "host-with-port": (b"/x", b"s.lan:8080", "s", "s.lan:8080"),
    "host-trailing-dot": (b"/x", b"s.lan.", "s", "s.lan."),
    "host-upper-case": (b"/x", b"S.Lan", "s", "S.Lan"),
    "host-ipv6-literal": (b"/x", b"[::1]:8080", None, None),
    "host-ipv6-unclosed": (b"/x", b"[::1", None, None),
    "host-with-userinfo": (b"/x", b"s.lan@other.lan", None, None),
    "host-list": (b"/x", b"s.lan, other.lan", None, None),
    "host-with-path": (b"/x", b"s.lan/../other.lan", None, None),
    "host-empty": (b"/x", b"", None, None),
}


@pytest.mark.parametrize(("target", "host", "reached", "upstream_host"), list(ROUTED.values()), ids=list(ROUTED))
async def test_the_site_is_the_one_the_authority_names_and_the_upstream_hears_the_same(
    proxy: StartProxy,
    raw_backend: StartRawBackend,
    target: bytes,
    host: bytes | None,
    reached: str | None,
    upstream_host: str | None,
) -> None:
    sites = await start(proxy, raw_backend)

    resp, _ = await exchange(sites.port, get(target, *([b"Host: " + host] if host is not None else [])))

    assert resp is not None
    if reached is None:
        assert resp.status == 404
        assert (sites.s.raw, sites.other.raw) == (b"", b"")
        return
    assert resp.status == 200
    hit, missed = (sites.s, sites.other) if reached == "s" else (sites.other, sites.s)
    assert missed.raw == b""
    [got] = hit.requests()
    assert got.target.startswith("/")  # origin-form upstream, whatever form the client used
    assert got.all("Host") == [upstream_host]
    assert got.get("X-Forwarded-Host") == upstream_host


@pytest.mark.parametrize(
    ("path", "route", "upstream_target"),
    [(b"/api%00/x", False, "/api%00/x"), (b"/api/%00x", True, "/%00x"), (b"/a%00/../api/x", True, "/x")],
    ids=["nul-after-prefix-text", "nul-inside-route", "nul-segment-climbed-out"],
)
async def test_an_encoded_nul_in_the_path_stays_encoded_and_does_not_move_the_route(
    proxy: StartProxy, raw_backend: StartRawBackend, path: bytes, route: bool, upstream_target: str
) -> None:
    main, api = RecordingUpstream(), RecordingUpstream()
    routes = [{"path": "/api/", "upstreams": [(await raw_backend(api)).url], "strip_prefix": True}]
    p = await proxy(make_config(site("s", ["s.lan"], [(await raw_backend(main)).url], routes=routes)))

    resp, _ = await exchange(p.port, get(path, HOST))

    assert resp is not None and resp.status == 200
    hit, missed = (api, main) if route else (main, api)
    assert missed.raw == b""
    [got] = hit.requests()
    assert got.target == upstream_target
    assert b"\x00" not in hit.raw


# --- Connection naming what homeproxy sets ---------------------------------------------------


@pytest.mark.parametrize(
    "named",
    [
        b"close, X-Forwarded-For",
        b"close, X-Real-IP",
        b"close, X-Forwarded-Proto",
        b"close, X-Forwarded-Host, X-Forwarded-Port",
        b"close, Host",
        b"X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, Host, close",
    ],
)
async def test_connection_cannot_strip_the_headers_homeproxy_sets(
    proxy: StartProxy, raw_backend: StartRawBackend, named: bytes
) -> None:
    """Hop-by-hop removal runs on what the client sent; homeproxy's own headers come after it."""
    sites = await start(proxy, raw_backend)

    resp, _ = await exchange(
        sites.port,
        get(b"/x", HOST, b"Connection: " + named, b"X-Forwarded-For: 6.6.6.6", b"X-Real-IP: 6.6.6.6"),
    )

    assert resp is not None and resp.status == 200
    [got] = sites.s.requests()
    assert got.all("Host") == ["s.lan"]
    assert got.all("X-Forwarded-For") == ["127.0.0.1"]  # the client's own claim is not believed
    assert got.all("X-Real-IP") == ["127.0.0.1"]
    assert got.all("X-Forwarded-Proto") == ["http"]
    assert got.all("X-Forwarded-Host") == ["s.lan"]
    assert len(got.all("X-Forwarded-Port")) == 1
    assert got.get("Connection") is None


async def test_authorization_named_in_connection_is_removed_as_hop_by_hop(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    """RFC 9110 section 7.6.1: a field named in Connection is for the next hop only, so homeproxy
    drops it; the credentials go nowhere further (never to another upstream or into a header of
    homeproxy's). Without the Connection token they are passed on untouched."""
    sites = await start(proxy, raw_backend)

    named, _ = await exchange(
        sites.port, get(b"/a", HOST, b"Connection: close, Authorization", b"Authorization: Basic eDp5")
    )
    plain, _ = await exchange(sites.port, get(b"/b", HOST, b"Authorization: Basic eDp5"))

    assert named is not None and plain is not None and (named.status, plain.status) == (200, 200)
    first, second = sites.s.requests()
    assert (first.target, first.get("Authorization")) == ("/a", None)
    assert (second.target, second.get("Authorization")) == ("/b", "Basic eDp5")
    assert b"eDp5" not in bytes(sites.s.connections[0]).partition(b"GET /b")[0]
    assert sites.other.raw == b""
