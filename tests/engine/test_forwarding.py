"""Forwarding: headers both ways, X-Forwarded-*, Host, target bytes, bodies, HEAD/204/304, 100-continue."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.engine.conftest import (
    Backend,
    Seen,
    StartBackend,
    StartProxy,
    StartRawBackend,
    fetch,
    make_config,
    raw_request,
    read_head,
    read_response,
    site,
)

HOP_BY_HOP_REQUEST = (
    "Keep-Alive: 300\r\n"
    "TE: trailers\r\n"
    "Trailer: X-Checksum\r\n"
    "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
    "Proxy-Connection: keep-alive\r\n"
    "X-Secret: 1\r\n"
    "X-Other-Secret: 2\r\n"
    "X-Normal: kept\r\n"
)


@pytest.mark.parametrize(
    "connection",
    [
        # Upgrade without the "upgrade" token: not a real upgrade, just a header to drop.
        "Connection: keep-alive, X-Secret\r\nConnection: X-Other-Secret\r\nUpgrade: h2c\r\n",
        # A non-WebSocket upgrade request: forwarded as a plain request.
        "Connection: Upgrade, X-Secret, X-Other-Secret\r\nUpgrade: h2c\r\n",
    ],
    ids=["upgrade-header-only", "h2c-upgrade"],
)
async def test_hop_by_hop_request_headers_are_removed(proxy: StartProxy, echo: Backend, connection: str) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))

    resp = await raw_request(p.port, f"GET /x HTTP/1.1\r\nHost: a.lan\r\n{connection}{HOP_BY_HOP_REQUEST}\r\n".encode())

    assert resp.status == 200, resp.body
    seen = Seen.of(resp.body)
    sent = {name.lower() for name, _ in seen.headers}
    for name in (
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
        "x-secret",
        "x-other-secret",
    ):
        assert name not in sent, f"{name} reached the upstream"
    assert seen.one("X-Normal") == "kept"


async def test_hop_by_hop_response_headers_are_removed(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Length: 2\r\n"
            b"Connection: X-Resp-Secret\r\n"
            b"Connection: X-Other-Secret\r\n"
            b"X-Resp-Secret: 1\r\n"
            b"X-Other-Secret: 2\r\n"
            b"Keep-Alive: timeout=5, max=100\r\n"
            b"Trailer: X-Checksum\r\n"
            b"Upgrade: h2c\r\n"
            b"Proxy-Authenticate: Basic realm=x\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"X-Normal: kept\r\n"
            b"\r\n"
            b"ok"
        )
        await writer.drain()
        writer.close()

    up = await raw_backend(answer)
    p = await proxy(make_config(site("a", ["a.lan"], [up.url])))

    resp = await raw_request(p.port, b"GET / HTTP/1.1\r\nHost: a.lan\r\n\r\n")

    assert (resp.status, resp.body) == (200, b"ok")
    got = {name.lower() for name, _ in resp.headers}
    for name in (
        "keep-alive",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-connection",
        "x-resp-secret",
        "x-other-secret",
    ):
        assert name not in got, f"{name} reached the client"
    # The proxy's own connection management may say keep-alive/close, never the upstream's tokens.
    assert all(v.lower() in ("keep-alive", "close") for v in resp.all("Connection")), resp.all("Connection")
    assert resp.get("X-Normal") == "kept"


async def test_forwarded_headers_ignore_an_untrusted_client(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))

    seen = (
        await fetch(
            session,
            p,
            host="a.lan:8080",
            headers={
                "X-Forwarded-For": "203.0.113.9",
                "X-Real-IP": "203.0.113.9",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "evil.example",
            },
        )
    ).seen

    assert seen.one("X-Forwarded-For") == "127.0.0.1"
    assert seen.one("X-Real-IP") == "127.0.0.1"
    assert seen.one("X-Forwarded-Proto") == "http"
    assert seen.one("X-Forwarded-Host") == "a.lan:8080"
    assert seen.one("Host") == "a.lan:8080"


async def test_forwarded_headers_from_a_trusted_proxy_are_extended(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url]), trusted_proxies=["127.0.0.0/8"]))

    seen = (
        await fetch(
            session,
            p,
            host="a.lan",
            headers={
                "X-Forwarded-For": "198.51.100.1, 203.0.113.7, 127.0.0.5",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "public.example:443",
            },
        )
    ).seen

    assert seen.one("X-Forwarded-For") == "198.51.100.1, 203.0.113.7, 127.0.0.5, 127.0.0.1"
    # The right-most address that is not a trusted proxy is the client.
    assert seen.one("X-Real-IP") == "203.0.113.7"
    assert seen.one("X-Forwarded-Proto") == "https"
    assert seen.one("X-Forwarded-Host") == "public.example:443"


async def test_trusted_proxy_without_forwarded_for_is_the_client(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url]), trusted_proxies=["127.0.0.0/8"]))

    seen = (await fetch(session, p, host="a.lan")).seen

    assert seen.one("X-Forwarded-For") == "127.0.0.1"
    assert seen.one("X-Real-IP") == "127.0.0.1"
    assert seen.one("X-Forwarded-Host") == "a.lan"


@pytest.mark.parametrize(
    ("xff", "real_ip"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("198.51.100.1, 203.0.113.7", "203.0.113.7"),  # right-most untrusted, not the left-most claim
        ("203.0.113.7, 127.0.0.9, 127.0.0.8", "203.0.113.7"),  # trusted hops are skipped
        ("127.0.0.9, 127.0.0.8", "127.0.0.9"),  # all trusted: the left-most
        ("2001:db8::1", "2001:db8::1"),
        ("not-an-address", "127.0.0.1"),  # garbage: the peer itself
        ("203.0.113.7:5555", "127.0.0.1"),
    ],
)
async def test_real_ip_behind_trusted_proxies(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, xff: str, real_ip: str
) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url]), trusted_proxies=["127.0.0.0/8"]))

    seen = (await fetch(session, p, host="a.lan", headers={"X-Forwarded-For": xff})).seen

    assert seen.one("X-Real-IP") == real_ip
    assert seen.one("X-Forwarded-For") == f"{xff}, 127.0.0.1"


async def test_forwarded_for_split_over_several_lines_is_read_whole(proxy: StartProxy, echo: Backend) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url]), trusted_proxies=["127.0.0.0/8"]))

    # RFC 9110 section 5.3: several field lines of one name are one comma-separated list.
    resp = await raw_request(
        p.port,
        b"GET / HTTP/1.1\r\nHost: a.lan\r\n"
        b"X-Forwarded-For: 198.51.100.66\r\n"  # whatever the client claimed
        b"X-Forwarded-For: 203.0.113.7\r\n"  # what the trusted proxy in front saw
        b"Connection: close\r\n\r\n",
    )

    seen = Seen.of(resp.body)
    assert seen.one("X-Real-IP") == "203.0.113.7"
    assert seen.one("X-Forwarded-For") == "198.51.100.66, 203.0.113.7, 127.0.0.1"


async def test_ipv6_listener_and_client_address(proxy: StartProxy, echo: Backend) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url]), listen=["127.0.0.1", "::1"]))
    (v4, port4), (v6, port6) = p.engine.addresses
    assert (v4, v6) == ("127.0.0.1", "::1")

    reader, writer = await asyncio.open_connection("::1", port6)
    try:
        writer.write(b"GET /six HTTP/1.1\r\nHost: a.lan\r\nConnection: close\r\n\r\n")
        resp = await read_response(reader)
    finally:
        writer.close()

    seen = Seen.of(resp.body)
    assert (seen.path, seen.one("X-Forwarded-For"), seen.one("X-Real-IP")) == ("/six", "::1", "::1")
    assert (await raw_request(port4, b"GET / HTTP/1.1\r\nHost: a.lan\r\n\r\n")).status == 200


async def test_host_is_rewritten_to_the_upstream_without_preserve_host(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [f"{echo.url}/base"], preserve_host=False)))

    seen = (await fetch(session, p, "/x", host="A.lan:8080")).seen

    assert seen.one("Host") == f"127.0.0.1:{echo.port}"
    assert seen.one("X-Forwarded-Host") == "A.lan:8080"
    assert seen.path == "/base/x"


async def test_several_set_cookie_headers_all_arrive(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    async def cookies(request: web.BaseRequest) -> web.StreamResponse:
        resp = web.Response(text="ok")
        for c in ("a=1; Path=/", "b=2; HttpOnly", "c=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT"):
            resp.headers.add("Set-Cookie", c)
        return resp

    up = await backend(cookies)
    p = await proxy(make_config(site("a", ["a.lan"], [up.url])))

    got = await fetch(session, p, host="a.lan")

    assert got.headers.getall("Set-Cookie") == [
        "a=1; Path=/",
        "b=2; HttpOnly",
        "c=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
    ]


async def test_client_cookies_are_not_kept_by_the_proxy(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        resp = web.Response(text=request.headers.get("Cookie", "<none>"))
        resp.set_cookie("session", request.query.get("who", "?"))
        return resp

    up = await backend(handler)
    p = await proxy(make_config(site("a", ["a.lan"], [up.url])))
    # A fresh client with no jar: whatever reaches the backend came from the proxy.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other:
        assert (await fetch(other, p, "/?who=alice", host="a.lan")).body == b"<none>"
        assert (await fetch(other, p, "/?who=bob", host="a.lan")).body == b"<none>"


@pytest.mark.parametrize(
    "target",
    [
        "/a%2Fb?x=%20&y=1",
        "/%7Euser/%E2%82%AC/?q=a+b&q=%2B&empty=&flag",
        "//double//slash",  # (dot segments go in their normal form: test_route_rewrite.py)
        "/a|b?q=[1]{x}",
        "/path;params?x=1",
        "/a?=",
    ],
)
async def test_request_target_is_passed_byte_exact(proxy: StartProxy, echo: Backend, target: str) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))

    resp = await raw_request(p.port, f"GET {target} HTTP/1.1\r\nHost: a.lan\r\nConnection: close\r\n\r\n".encode())

    assert Seen.of(resp.body).path == target


async def test_empty_query_is_passed_byte_exact(proxy: StartProxy, echo: Backend) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))

    resp = await raw_request(p.port, b"GET /a? HTTP/1.1\r\nHost: a.lan\r\nConnection: close\r\n\r\n")

    assert Seen.of(resp.body).path == "/a?"


async def test_request_body_with_content_length_arrives_intact(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))
    body = os.urandom(300_000)

    seen = (await fetch(session, p, "/upload", host="a.lan", method="PUT", data=body)).seen

    assert (seen.method, seen.body_len, seen.body_sha256) == ("PUT", len(body), hashlib.sha256(body).hexdigest())
    assert seen.one("Content-Length") == str(len(body))
    assert seen.one("Transfer-Encoding") is None


async def test_chunked_request_body_arrives_intact(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))
    parts = [os.urandom(n) for n in (1, 70_000, 3, 200_000)]

    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    seen = (await fetch(session, p, "/upload", host="a.lan", method="POST", data=chunks())).seen

    whole = b"".join(parts)
    assert (seen.body_len, seen.body_sha256) == (len(whole), hashlib.sha256(whole).hexdigest())


async def test_raw_chunked_request_body_arrives_intact(proxy: StartProxy, echo: Backend) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))

    resp = await raw_request(
        p.port,
        b"POST /c HTTP/1.1\r\nHost: a.lan\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n",
    )

    seen = Seen.of(resp.body)
    assert seen.body == "hello world!"
    assert seen.one("Transfer-Encoding") in (None, "chunked")


async def test_head_keeps_content_length_and_sends_no_body(proxy: StartProxy, backend: StartBackend) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b"x" * 1234, content_type="application/octet-stream")

    up = await backend(handler)
    p = await proxy(make_config(site("a", ["a.lan"], [up.url])))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        # HEAD then GET on one connection: a stray body byte after the HEAD would garble the GET.
        writer.write(b"HEAD /f HTTP/1.1\r\nHost: a.lan\r\n\r\nGET /f HTTP/1.1\r\nHost: a.lan\r\n\r\n")
        head = await read_response(reader, head_request=True)
        get = await read_response(reader)
    finally:
        writer.close()

    assert (head.status, head.get("Content-Length"), head.body) == (200, "1234", b"")
    assert (get.status, get.body) == (200, b"x" * 1234)


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_send_no_body(proxy: StartProxy, backend: StartBackend, status: int) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/empty":
            return web.Response(status=status, headers={"ETag": '"v1"'})
        return web.Response(text="after")

    up = await backend(handler)
    p = await proxy(make_config(site("a", ["a.lan"], [up.url])))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"GET /empty HTTP/1.1\r\nHost: a.lan\r\n\r\nGET /next HTTP/1.1\r\nHost: a.lan\r\n\r\n")
        first = await read_response(reader)
        second = await read_response(reader)
    finally:
        writer.close()

    assert (first.status, first.get("ETag")) == (status, '"v1"')
    assert first.get("Transfer-Encoding") is None
    assert first.get("Content-Length") in (None, "0")
    assert (second.status, second.body) == (200, b"after")


async def test_expect_100_continue(proxy: StartProxy, echo: Backend) -> None:
    p = await proxy(make_config(site("a", ["a.lan"], [echo.url])))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(
            b"POST /up HTTP/1.1\r\nHost: a.lan\r\nContent-Length: 11\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        # The body is held back until the proxy says to go on.
        status, _, _ = await read_head(reader)
        assert status == 100
        writer.write(b"hello world")
        final = await read_response(reader)
    finally:
        writer.close()

    assert final.status == 200
    seen = Seen.of(final.body)
    assert (seen.body, seen.one("Expect")) == ("hello world", None)
