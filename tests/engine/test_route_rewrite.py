"""Routes through a real engine: `rewrite`, and matching on the normalised path (engine/paths.py).

Hostile spellings of a path are sent as raw bytes (a client library would tidy them first);
each test says which backend got the request and what path it was sent.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.engine.conftest import (
    NamedEcho,
    Proxy,
    RawResponse,
    Seen,
    StartProxy,
    fetch,
    make_config,
    raw_request,
    record,
    site,
)


async def get_raw(p: Proxy, target: str, host: str = "app.lan") -> RawResponse:
    """GET `target` exactly as written (no client tidies it)."""
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return await raw_request(p.port, request.encode())


async def seen_raw(p: Proxy, target: str) -> tuple[str, str]:
    """(backend name, path it was sent) for `target` sent as raw bytes."""
    got = await get_raw(p, target)
    assert got.status == 200, (target, got.status, got.body[:200])
    seen = Seen.of(got.body)
    return seen.name, seen.path


# --- rewrite ------------------------------------------------------------------------------


async def test_rewrite_to_root_strips_the_prefix_and_keeps_the_query(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    default, v1 = await named_echo("default"), await named_echo("v1")
    routes = [{"path": "/v1/", "upstreams": [v1.url], "rewrite": "/"}]
    p = await proxy(make_config(site("app", ["app.lan"], [default.url], routes=routes)))

    expectations = {
        "/v1/users?x=1": ("v1", "/users?x=1"),
        "/v1/users/7/": ("v1", "/users/7/"),
        "/v1/": ("v1", "/"),
        "/v1": ("v1", "/"),
        "/v1?x=1": ("v1", "/?x=1"),
        "/v1x": ("default", "/v1x"),
    }
    for path, expected in expectations.items():
        seen = (await fetch(session, p, path, host="app.lan")).seen
        assert (seen.name, seen.path) == expected, path


async def test_rewrite_replaces_the_prefix(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    default, v1 = await named_echo("default"), await named_echo("v1")
    routes = [{"path": "/v1/", "upstreams": [v1.url], "rewrite": "/api/v2/"}]
    p = await proxy(make_config(site("app", ["app.lan"], [default.url], routes=routes)))

    expectations = {
        "/v1/users": "/api/v2/users",
        "/v1/users?x=1&y=%20": "/api/v2/users?x=1&y=%20",
        "/v1/a%2Fb": "/api/v2/a%2Fb",  # escapes as sent
        "/v1/": "/api/v2/",
        "/v1": "/api/v2/",
    }
    for path, forwarded in expectations.items():
        seen = (await fetch(session, p, path, host="app.lan")).seen
        assert (seen.name, seen.path) == ("v1", forwarded), path


async def test_rewrite_goes_under_the_upstreams_base_path(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    default, svc = await named_echo("default"), await named_echo("svc")
    routes = [{"path": "/svc/", "upstreams": [f"{svc.url}/inner/"], "rewrite": "/api/"}]
    p = await proxy(make_config(site("app", ["app.lan"], [default.url], routes=routes)))

    seen = (await fetch(session, p, "/svc/users?id=7", host="app.lan")).seen
    assert (seen.name, seen.path) == ("svc", "/inner/api/users?id=7")


async def test_a_rewrite_in_an_applied_config_takes_effect(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    default, v1 = await named_echo("default"), await named_echo("v1")
    routes = [{"path": "/v1/", "upstreams": [v1.url]}]
    p = await proxy(make_config(site("app", ["app.lan"], [default.url], routes=routes)))
    assert (await fetch(session, p, "/v1/users", host="app.lan")).seen.path == "/v1/users"

    routes[0]["rewrite"] = "/v2/"
    await asyncio.to_thread(p.engine.apply, make_config(site("app", ["app.lan"], [default.url], routes=routes)))
    assert (await fetch(session, p, "/v1/users", host="app.lan")).seen.path == "/v2/users"


# --- the normalised path ------------------------------------------------------------------


@pytest.fixture
async def guarded(proxy: StartProxy, named_echo: NamedEcho) -> Proxy:
    """`/admin/` -> admin, `/public/` -> public, anything else -> default."""
    default, admin, public = await named_echo("default"), await named_echo("admin"), await named_echo("public")
    routes = [
        {"path": "/admin/", "upstreams": [admin.url]},
        {"path": "/public/", "upstreams": [public.url]},
    ]
    return await proxy(make_config(site("app", ["app.lan"], [default.url], routes=routes)))


@pytest.mark.parametrize(
    ("target", "name", "sent"),
    [
        # Dot segments, literal or encoded, or behind an encoded slash or a backslash: the route is
        # the one of the normalised path, and the normalised path is what that upstream gets.
        ("/./admin/x", "admin", "/admin/x"),
        ("/public/../admin/x", "admin", "/admin/x"),
        ("/public/%2e%2e/admin/x", "admin", "/admin/x"),
        ("/public/%2E%2E/admin/x", "admin", "/admin/x"),
        ("/public/..%2fadmin/x", "admin", "/admin/x"),
        ("/public/..%2Fadmin/x?q=1", "admin", "/admin/x?q=1"),
        ("/public\\..\\admin\\x", "admin", "/admin/x"),
        ("/public/%5c..%5cadmin", "admin", "/admin"),
        ("/admin%2f..", "default", "/"),
        ("/admin/../public/y", "public", "/public/y"),
        ("/public/./y?a=/../admin", "public", "/public/y?a=/../admin"),  # the query is not a path
        # No dot segments: the route of the normalised path, the path as the client sent it.
        ("//admin/x", "admin", "//admin/x"),
        ("/%61dmin/x", "admin", "/%61dmin/x"),
        ("/admin%2fx", "admin", "/admin%2fx"),
        ("/admin\\x", "admin", "/admin\\x"),
        ("/public//admin", "public", "/public//admin"),
    ],
)
async def test_hostile_paths_reach_the_route_of_their_normal_form(
    guarded: Proxy, target: str, name: str, sent: str
) -> None:
    assert await seen_raw(guarded, target) == (name, sent)


@pytest.mark.parametrize("target", ["/../admin/x", "/public/../../admin", "/%2e%2e/admin", "/public/..%2f..%2fadmin"])
async def test_a_path_climbing_above_the_root_is_refused(guarded: Proxy, target: str) -> None:
    events = record(guarded)
    got = await get_raw(guarded, target)
    assert got.status == 400
    assert b"above" in got.body
    [event] = await events.wait(1)
    assert (event.site, event.path, event.upstream) == ("app", target, "")  # logged as sent


async def test_the_event_keeps_the_path_as_sent(guarded: Proxy) -> None:
    events = record(guarded)
    assert await seen_raw(guarded, "/public/..%2fadmin/x") == ("admin", "/admin/x")
    [event] = await events.wait(1)
    assert event.path == "/public/..%2fadmin/x"


@pytest.mark.parametrize(
    ("target", "name", "sent"),
    [
        ("/api/users?x=1", "api", "/users?x=1"),
        ("/%61pi/users?x=1", "api", "/users?x=1"),
        ("//api/users", "api", "/users"),
        ("/api%2fusers", "api", "/users"),
        ("/api/a%2Fb", "api", "/a%2Fb"),
        ("/x/../api/users", "api", "/users"),
        ("/api/../v1/users", "v1", "/api/v2/users"),
        ("/%76%31/users", "v1", "/api/v2/users"),
        ("/api/..", "default", "/"),
    ],
)
async def test_prefixes_are_cut_from_the_normalised_path(
    proxy: StartProxy, named_echo: NamedEcho, target: str, name: str, sent: str
) -> None:
    default, api, v1 = await named_echo("default"), await named_echo("api"), await named_echo("v1")
    routes = [
        {"path": "/api/", "upstreams": [api.url], "strip_prefix": True},
        {"path": "/v1/", "upstreams": [v1.url], "rewrite": "/api/v2/"},
    ]
    p = await proxy(make_config(site("app", ["app.lan"], [default.url], routes=routes)))
    assert await seen_raw(p, target) == (name, sent)


async def test_a_site_without_routes_forwards_the_normal_form_of_dot_segments(
    proxy: StartProxy, named_echo: NamedEcho
) -> None:
    only = await named_echo("only")
    p = await proxy(make_config(site("app", ["app.lan"], [only.url])))
    assert await seen_raw(p, "/a/./b/../c%2e%2e?x") == ("only", "/a/c..?x")  # escapes of unreserved characters decoded
    assert await seen_raw(p, "/a/%2e%2e/c") == ("only", "/c")
    assert await seen_raw(p, "/a%20b//c") == ("only", "/a%20b//c")
    assert (await get_raw(p, "/a/../../etc/passwd")).status == 400
