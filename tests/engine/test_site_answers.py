"""Sites that answer without their upstreams: `maintenance = true`, and redirect sites."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from homeproxy.config import ConfigInvalid
from tests.engine.conftest import (
    StartProxy,
    StartRawBackend,
    fetch,
    make_config,
    raw_request,
    record,
    site,
)


async def counting_backend(raw_backend: StartRawBackend) -> tuple[str, list[int]]:
    """A raw upstream that only counts the connections made to it (and answers nothing)."""
    connections = [0]

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        writer.close()

    return (await raw_backend(count)).url, connections


async def test_maintenance_is_a_503_with_retry_after_and_the_upstream_is_left_alone(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession
) -> None:
    url, connections = await counting_backend(raw_backend)
    p = await proxy(make_config(site("nas", ["nas.lan"], [url], maintenance=True)))
    events = record(p)

    page = await fetch(session, p, "/files", host="nas.lan", headers={"Accept": "text/html"})

    assert page.status == 503
    assert page.headers["Retry-After"] == "300"
    assert b"down for maintenance" in page.body and page.body.lstrip().startswith(b"<!doctype html>")
    assert connections == [0]
    (ev,) = await events.wait(1)
    assert (ev.site, ev.status, ev.upstream) == ("nas", 503, "")


async def test_a_redirect_site_keeps_path_and_query_by_default(proxy: StartProxy) -> None:
    # No upstreams at all: a redirect site forwards nothing.
    p = await proxy(make_config({"name": "old", "hosts": ["old.lan"], "redirect": "https://new.example/app/"}))

    # A raw request: a client library would follow the redirect off loopback.
    moved = await raw_request(p.port, b"GET /a%20b/c?x=1&y HTTP/1.1\r\nHost: old.lan\r\nConnection: close\r\n\r\n")

    assert moved.status == 302
    assert dict(moved.headers)["Location"] == "https://new.example/app/a%20b/c?x=1&y"


async def test_a_redirect_site_with_its_own_code_and_without_the_path(proxy: StartProxy) -> None:
    config = make_config(
        site(
            "old",
            ["old.lan"],
            ["http://127.0.0.1:9"],
            redirect="https://new.example",
            redirect_code=308,
            keep_path=False,
        )
    )
    p = await proxy(config)

    moved = await raw_request(p.port, b"GET /deep/path?q HTTP/1.1\r\nHost: old.lan\r\nConnection: close\r\n\r\n")

    assert moved.status == 308
    assert dict(moved.headers)["Location"] == "https://new.example/"


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"redirect": "https://new.example", "redirect_code": 303}, "redirect_code", "expected 301, 302, 307 or 308"),
        ({"redirect": "https://new.example/?from=old"}, "redirect", "a redirect URL takes no query or fragment"),
        ({"redirect": "new.example"}, "redirect", 'expected an http(s) URL such as "https://example.org"'),
    ],
)
def test_bad_redirects_are_named_by_key(options: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        make_config({"name": "old", "hosts": ["old.lan"], **options})
    (err,) = caught.value.errors
    assert err.key == f"sites[0].{key}"
    assert err.message.startswith(message)


def test_a_site_without_upstreams_or_redirect_is_still_an_error() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        make_config({"name": "x", "hosts": ["x.lan"]})
    assert [e.message for e in caught.value.errors] == ['missing required key "upstreams"']
