"""auth, Basic mode: challenges, hashes checked off the loop and remembered, back-off after
failures, the Authorization header kept from the upstream, bypass, and malformed credentials.

Hashes here use a small scrypt cost (n=2**4) so that tests are quick; `ScryptSpy`
wraps the real check to count runs, or to hold one until the test lets it go.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator

import aiohttp
import pytest

from homeproxy.engine.features import auth_check as auth_module
from homeproxy.engine.features.auth_check import FailureThrottle
from homeproxy.passwords import hash_password, verify_password
from tests.engine.conftest import (
    Backend,
    Fetched,
    Proxy,
    StartProxy,
    fetch,
    make_config,
    raw_request,
    record,
    site,
)
from tests.engine.features.conftest import FakeClock, StartFeatureProxy, client_at
from tests.waiting import wait_for

ALICE = hash_password("correct horse", n=2**4)
BOB = hash_password("pässwörd ✓", n=2**4)
USERS = {"alice": ALICE, "bob": BOB}
CHALLENGE = 'Basic realm="homeproxy", charset="UTF-8"'


def basic(user: str | bytes, password: str | bytes) -> dict[str, str]:
    u = user.encode() if isinstance(user, str) else user
    pw = password.encode() if isinstance(password, str) else password
    return {"Authorization": "Basic " + base64.b64encode(u + b":" + pw).decode()}


class ScryptSpy:
    """Counts scrypt checks (and can hold them); the real check still decides."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes | str, str]] = []
        self.go = threading.Event()
        self.go.set()
        self.threads: list[str] = []

    def __call__(self, password: bytes | str, stored: str) -> bool:
        self.calls.append((password, stored))
        self.threads.append(threading.current_thread().name)
        assert self.go.wait(15), "the test never let the check finish"
        return verify_password(password, stored)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScryptSpy]:
    s = ScryptSpy()
    monkeypatch.setattr(auth_module, "verify_password", s)
    yield s
    s.go.set()


async def _start(start: StartFeatureProxy, echo: Backend, clock: FakeClock | None = None, **auth: object) -> Proxy:
    config = make_config(site("app", ["app.test"], [echo.url], auth={"users": USERS, **auth}))
    return await start(config, **({"clock": clock} if clock is not None else {}))


async def test_no_credentials_get_a_challenge(proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession) -> None:
    p = await _start(proxy, echo)

    got = await fetch(session, p, "/", host="app.test", headers={"Accept": "text/html"})
    head = await fetch(session, p, "/", host="app.test", method="HEAD")

    assert got.status == 401
    assert got.headers.getall("WWW-Authenticate") == [CHALLENGE]
    assert b"401 Unauthorized" in got.body and b'"headers"' not in got.body
    assert head.status == 401 and head.body == b""
    assert head.headers["WWW-Authenticate"] == CHALLENGE


async def test_right_credentials_pass_and_authorization_is_not_forwarded(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await _start(proxy, echo)

    alice = await fetch(session, p, "/a", host="app.test", headers=basic("alice", "correct horse"))
    bob = await fetch(session, p, "/b", host="app.test", headers=basic("bob", "pässwörd ✓"))

    assert alice.seen.path == "/a" and alice.seen.all("Authorization") == []
    assert bob.seen.path == "/b" and bob.seen.all("Authorization") == []


async def test_pass_authorization_forwards_the_header(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await _start(proxy, echo, pass_authorization=True)
    creds = basic("alice", "correct horse")

    got = await fetch(session, p, "/", host="app.test", headers=creds)
    without = await fetch(session, p, "/", host="app.test")

    assert got.seen.all("Authorization") == [creds["Authorization"]]
    assert without.status == 401


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("alice", "wrong"),
        ("alice", "correct horse "),
        ("Alice", "correct horse"),
        ("nobody", "correct horse"),
        ("", ""),
    ],
)
async def test_wrong_credentials_get_the_challenge_again(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, user: str, password: str
) -> None:
    p = await _start(proxy, echo)
    rec = record(p)

    got = await fetch(session, p, "/", host="app.test", headers=basic(user, password))

    assert got.status == 401 and got.headers["WWW-Authenticate"] == CHALLENGE
    (event,) = await rec.wait(1)
    assert event.error == "auth: wrong user name or password" and event.upstream == ""


async def test_unknown_users_cost_a_scrypt_check_too(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, spy: ScryptSpy
) -> None:
    p = await _start(proxy, echo)

    await fetch(session, p, "/", host="app.test", headers=basic("nobody", "x"))

    assert len(spy.calls) == 1
    assert spy.calls[0][1].startswith("scrypt$32768$8$1$")  # the decoy hash, at the default cost


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("Basic !!!not-base64!!!", "not base64"),
        ("Basic " + base64.b64encode(b"alice-correct horse").decode(), "no colon"),
        ("Basic " + base64.b64encode(b"\xffalice:\xfe").decode(), "not UTF-8"),
        ("Basic " + base64.b64encode(b"alice:\xff\xfe").decode(), "not UTF-8"),
        ("Bearer abc.def.ghi", "not Basic"),
        ("Basic", "no colon"),
        ("Basic " + "QUFB" * 1100, "too long"),
        ("", "not Basic"),
    ],
)
async def test_malformed_authorization_is_a_plain_401(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, spy: ScryptSpy, value: str, why: str
) -> None:
    p = await _start(proxy, echo)
    rec = record(p)

    got = await fetch(session, p, "/", host="app.test", headers={"Authorization": value})

    assert got.status == 401 and got.headers["WWW-Authenticate"] == CHALLENGE
    assert spy.calls == []  # no scrypt for garbage
    (event,) = await rec.wait(1)
    assert why in event.error


