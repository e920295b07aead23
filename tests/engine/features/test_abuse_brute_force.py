"""Feature abuse (issue 14): password guessing against Basic auth and the login page.

Failed checks are counted per client; after `FREE_FAILURES` the client gets 429 with
Retry-After (without a check) until its back-off has passed. A client is an IPv4 address,
or an IPv6 /64: one host commonly holds a whole /64 and can take a fresh address for every
guess. The clients here are presented by a trusted proxy (127.0.0.1) in X-Forwarded-For,
and time is a fake clock, so the back-off never runs out during a test.
"""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import aiohttp
import pytest

from homeproxy.engine.features.access import client_group
from homeproxy.engine.features.auth_check import FREE_FAILURES
from homeproxy.passwords import hash_password
from tests.engine.conftest import Backend, Fetched, Proxy, fetch, make_config, site
from tests.engine.features.conftest import FakeClock, StartFeatureProxy

HOST = "app.test"
USERS = {"alice": hash_password("correct horse", n=2**4)}
RIGHT = "correct horse"


async def attempt(session: aiohttp.ClientSession, p: Proxy, mode: str, client: str, password: str) -> Fetched:
    """One sign-in as `alice` from `client`: a Basic request, or a post of the login form."""
    headers = {"X-Forwarded-For": client}
    if mode == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
        return await fetch(session, p, "/", host=HOST, headers=headers)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    headers["Origin"] = f"http://{HOST}"
    headers["Host"] = HOST
    body = urlencode({"username": "alice", "password": password, "next": "/"})
    async with session.post(p.url + "/.homeproxy/login", headers=headers, data=body, allow_redirects=False) as resp:
        return Fetched(resp.status, resp.headers, await resp.read())


def signed_in(got: Fetched, mode: str) -> bool:
    if mode == "basic":
        return got.status == 200
    return got.status == 303 and "homeproxy_session=" in got.headers.get("Set-Cookie", "")


@pytest.fixture(params=["basic", "login"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def guarded(feature_proxy: StartFeatureProxy, echo: Backend, fake_clock: FakeClock, mode: str) -> Proxy:
    config = make_config(
        site("app", [HOST], [echo.url], auth={"mode": mode, "users": USERS}), trusted_proxies=["127.0.0.1/32"]
    )
    return await feature_proxy(config, clock=fake_clock)


async def test_abuse_brute_force_one_ip_is_throttled_another_gets_in(
    guarded: Proxy, session: aiohttp.ClientSession, mode: str
) -> None:
    for _ in range(FREE_FAILURES):
        assert (await attempt(session, guarded, mode, "198.51.100.1", "guess")).status == 401
    # Throttled: even the right password is not checked now.
    for _ in range(3):
        got = await attempt(session, guarded, mode, "198.51.100.1", RIGHT)
        assert got.status == 429
        assert int(got.headers["Retry-After"]) >= 1
    assert signed_in(await attempt(session, guarded, mode, "198.51.100.2", RIGHT), mode)


async def test_abuse_brute_force_an_ipv6_64_shares_one_budget(
    guarded: Proxy, session: aiohttp.ClientSession, mode: str
) -> None:
    # A fresh address of the same /64 for every guess.
    for i in range(FREE_FAILURES):
        assert (await attempt(session, guarded, mode, f"2001:db8:1:2::{i + 1:x}", "guess")).status == 401
    for client in ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:abcd::99"):
        assert (await attempt(session, guarded, mode, client, RIGHT)).status == 429, client
    # The next /64, and an IPv4 client, are someone else.
    assert signed_in(await attempt(session, guarded, mode, "2001:db8:1:3::1", RIGHT), mode)
    assert signed_in(await attempt(session, guarded, mode, "203.0.113.7", RIGHT), mode)


def test_abuse_brute_force_client_groups() -> None:
    assert client_group("192.0.2.7") == "192.0.2.7"
    assert client_group("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_group("2001:DB8:1:2::1") == client_group("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert client_group("2001:db8:1:3::1") != client_group("2001:db8:1:2::1")
    assert client_group("not an address") == "not an address"
