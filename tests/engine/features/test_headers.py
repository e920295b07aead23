"""headers: the security preset (never HSTS on plain HTTP) and set/remove rules both ways."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.engine.conftest import (
    Backend,
    Seen,
    StartBackend,
    StartProxy,
    closed_port,
    fetch,
    make_config,
    raw_request,
    site,
)

PRESET = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


async def test_security_preset_is_added(proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession) -> None:
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], headers={"security": True})))

    got = await fetch(session, p, "/", host="app.test")

    assert got.status == 200
    for name, value in PRESET.items():
        assert got.headers.getall(name) == [value]
    assert "Strict-Transport-Security" not in got.headers


async def test_preset_keeps_the_upstreams_own_values(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    async def framed(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok", headers={"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"})

    b = await backend(framed)
    p = await proxy(make_config(site("app", ["app.test"], [b.url], headers={"security": True})))

    got = await fetch(session, p, "/", host="app.test")

    assert got.headers.getall("X-Frame-Options") == ["DENY"]
    assert got.headers.getall("Referrer-Policy") == ["no-referrer"]
    assert got.headers["X-Content-Type-Options"] == "nosniff"


async def test_no_hsts_over_plain_http_even_when_a_trusted_proxy_says_https(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    config = make_config(
        site("app", ["app.test"], [echo.url], headers={"security": True}), trusted_proxies=["127.0.0.1/32"]
    )
    p = await proxy(config)

    got = await fetch(session, p, "/", host="app.test", headers={"X-Forwarded-Proto": "https"})

    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in got.headers


async def test_response_rules_remove_then_set(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    async def noisy(request: web.BaseRequest) -> web.StreamResponse:
        headers = CIMultiDict(
            [("X-Powered-By", "PHP/5"), ("X-Powered-By", "again"), ("X-Robots-Tag", "all"), ("X-Robots-Tag", "x")]
        )
        return web.Response(text="ok", headers=headers)

    b = await backend(noisy)
    rules = {
        "security": True,
        "response": {
            "remove": ["X-Powered-By", "X-Frame-Options"],
            "set": {"X-Robots-Tag": "noindex", "Permissions-Policy": "camera=()"},
        },
    }
    p = await proxy(make_config(site("app", ["app.test"], [b.url], headers=rules)))

    got = await fetch(session, p, "/", host="app.test")

    assert "X-Powered-By" not in got.headers  # every copy
    assert got.headers.getall("X-Robots-Tag") == ["noindex"]  # replaces every copy
    assert got.headers["Permissions-Policy"] == "camera=()"
    assert "X-Frame-Options" not in got.headers  # a site may drop a preset header (to be framed)
    assert got.headers["X-Content-Type-Options"] == "nosniff"


async def test_request_rules_remove_then_set(proxy: StartProxy, echo: Backend) -> None:
    rules = {"request": {"remove": ["X-Debug", "Cookie"], "set": {"X-Team": "blue", "X-Env": "prod"}}}
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], headers=rules)))

    # Repeated headers: every copy is removed, and a set replaces every copy the client sent.
    got = await raw_request(
        p.port,
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Debug: 1\r\nx-debug: 2\r\nCookie: a=1\r\n"
        b"X-Team: red\r\nX-Team: green\r\nX-Kept: yes\r\n\r\n",
    )

    assert got.status == 200, got.body
    seen = Seen.of(got.body)
    assert seen.all("X-Debug") == [] and seen.all("Cookie") == []
    assert seen.all("X-Team") == ["blue"]
    assert seen.one("X-Env") == "prod"
    assert seen.one("X-Kept") == "yes"


async def test_rules_apply_to_homeproxys_own_error_pages(proxy: StartProxy, session: aiohttp.ClientSession) -> None:
    rules = {"security": True, "response": {"set": {"X-Site": "app"}}}
    p = await proxy(make_config(site("app", ["app.test"], [f"http://127.0.0.1:{closed_port()}"], headers=rules)))

    got = await fetch(session, p, "/", host="app.test")

    assert got.status == 502
    assert got.headers["X-Site"] == "app"
    assert got.headers["X-Frame-Options"] == "SAMEORIGIN"


async def test_rules_are_per_site(proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession) -> None:
    p = await proxy(
        make_config(
            site("secure", ["secure.test"], [echo.url], headers={"security": True}),
            site("plain", ["plain.test"], [echo.url]),
        )
    )

    secure = await fetch(session, p, "/", host="secure.test")
    plain = await fetch(session, p, "/", host="plain.test")

    assert secure.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "X-Frame-Options" not in plain.headers