async def test_repeated_authorization_is_a_400(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await _start(proxy, echo)
    good = basic("alice", "correct horse")["Authorization"]

    twice = await raw_request(
        p.port, f"GET / HTTP/1.1\r\nHost: app.test\r\nAuthorization: {good}\r\nAuthorization: {good}\r\n\r\n".encode()
    )
    after = await fetch(session, p, "/", host="app.test", headers={"Authorization": good})

    assert twice.status == 400
    assert b'"headers"' not in twice.body
    assert after.status == 200


async def test_huge_authorization_is_refused_and_the_site_keeps_serving(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await _start(proxy, echo)

    huge = await raw_request(
        p.port, b"GET / HTTP/1.1\r\nHost: app.test\r\nAuthorization: Basic " + b"QUFB" * 5000 + b"\r\n\r\n"
    )
    after = await fetch(session, p, "/", host="app.test", headers=basic("alice", "correct horse"))
    without = await fetch(session, p, "/", host="app.test")

    assert huge.status == 431  # over homeproxy's header line limit (engine/h1/server.py MAX_FIELD)
    assert after.status == 200 and without.status == 401


async def test_realm_is_quoted(proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession) -> None:
    p = await _start(proxy, echo, realm='Our "home" \\ lab')

    got = await fetch(session, p, "/", host="app.test")

    assert got.headers["WWW-Authenticate"] == 'Basic realm="Our \\"home\\" \\\\ lab", charset="UTF-8"'


async def test_verified_credentials_are_remembered(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    spy: ScryptSpy,
    fake_clock: FakeClock,
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    creds = basic("alice", "correct horse")

    for _ in range(10):
        assert (await fetch(session, p, "/", host="app.test", headers=creds)).status == 200
    wrong = await fetch(session, p, "/", host="app.test", headers=basic("alice", "nope"))
    fake_clock.advance(auth_module.VERIFIED_TTL + 1)
    later = await fetch(session, p, "/", host="app.test", headers=creds)

    assert wrong.status == 401
    assert later.status == 200
    assert len(spy.calls) == 3  # once, the wrong one, and again after the TTL
    assert all(name != "homeproxy-engine" for name in spy.threads)  # never on the loop's thread


async def test_concurrent_requests_with_the_same_credentials_share_one_check(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, spy: ScryptSpy
) -> None:
    p = await _start(proxy, echo)
    creds = basic("alice", "correct horse")
    spy.go.clear()

    requests = [asyncio.ensure_future(fetch(session, p, f"/{i}", host="app.test", headers=creds)) for i in range(6)]
    await wait_for(lambda: p.engine.in_flight == 6, description="six requests in the engine")
    spy.go.set()
    results = await asyncio.gather(*requests)

    assert [r.status for r in results] == [200] * 6
    assert len(spy.calls) == 1


async def test_a_check_never_blocks_the_loop(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, spy: ScryptSpy
) -> None:
    config = make_config(
        site("app", ["app.test"], [echo.url], auth={"users": USERS}),
        site("other", ["other.test"], [echo.url]),
    )
    p = await proxy(config)
    spy.go.clear()

    held = asyncio.ensure_future(fetch(session, p, "/", host="app.test", headers=basic("alice", "correct horse")))
    await wait_for(lambda: spy.calls, description="the check to start")
    other = await asyncio.wait_for(fetch(session, p, "/", host="other.test"), 5)
    spy.go.set()

    assert other.status == 200
    assert (await held).status == 200


async def test_too_many_checks_at_once_from_one_client_get_429(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, spy: ScryptSpy
) -> None:
    p = await _start(proxy, echo)
    rec = record(p)
    spy.go.clear()

    held = [
        asyncio.ensure_future(fetch(session, p, "/", host="app.test", headers=basic("alice", f"guess{i}")))
        for i in range(auth_module.MAX_CHECKS_PER_CLIENT)
    ]
    await wait_for(lambda: len(spy.calls) == auth_module.MAX_CHECKS_PER_CLIENT, description="checks to start")
    busy = await fetch(session, p, "/", host="app.test", headers=basic("alice", "one more"))
    spy.go.set()
    done = await asyncio.gather(*held)

    assert busy.status == 429 and busy.headers["Retry-After"] == "1"
    (event,) = [e for e in await rec.wait(3) if e.status == 429]
    assert event.error == "auth: too many password checks at once"
    assert [r.status for r in done] == [401] * len(held)


async def test_checks_at_once_are_bounded_over_all_clients(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, spy: ScryptSpy
) -> None:
    config = make_config(site("app", ["app.test"], [echo.url], auth={"users": USERS}), trusted_proxies=["127.0.0.1/32"])
    p = await proxy(config)
    spy.go.clear()

    def attempt(i: int) -> asyncio.Future[Fetched]:
        headers = {**basic("alice", f"guess{i}"), "X-Forwarded-For": f"198.51.100.{i}"}
        return asyncio.ensure_future(fetch(session, p, "/", host="app.test", headers=headers))

    held = [attempt(i) for i in range(auth_module.MAX_CHECKS)]
    await wait_for(lambda: len(spy.calls) == auth_module.MAX_CHECKS, description="checks to start")
    busy = await attempt(99)
    spy.go.set()
    done = await asyncio.gather(*held)
    after = await attempt(100)

    assert busy.status == 429 and busy.headers["Retry-After"] == "1"
    assert [r.status for r in done] == [401] * auth_module.MAX_CHECKS
    assert after.status == 401  # the slots are free again


async def test_repeated_failures_are_throttled_with_growing_waits(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    spy: ScryptSpy,
    fake_clock: FakeClock,
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    rec = record(p)
    good = basic("alice", "correct horse")

    for i in range(auth_module.FREE_FAILURES):
        assert (await fetch(session, p, "/", host="app.test", headers=basic("alice", f"guess{i}"))).status == 401
    blocked = await fetch(session, p, "/", host="app.test", headers=good)  # even the right password
    checks = len(spy.calls)
    fake_clock.advance(1)
    sixth = await fetch(session, p, "/", host="app.test", headers=basic("alice", "guess6"))
    blocked_longer = await fetch(session, p, "/", host="app.test", headers=good)
    fake_clock.advance(2)
    ok = await fetch(session, p, "/", host="app.test", headers=good)
    fresh = await fetch(session, p, "/", host="app.test", headers=basic("alice", "again wrong"))

    assert blocked.status == 429 and blocked.headers["Retry-After"] == "1"
    assert checks == auth_module.FREE_FAILURES  # a throttled attempt runs no check
    assert sixth.status == 401
    assert blocked_longer.status == 429 and blocked_longer.headers["Retry-After"] == "2"
    assert ok.status == 200
    assert fresh.status == 401  # a success forgot the failures: not throttled at once
    events = await rec.wait(10)
    assert [e.error for e in events if e.status == 429] == ["auth: too many failed logins"] * 2


async def test_throttling_is_per_client_ip_and_survives_an_apply(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    fake_clock: FakeClock,
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    good = basic("alice", "correct horse")
    for i in range(auth_module.FREE_FAILURES):
        await fetch(session, p, "/", host="app.test", headers=basic("alice", f"guess{i}"))

    changed = make_config(site("app", ["app.test", "www.app.test"], [echo.url], auth={"users": USERS}))
    await asyncio.to_thread(p.engine.apply, changed)
    still = await fetch(session, p, "/", host="app.test", headers=good)
    async with client_at("127.0.0.2") as other:
        elsewhere = await fetch(other, p, "/", host="app.test", headers=good)

    assert still.status == 429
    assert elsewhere.status == 200


async def test_a_changed_password_is_checked_again(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await _start(proxy, echo)
    old = basic("alice", "correct horse")
    assert (await fetch(session, p, "/", host="app.test", headers=old)).status == 200

    new_users = {"alice": hash_password("new one", n=2**4)}
    await asyncio.to_thread(
        p.engine.apply, make_config(site("app", ["app.test"], [echo.url], auth={"users": new_users}))
    )
    stale = await fetch(session, p, "/", host="app.test", headers=old)
    fresh = await fetch(session, p, "/", host="app.test", headers=basic("alice", "new one"))

    assert stale.status == 401  # the remembered check named the old hash
    assert fresh.status == 200


async def test_bypass_networks_need_no_password_and_lose_authorization(proxy: StartProxy, echo: Backend) -> None:
    p = await _start(proxy, echo, bypass=["127.0.0.2/32"])

    async with client_at("127.0.0.2") as lan, client_at("127.0.0.3") as outside:
        free = await fetch(lan, p, "/", host="app.test")
        with_header = await fetch(lan, p, "/", host="app.test", headers={"Authorization": "Basic Zm9vOmJhcg=="})
        challenged = await fetch(outside, p, "/", host="app.test")

    assert free.status == 200
    assert with_header.seen.all("Authorization") == []
    assert challenged.status == 401


def test_the_failure_table_is_bounded() -> None:
    throttle = FailureThrottle(max_tracked=50)
    for i in range(500):
        throttle.fail(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(throttle) == 50
    # Long after, idle entries are forgotten as clients come.
    for _ in range(10):
        throttle.wait("192.168.0.1", auth_module.FAILURE_WINDOW + 10)
    assert len(throttle) == 0
