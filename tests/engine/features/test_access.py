"""allow / deny: per-site client networks, IPv4 and IPv6 (and IPv4-mapped IPv6), before auth.

Another client IP on loopback: a client bound to 127.0.0.2. IPv6 and mapped
clients: a trusted proxy (127.0.0.1) forwarding for them in X-Forwarded-For.
"""

from __future__ import annotations

import aiohttp

from homeproxy.engine.features.access import Networks, client_address
from homeproxy.passwords import hash_password
from tests.engine.conftest import (
    Backend,
    StartProxy,
    fetch,
    make_config,
    raw_request,
    record,
    site,
)
from tests.engine.features.conftest import client_at

HTML = {"Accept": "text/html"}


def _forbidden(status: int, body: bytes) -> None:
    assert status == 403, body[:300]
    assert b"403 Forbidden" in body
    assert b'"headers"' not in body  # the echo backend's answer: the upstream was not reached


async def test_allow_serves_only_listed_networks(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], allow=["127.0.0.1/32"])))
    rec = record(p)

    ok = await fetch(session, p, "/", host="app.test")
    async with client_at("127.0.0.2") as other:
        denied = await fetch(other, p, "/secret", host="app.test", headers=HTML)

    assert ok.status == 200 and ok.seen.path == "/"
    _forbidden(denied.status, denied.body)
    assert denied.headers["Content-Type"].startswith("text/html")
    events = await rec.wait(2)
    refused = next(e for e in events if e.path == "/secret")
    assert refused.status == 403 and refused.client == "127.0.0.2" and refused.upstream == ""
    assert "not allowed" in refused.error


async def test_deny_wins_over_allow(proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession) -> None:
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], allow=["127.0.0.0/8"], deny=["127.0.0.2"])))

    ok = await fetch(session, p, "/", host="app.test")
    async with client_at("127.0.0.2") as denied_client, client_at("127.0.0.3") as other:
        denied = await fetch(denied_client, p, "/", host="app.test")
        also_ok = await fetch(other, p, "/", host="app.test")

    assert ok.status == 200 and also_ok.status == 200
    _forbidden(denied.status, denied.body)


async def test_deny_alone_lets_everyone_else_in(proxy: StartProxy, echo: Backend) -> None:
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], deny=["127.0.0.2/32"])))

    async with client_at("127.0.0.2") as denied_client, client_at("127.0.0.9") as other:
        denied = await fetch(denied_client, p, "/", host="app.test")
        ok = await fetch(other, p, "/", host="app.test")

    _forbidden(denied.status, denied.body)
    assert ok.status == 200


async def test_rules_are_per_site(proxy: StartProxy, echo: Backend) -> None:
    p = await proxy(
        make_config(
            site("closed", ["closed.test"], [echo.url], allow=["10.0.0.0/8"]),
            site("open", ["open.test"], [echo.url]),
        )
    )

    async with client_at("127.0.0.2") as client:
        closed = await fetch(client, p, "/", host="closed.test")
        open_ = await fetch(client, p, "/", host="open.test")

    _forbidden(closed.status, closed.body)
    assert open_.status == 200


#: Client (as a trusted proxy forwards it) -> served?
IPV6_AND_MAPPED = {
    "2001:db8::7": True,
    "2001:db8:0:0:0:0:0:7": True,
    "2001:db9::1": False,
    "fd00::1": False,
    "192.168.1.7": True,  # the IPv4 rule
    "::ffff:192.168.1.7": True,  # IPv4-mapped IPv6 is the IPv4 client it carries
    "::ffff:192.168.2.7": False,
    "10.0.0.1": False,
}


