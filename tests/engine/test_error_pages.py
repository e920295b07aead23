"""A site's `error_pages`: its own files in place of homeproxy's pages, never of an upstream's answer."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web

from homeproxy.engine.pages import MAX_PAGE_BYTES
from tests.engine.conftest import (
    Proxy,
    RawResponse,
    StartBackend,
    StartProxy,
    closed_port,
    make_config,
    raw_request,
    site,
)

PAGE_502 = b"<!doctype html><title>Down</title><p>The media server is napping.</p>\n"
PAGE_503 = b"<!doctype html><p>Back soon.</p>\n"


def write(tmp_path: Path, name: str, body: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(body)
    return str(path)


async def get(p: Proxy, target: str = "/", *, host: str = "app.lan", method: str = "GET") -> RawResponse:
    request = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    return await raw_request(p.port, request.encode(), head_request=method == "HEAD")


async def test_homeproxys_502_is_replaced_by_the_sites_page(proxy: StartProxy, tmp_path: Path) -> None:
    pages = {"502": write(tmp_path, "502.html", PAGE_502)}
    dead = f"http://127.0.0.1:{closed_port()}"
    p = await proxy(make_config(site("app", ["app.lan"], [dead], error_pages=pages)))

    got = await get(p)
    assert (got.status, got.body) == (502, PAGE_502)
    assert got.get("Content-Type") == "text/html; charset=utf-8"
    assert got.get("Content-Length") == str(len(PAGE_502))
    assert got.get("Cache-Control") == "no-store"  # homeproxy's other headers stay

    head = await get(p, method="HEAD")
    assert (head.status, head.body) == (502, b"")


async def test_an_upstreams_own_502_passes_through_untouched(
    proxy: StartProxy, backend: StartBackend, tmp_path: Path
) -> None:
    async def failing(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=502, text="the upstream's own words", headers={"X-From": "upstream"})

    up = await backend(failing)
    pages = {"502": write(tmp_path, "502.html", PAGE_502)}
    p = await proxy(make_config(site("app", ["app.lan"], [up.url], error_pages=pages)))

    got = await get(p)
    assert (got.status, got.body) == (502, b"the upstream's own words")
    assert got.get("X-From") == "upstream"
    assert (got.get("Content-Type") or "").startswith("text/plain")


async def test_a_status_without_a_page_keeps_homeproxys(proxy: StartProxy, tmp_path: Path) -> None:
    pages = {"504": write(tmp_path, "504.html", b"<p>slow</p>")}
    p = await proxy(make_config(site("app", ["app.lan"], [f"http://127.0.0.1:{closed_port()}"], error_pages=pages)))

    got = await get(p)
    assert got.status == 502
    assert b"502 Bad Gateway" in got.body and got.get("Content-Type") == "text/plain; charset=utf-8"


async def test_the_maintenance_page_keeps_retry_after(proxy: StartProxy, tmp_path: Path) -> None:
    pages = {"503": write(tmp_path, "503.html", PAGE_503)}
    p = await proxy(make_config(site("app", ["app.lan"], ["http://127.0.0.1:9"], maintenance=True, error_pages=pages)))

    got = await get(p)
    assert (got.status, got.body) == (503, PAGE_503)
    assert got.get("Retry-After") == "300"


async def test_a_refused_path_gets_the_sites_400_page(proxy: StartProxy, tmp_path: Path) -> None:
    pages = {"400": write(tmp_path, "400.html", b"<p>no</p>")}
    p = await proxy(make_config(site("app", ["app.lan"], ["http://127.0.0.1:9"], error_pages=pages)))

    got = await get(p, "/../etc/passwd")
    assert (got.status, got.body) == (400, b"<p>no</p>")


async def test_pages_belong_to_their_site_only(proxy: StartProxy, tmp_path: Path) -> None:
    pages = {"502": write(tmp_path, "502.html", PAGE_502), "404": write(tmp_path, "404.html", b"<p>404</p>")}
    dead = f"http://127.0.0.1:{closed_port()}"
    p = await proxy(
        make_config(site("app", ["app.lan"], [dead], error_pages=pages), site("other", ["other.lan"], [dead]))
    )

    assert (await get(p, host="other.lan")).body != PAGE_502
    unknown = await get(p, host="unknown.lan")  # no site: homeproxy's neutral 404
    assert unknown.status == 404 and b"<p>404</p>" not in unknown.body


@pytest.mark.parametrize("problem", ["missing", "too large", "a directory"])
async def test_a_page_that_cannot_be_used_falls_back_and_the_apply_goes_on(
    proxy: StartProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture, problem: str
) -> None:
    caplog.set_level(logging.WARNING, logger="homeproxy.engine.pages")
    if problem == "missing":
        name = str(tmp_path / "nowhere.html")
    elif problem == "too large":
        name = write(tmp_path, "big.html", b"x" * (MAX_PAGE_BYTES + 1))
    else:
        name = str(tmp_path)
    good = write(tmp_path, "400.html", b"<p>no</p>")
    config = make_config(
        site("app", ["app.lan"], [f"http://127.0.0.1:{closed_port()}"], error_pages={"502": name, "400": good})
    )
    p = await proxy(config)

    got = await get(p)
    assert got.status == 502 and b"502 Bad Gateway" in got.body
    assert any("error page for 502 not used" in r.getMessage() for r in caplog.records)
    # The other page was read all the same, and an apply with the bad file is not refused.
    assert (await get(p, "/../x")).body == b"<p>no</p>"
    await asyncio.to_thread(p.engine.apply, config)
    assert (await get(p)).status == 502


async def test_pages_are_read_again_when_a_config_is_applied(proxy: StartProxy, tmp_path: Path) -> None:
    name = write(tmp_path, "502.html", b"<p>first</p>")
    config = make_config(site("app", ["app.lan"], [f"http://127.0.0.1:{closed_port()}"], error_pages={"502": name}))
    p = await proxy(config)
    assert (await get(p)).body == b"<p>first</p>"

    Path(name).write_bytes(b"<p>second</p>")
    assert (await get(p)).body == b"<p>first</p>"  # kept in memory until the next apply
    await asyncio.to_thread(p.engine.apply, config)
    assert (await get(p)).body == b"<p>second</p>"
