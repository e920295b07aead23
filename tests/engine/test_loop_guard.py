"""A site whose upstream is homeproxy itself (issue 14): the request comes back with homeproxy's
own `Via` and is answered 508 at once, instead of looping until connections run out."""

from __future__ import annotations

import asyncio

import aiohttp

from homeproxy.engine.upstream import VIA_TOKEN
from tests.engine.conftest import Backend, StartProxy, fetch, make_config, record, site


async def test_homeproxy_as_its_own_upstream_is_a_508_not_a_loop(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    looped = make_config(site("app", ["app.lan"], [echo.url]), site("self", ["self.lan"], [p.url]))
    await asyncio.to_thread(p.engine.apply, looped)
    events = record(p)
    got = await fetch(session, p, "/x", host="self.lan")
    assert got.status == 508
    first, second = await events.wait(2)  # the request that went out, and the one that came back
    assert {first.status, second.status} == {508}
    assert any(e.error.startswith("loop: the upstream is this homeproxy") for e in (first, second))


async def test_every_forwarded_request_carries_homeproxys_via(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    got = await fetch(session, p, "/x", host="app.lan", headers={"Via": "1.1 corporate-proxy"})
    vias = [v for k, v in got.seen.headers if k.lower() == "via"]
    assert vias == ["1.1 corporate-proxy", f"1.1 {VIA_TOKEN}"]  # theirs kept, ours added