async def test_ipv6_and_mapped_clients_from_a_trusted_proxy(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    config = make_config(
        site("app", ["app.test"], [echo.url], allow=["2001:db8::/32", "192.168.1.0/24"]),
        trusted_proxies=["127.0.0.1/32"],
    )
    p = await proxy(config)

    served = {}
    for client in IPV6_AND_MAPPED:
        got = await fetch(session, p, "/", host="app.test", headers={"X-Forwarded-For": client})
        assert got.status in (200, 403), got.body
        served[client] = got.status == 200

    assert served == IPV6_AND_MAPPED


async def test_mapped_deny_rule_matches_the_plain_ipv4_client(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    config = make_config(
        site("app", ["app.test"], [echo.url], deny=["::ffff:10.0.0.0/104"]),
        trusted_proxies=["127.0.0.1/32"],
    )
    p = await proxy(config)

    denied = await fetch(session, p, "/", host="app.test", headers={"X-Forwarded-For": "10.1.2.3"})
    ok = await fetch(session, p, "/", host="app.test", headers={"X-Forwarded-For": "11.1.2.3"})

    _forbidden(denied.status, denied.body)
    assert ok.status == 200


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    # No trusted proxies: a client cannot claim to be on the allowed network.
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], allow=["10.0.0.0/8"])))

    got = await fetch(session, p, "/", host="app.test", headers={"X-Forwarded-For": "10.0.0.1"})

    _forbidden(got.status, got.body)


async def test_trusted_proxy_client_is_the_rightmost_untrusted_hop(proxy: StartProxy, echo: Backend) -> None:
    config = make_config(
        site("app", ["app.test"], [echo.url], allow=["192.168.1.0/24"]), trusted_proxies=["127.0.0.1/32"]
    )
    p = await proxy(config)

    # A spoofed allowed address on the left does not help: the proxy saw 203.0.113.9 connect.
    spoofed = await raw_request(
        p.port, b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 192.168.1.5, 203.0.113.9\r\n\r\n"
    )
    # Repeated X-Forwarded-For lines are one list (RFC 9110 section 5.3): the last hop counts.
    repeated = await raw_request(
        p.port,
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 192.168.1.5\r\n\r\n",
    )
    garbage = await raw_request(p.port, b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: not-an-ip\r\n\r\n")

    _forbidden(spoofed.status, spoofed.body)
    assert repeated.status == 200, repeated.body
    _forbidden(garbage.status, garbage.body)  # falls back to the peer, 127.0.0.1


async def test_access_is_checked_before_auth(proxy: StartProxy, echo: Backend) -> None:
    users = {"alice": hash_password("pw", n=2**4)}
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], deny=["127.0.0.2/32"], auth={"users": users})))

    async with client_at("127.0.0.2") as denied_client, client_at("127.0.0.3") as other:
        denied = await fetch(denied_client, p, "/", host="app.test")
        challenged = await fetch(other, p, "/", host="app.test")

    _forbidden(denied.status, denied.body)
    assert "WWW-Authenticate" not in denied.headers  # a denied network does not learn a login exists
    assert challenged.status == 401 and "WWW-Authenticate" in challenged.headers


async def test_huge_and_too_many_headers_get_a_431_and_the_site_keeps_serving(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], allow=["127.0.0.1/32"])))

    huge = await raw_request(p.port, b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    too_many = await raw_request(p.port, b"GET / HTTP/1.1\r\nHost: app.test\r\n" + many + b"\r\n")
    after = await fetch(session, p, "/", host="app.test")
    async with client_at("127.0.0.2") as other:
        denied = await fetch(other, p, "/", host="app.test")

    assert huge.status == 431 and too_many.status == 431  # RFC 6585: Request Header Fields Too Large
    assert after.status == 200
    _forbidden(denied.status, denied.body)


def test_networks_match_mapped_and_scoped_addresses() -> None:
    nets = Networks(["192.168.0.0/16", "::ffff:10.0.0.0/104", "fe80::/10"])

    assert nets.contains(client_address("192.168.4.4"))
    assert nets.contains(client_address("::ffff:192.168.4.4"))
    assert nets.contains(client_address("10.9.9.9"))
    assert nets.contains(client_address("fe80::1%eth0"))
    assert not nets.contains(client_address("172.16.0.1"))
    assert not nets.contains(client_address(""))
    assert not nets.contains(client_address("unix-socket"))
    assert not Networks([])
