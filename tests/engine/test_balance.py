"""`balance`: how a site with several upstreams picks one, against real backends on loopback.

Each policy is checked for what it promises: round robin exactly in turn, `first` as failover
in the listed order, `ip_hash` sticky per client address, `least_conn` and `random_two` never
choosing an upstream that is busy while another is idle. Whatever the policy, an upstream
that refuses the connection hands the request to the next.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from homeproxy.config import ConfigInvalid
from tests.engine.conftest import (
    STEP_TIMEOUT,
    NamedEcho,
    Proxy,
    Seen,
    StartBackend,
    StartProxy,
    closed_port,
    fetch,
    make_config,
    site,
)
from tests.waiting import wait_for


async def names(session: aiohttp.ClientSession, p: Proxy, n: int, **headers: str) -> list[str]:
    """The backend names that answered `n` requests sent one after another."""
    out = []
    for k in range(n):
        got = await fetch(session, p, f"/r{k}", host="lb.lan", headers=headers or None)
        assert got.status == 200, got.body
        out.append(Seen.of(got.body).name)
    return out


async def three(named_echo: NamedEcho) -> list[str]:
    return [(await named_echo(name)).url for name in ("a", "b", "c")]


async def test_round_robin_goes_in_turn(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("lb", ["lb.lan"], await three(named_echo))))  # the default policy

    got = await names(session, p, 9)

    assert got[:3] in (["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"])
    assert got == got[:3] * 3


async def test_first_sends_everything_to_the_first_and_fails_over_in_order(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    ups = await three(named_echo)
    p = await proxy(make_config(site("lb", ["lb.lan"], ups, balance="first")))
    assert await names(session, p, 5) == ["a"] * 5

    dead = f"http://127.0.0.1:{closed_port()}"
    q = await proxy(make_config(site("lb", ["lb.lan"], [dead, ups[2], ups[1]], balance="first")))
    assert await names(session, q, 5) == ["c"] * 5  # the next listed, every time, with no error


async def test_ip_hash_keeps_each_client_on_one_upstream(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession
) -> None:
    # The client address comes from X-Forwarded-For of a trusted proxy (the test's own loopback).
    config = make_config(
        site("lb", ["lb.lan"], await three(named_echo), balance="ip_hash"), trusted_proxies=["127.0.0.1/32"]
    )
    p = await proxy(config)

    chosen = {}
    for n in range(12):
        client = f"192.168.1.{10 + n}"
        got = set(await names(session, p, 4, **{"X-Forwarded-For": client}))
        assert len(got) == 1, f"{client} was sent to {got}"
        chosen[client] = got.pop()
    assert len(set(chosen.values())) >= 2  # clients are spread, each one sticky


@pytest.mark.parametrize("policy", ["least_conn", "random_two"])
async def test_a_busy_upstream_is_passed_over_while_others_are_idle(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, policy: str
) -> None:
    release = asyncio.Event()
    holding: collections.Counter[str] = collections.Counter()
    served: collections.Counter[str] = collections.Counter()

    def handler(name: str) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            if request.path == "/hold":
                holding[name] += 1
                await release.wait()
            else:
                served[name] += 1
            return web.Response(text=name)

        return handle

    ups = [(await backend(handler(name))).url for name in ("a", "b", "c")]
    p = await proxy(make_config(site("lb", ["lb.lan"], ups, balance=policy)))
    held = asyncio.ensure_future(fetch(session, p, "/hold", host="lb.lan"))
    try:
        await wait_for(lambda: sum(holding.values()) == 1, description="one upstream busy")
        (busy,) = holding
        for k in range(12):
            got = await asyncio.wait_for(fetch(session, p, f"/quick{k}", host="lb.lan"), STEP_TIMEOUT)
            assert got.status == 200
    finally:
        release.set()
        await held

    assert served[busy] == 0, f"{policy} sent {served[busy]} requests to the busy upstream"
    assert sum(served.values()) == 12
    assert len(served) == 2  # the idle ones share the rest


def test_an_unknown_policy_names_the_ones_there_are() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        make_config(site("lb", ["lb.lan"], ["http://10.0.0.1"], balance="fastest"))
    (err,) = caught.value.errors
    assert err.key == "sites[0].balance"
    assert '"round_robin", "weighted", "least_conn", "ip_hash", "cookie", "first", "random_two"' in err.message
