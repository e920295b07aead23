"""rate_limit: a token bucket per client IP (IPv6 by /64) per site, 429 with Retry-After; a fake clock refills it."""

from __future__ import annotations

import asyncio

import aiohttp

from homeproxy.engine.features.ratelimit import Buckets
from tests.engine.conftest import Backend, fetch, make_config, record, site
from tests.engine.features.conftest import FakeClock, StartFeatureProxy, client_at


async def test_burst_then_429_with_retry_after_then_refill(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    config = make_config(site("app", ["app.test"], [echo.url], rate_limit={"rate": "1/s", "burst": 3}))
    p = await feature_proxy(config, clock=fake_clock)
    rec = record(p)

    burst = [await fetch(session, p, f"/{i}", host="app.test") for i in range(3)]
    limited = await fetch(session, p, "/over", host="app.test", headers={"Accept": "text/html"})
    fake_clock.advance(1.0)
    refilled = await fetch(session, p, "/later", host="app.test")
    again = await fetch(session, p, "/again", host="app.test")

    assert [r.status for r in burst] == [200, 200, 200]
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "1"
    assert b"429 Too Many Requests" in limited.body and b'"headers"' not in limited.body
    assert refilled.status == 200
    assert again.status == 429
    events = await rec.wait(6)
    over = next(e for e in events if e.path == "/over")
    assert over.status == 429 and over.upstream == "" and over.error == "rate limited"


async def test_retry_after_is_the_wait_for_the_next_token(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    # A string rate alone: burst is the rate rounded up (1).
    p = await feature_proxy(make_config(site("app", ["app.test"], [echo.url], rate_limit="1/m")), clock=fake_clock)

    first = await fetch(session, p, "/", host="app.test")
    second = await fetch(session, p, "/", host="app.test")
    fake_clock.advance(45.5)
    third = await fetch(session, p, "/", host="app.test")
    fake_clock.advance(14.5)
    fourth = await fetch(session, p, "/", host="app.test")

    assert first.status == 200
    assert (second.status, second.headers["Retry-After"]) == (429, "60")
    assert (third.status, third.headers["Retry-After"]) == (429, "15")  # rounded up
    assert fourth.status == 200


async def test_each_client_ip_has_its_own_bucket(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await feature_proxy(make_config(site("app", ["app.test"], [echo.url], rate_limit="1/s")), clock=fake_clock)

    assert (await fetch(session, p, "/", host="app.test")).status == 200
    assert (await fetch(session, p, "/", host="app.test")).status == 429
    async with client_at("127.0.0.2") as other:
        assert (await fetch(other, p, "/", host="app.test")).status == 200
        assert (await fetch(other, p, "/", host="app.test")).status == 429


async def test_clients_behind_a_trusted_proxy_are_told_apart(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    config = make_config(site("app", ["app.test"], [echo.url], rate_limit="1/s"), trusted_proxies=["127.0.0.1/32"])
    p = await feature_proxy(config, clock=fake_clock)

    async def as_client(ip: str) -> int:
        return (await fetch(session, p, "/", host="app.test", headers={"X-Forwarded-For": ip})).status

    assert await as_client("192.168.1.10") == 200
    assert await as_client("192.168.1.10") == 429
    assert await as_client("::ffff:192.168.1.10") == 429  # the same client, IPv4-mapped
    assert await as_client("192.168.1.11") == 200
    assert await as_client("2001:db8::1") == 200


async def test_an_ipv6_client_shares_one_bucket_across_its_64(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    config = make_config(
        site("app", ["app.test"], [echo.url], rate_limit={"rate": "1/s", "burst": 2}), trusted_proxies=["127.0.0.1/32"]
    )
    p = await feature_proxy(config, clock=fake_clock)

    async def as_client(ip: str) -> int:
        return (await fetch(session, p, "/", host="app.test", headers={"X-Forwarded-For": ip})).status

    # Three addresses of 2001:db8:1:2::/64 (as a host rotating privacy addresses would) share
    # a burst of 2; the neighbouring /64 and another /48 still have theirs.
    same_64 = [
        await as_client(ip) for ip in ("2001:db8:1:2::1", "2001:db8:1:2:aaaa::7", "2001:db8:1:2:ffff:ffff:ffff:fffe")
    ]
    other_64 = [await as_client(ip) for ip in ("2001:db8:1:3::1", "2001:db8:1:3::2", "2001:db8:1:3::3")]
    other_48 = await as_client("2001:db8:2:2::1")

    assert same_64 == [200, 200, 429]
    assert other_64 == [200, 200, 429]
    assert other_48 == 200


async def test_forwarded_for_from_an_untrusted_client_does_not_escape_the_limit(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await feature_proxy(make_config(site("app", ["app.test"], [echo.url], rate_limit="1/s")), clock=fake_clock)

    first = await fetch(session, p, "/", host="app.test", headers={"X-Forwarded-For": "10.0.0.1"})
    second = await fetch(session, p, "/", host="app.test", headers={"X-Forwarded-For": "10.0.0.2"})

    assert (first.status, second.status) == (200, 429)


async def test_sites_have_separate_limits(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    config = make_config(
        site("a", ["a.test"], [echo.url], rate_limit="1/s"),
        site("b", ["b.test"], [echo.url], rate_limit="1/s"),
        site("free", ["free.test"], [echo.url]),
    )
    p = await feature_proxy(config, clock=fake_clock)

    assert (await fetch(session, p, "/", host="a.test")).status == 200
    assert (await fetch(session, p, "/", host="a.test")).status == 429
    assert (await fetch(session, p, "/", host="b.test")).status == 200
    for _ in range(5):
        assert (await fetch(session, p, "/", host="free.test")).status == 200


async def test_buckets_survive_a_config_apply(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await feature_proxy(make_config(site("app", ["app.test"], [echo.url], rate_limit="1/s")), clock=fake_clock)
    assert (await fetch(session, p, "/", host="app.test")).status == 200

    # A different rate and another host: the site's empty bucket is still empty.
    changed = make_config(site("app", ["app.test", "app2.test"], [echo.url], rate_limit={"rate": "2/s", "burst": 5}))
    await asyncio.to_thread(p.engine.apply, changed)
    limited = await fetch(session, p, "/", host="app2.test")
    fake_clock.advance(0.5)  # 2/s now: one token back
    refilled = await fetch(session, p, "/", host="app.test")

    assert limited.status == 429
    assert refilled.status == 200


async def test_a_step_back_of_the_clock_does_not_drain_buckets(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    config = make_config(site("app", ["app.test"], [echo.url], rate_limit={"rate": "1/s", "burst": 2}))
    p = await feature_proxy(config, clock=fake_clock)

    assert (await fetch(session, p, "/", host="app.test")).status == 200
    fake_clock.advance(-3600)
    assert (await fetch(session, p, "/", host="app.test")).status == 200
    assert (await fetch(session, p, "/", host="app.test")).status == 429


def test_the_table_is_bounded_and_forgets_full_buckets() -> None:
    buckets = Buckets(max_clients=100)
    for i in range(1000):
        assert buckets.take(f"10.0.{i // 256}.{i % 256}", 0.0, 1.0, 1) == 0.0
    assert len(buckets) == 100
    # An evicted client comes back with a full bucket; a remembered one is still empty.
    assert buckets.take("10.0.0.0", 0.0, 1.0, 1) == 0.0
    assert buckets.take("10.0.3.231", 0.0, 1.0, 1) == 1.0
    # Much later every bucket is full again: they are swept as requests come.
    for i in range(20):
        buckets.take(f"192.168.0.{i}", 1000.0, 1.0, 1)
    assert len(buckets) < 100
