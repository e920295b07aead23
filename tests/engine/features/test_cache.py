"""cache: the shared HTTP cache (RFC 9111) through the real engine, against real loopback upstreams.

Every upstream here counts the requests it gets, so each test proves whether the
upstream was asked; every test also checks the X-Cache header (absent without the
feature). Time is a `FakeClock` injected into the engine, and upstreams date their
answers by the same clock, so freshness is exact and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import tomlkit
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from homeproxy.config import Config
from homeproxy.config.load import parse_config
from homeproxy.engine import RequestCompleted, Stats
from homeproxy.engine.features.cache import (
    Directives,
    SharedCache,
    http_date,
    parse_http_date,
)
from homeproxy.engine.stats import SiteStats
from homeproxy.passwords import hash_password
from tests.engine.conftest import (
    Proxy,
    StartBackend,
    StartRawBackend,
    read_head,
    record,
)
from tests.engine.features.conftest import FakeClock, StartFeatureProxy
from tests.waiting import wait_for

HOST = "app.test"

Respond = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


# --- helpers ----------------------------------------------------------------------------


@dataclass
class Answer:
    """What the origin answers on one path."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b"hello from the origin"
    date: bool = True
    """Send Date from the fake clock (aiohttp would otherwise add the real time)."""
    not_modified: list[tuple[str, str]] | None = None
    """If set: a conditional request gets a 304 with these headers."""


@dataclass
class Seen:
    method: str
    path: str
    headers: CIMultiDictProxy[str]


class Origin:
    """A scripted upstream: counts requests per path and remembers what it saw."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.hits: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self.answers: dict[str, Answer | Respond] = {}
        self.url = ""

    def date(self, offset: float = 0.0) -> str:
        return http_date(self.clock.now + offset)

    def last(self, path: str) -> Seen:
        return [s for s in self.seen if s.path == path][-1]

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.hits[request.path_qs] += 1
        self.seen.append(Seen(request.method, request.path_qs, request.headers))
        await request.read()
        answer = self.answers.get(request.path_qs) or self.answers.get(request.path) or Answer(404)
        if callable(answer):
            return await answer(request)
        headers: CIMultiDict[str] = CIMultiDict(answer.headers)
        if answer.date and "Date" not in headers:
            headers["Date"] = self.date()
        conditional = "If-None-Match" in request.headers or "If-Modified-Since" in request.headers
        if answer.not_modified is not None and conditional:
            out: CIMultiDict[str] = CIMultiDict(answer.not_modified)
            out.setdefault("Date", self.date())
            return web.Response(status=304, headers=out)
        return web.Response(status=answer.status, headers=headers, body=answer.body)


@pytest.fixture
async def origin(backend: StartBackend, fake_clock: FakeClock) -> Origin:
    o = Origin(fake_clock)
    o.url = (await backend(o.handle)).url
    return o


def config(
    upstream: str, *, shared: dict[str, Any] | None = None, sites: Iterable[dict[str, Any]] = (), **cache: Any
) -> Config:
    """One caching site `app` on app.test (cache options as given), plus `sites`."""
    site = {"name": "app", "hosts": [HOST], "upstreams": [upstream], "cache": cache or True}
    doc: dict[str, Any] = {
        "server": {"listen": ["127.0.0.1"], "http_port": 0, "drain_timeout": "5s"},
        "sites": [site, *sites],
    }
    if shared:
        doc["cache"] = shared
    return parse_config(tomlkit.dumps(doc), "test.toml")


@dataclass
class Got:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def cache(self) -> str | None:
        return self.headers.get("X-Cache")


async def get(
    session: aiohttp.ClientSession,
    p: Proxy,
    path: str = "/",
    *headers: tuple[str, str],
    method: str = "GET",
    host: str = HOST,
    data: bytes | None = None,
) -> Got:
    h = CIMultiDict([("Host", host), *headers])
    url = URL(p.url + path, encoded=True)
    async with session.request(method, url, headers=h, data=data, allow_redirects=False) as resp:
        return Got(resp.status, resp.headers, await resp.read())


@pytest.fixture
async def start(feature_proxy: StartFeatureProxy, fake_clock: FakeClock) -> Callable[[Config], Awaitable[Proxy]]:
    async def run(cfg: Config) -> Proxy:
        return await feature_proxy(cfg, clock=fake_clock)

    return run


StartCached = Callable[[Config], Awaitable[Proxy]]


def shared(p: Proxy) -> SharedCache:
    cache = p.engine.features.cache
    assert cache is not None
    return cache


# --- storing and serving ----------------------------------------------------------------


async def test_a_fresh_response_is_served_from_the_cache_with_its_age(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60"), ("ETag", '"v1"')])
    p = await start(config(origin.url))
    events = record(p)

    first = await get(session, p, "/a")
    fake_clock.advance(10)
    second = await get(session, p, "/a")

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert first.body == second.body == b"hello from the origin"
    assert origin.hits["/a"] == 1
    assert second.headers["Age"] == "10"
    assert second.headers["ETag"] == '"v1"'
    # RFC 9111 section 4: the stored Date is not changed.
    assert second.headers["Date"] == first.headers["Date"]
    assert [e.cache for e in await events.wait(2)] == ["MISS", "HIT"]
    hit = events.events[1]
    assert hit.upstream == "" and hit.bytes_out == len(first.body)


async def test_a_response_is_stale_once_its_max_age_has_passed(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60")])
    p = await start(config(origin.url))

    await get(session, p, "/a")
    fake_clock.advance(59)
    still = await get(session, p, "/a")
    fake_clock.advance(2)
    stale = await get(session, p, "/a")

    assert (still.cache, stale.cache) == ("HIT", "MISS")
    assert origin.hits["/a"] == 2


@pytest.mark.parametrize(
    ("headers", "fresh_for"),
    [
        ([("Cache-Control", "max-age=600, s-maxage=30")], 30),  # s-maxage wins for a shared cache
        ([("Cache-Control", "s-maxage=300, max-age=5")], 300),
        ([("Cache-Control", "max-age=100"), ("Expires", "@-10000")], 100),  # max-age beats Expires
        ([("Expires", "@+120")], 120),
        ([("Cache-Control", "max-age=100"), ("Age", "40")], 60),  # the upstream's Age counts
        ([("Expires", "@+100"), ("Age", "30")], 70),
    ],
)
async def test_freshness_lifetime_and_age(
    start: StartCached,
    origin: Origin,
    fake_clock: FakeClock,
    session: aiohttp.ClientSession,
    headers: list[tuple[str, str]],
    fresh_for: int,
) -> None:
    now = fake_clock.now
    resolved = [(k, http_date(now + float(v[1:])) if v.startswith("@") else v) for k, v in headers]
    origin.answers["/a"] = Answer(headers=resolved)
    p = await start(config(origin.url))

    await get(session, p, "/a")
    fake_clock.advance(fresh_for - 1)
    hit = await get(session, p, "/a")
    fake_clock.advance(2)
    miss = await get(session, p, "/a")

    assert (hit.cache, miss.cache) == ("HIT", "MISS")
    assert origin.hits["/a"] == 2


@pytest.mark.parametrize(
    "headers",
    [
        [("Expires", "0")],  # invalid dates are in the past (RFC 9111 section 5.3)
        [("Expires", "Thu, 18 Aug 2050 02:01:18 UTC")],
        [("Expires", "Thu, 18 Aug 50 02:01:18 GMT")],
        [("Expires", "Thu 18 Aug 2050 02:01:18 GMT")],
        [("Expires", "@-1")],
        [("Cache-Control", "max-age=0"), ("Expires", "@+3600")],
        [("Cache-Control", "max-age=10"), ("Age", "15")],
        [("Date", "@+400"), ("Expires", "@+300")],  # Expires before Date
    ],
)
async def test_responses_that_arrive_stale_are_not_reused(
    start: StartCached,
    origin: Origin,
    fake_clock: FakeClock,
    session: aiohttp.ClientSession,
    headers: list[tuple[str, str]],
) -> None:
    now = fake_clock.now
    resolved = [(k, http_date(now + float(v[1:])) if v.startswith("@") else v) for k, v in headers]
    origin.answers["/a"] = Answer(headers=resolved)
    p = await start(config(origin.url))

    first = await get(session, p, "/a")
    second = await get(session, p, "/a")

    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert origin.hits["/a"] == 2


async def test_an_invalid_date_counts_as_the_time_received(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Date", "foo"), ("Expires", origin.date(+10))])
    p = await start(config(origin.url))

    await get(session, p, "/a")
    fake_clock.advance(5)
    hit = await get(session, p, "/a")

    assert hit.cache == "HIT"
    assert hit.headers["Date"] == http_date(fake_clock.now - 5)  # replaced by the time it was received
    assert hit.headers["Age"] == "5"
    assert origin.hits["/a"] == 1


async def test_a_response_without_date_gets_one(
    start: StartCached, raw_backend: StartRawBackend, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    hits = 0

    async def no_date(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hits
        while await reader.readuntil(b"\r\n\r\n"):
            hits += 1
            writer.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    b = await raw_backend(no_date)
    p = await start(config(b.url))
    received = fake_clock.now

    await get(session, p, "/a")
    fake_clock.advance(3)
    hit = await get(session, p, "/a")

    assert hit.cache == "HIT" and hit.body == b"ok"
    assert hit.headers["Date"] == http_date(received)
    assert hit.headers["Age"] == "3"
    assert hits == 1


async def test_different_query_strings_are_different_entries(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/q"] = Answer(headers=[("Cache-Control", "max-age=60")])
    p = await start(config(origin.url))

    got = [await get(session, p, path) for path in ("/q?x=1", "/q?x=2", "/q?x=1", "/q?x=2")]

    assert [g.cache for g in got] == ["MISS", "MISS", "HIT", "HIT"]
    assert origin.hits == Counter({"/q?x=1": 1, "/q?x=2": 1})


# --- what is not stored -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [],  # no freshness, no validator
        [("Cache-Control", "no-store, max-age=600")],
        [("Cache-Control", "max-age=600, No-StOrE")],
        [("Cache-Control", "private, max-age=600")],
        [("Cache-Control", "max-age=600"), ("Set-Cookie", "session=abc")],
        [("Cache-Control", "max-age=600"), ("Vary", "*")],
        [("Cache-Control", "max-age=600"), ("Vary", ", ".join(f"X-H{i}" for i in range(100)))],
        [("Cache-Control", "max-age=0")],  # never reusable without a full fetch: not worth keeping
        [("Cache-Control", "max-age=600, no-cache")],
    ],
)
async def test_responses_a_shared_cache_must_not_store(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession, headers: list[tuple[str, str]]
) -> None:
    origin.answers["/a"] = Answer(headers=headers)
    p = await start(config(origin.url))

    first = await get(session, p, "/a")
    second = await get(session, p, "/a")

    assert first.status == second.status == 200
    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert origin.hits["/a"] == 2
    assert len(shared(p)) == 0


async def test_set_cookie_responses_are_stored_when_the_site_opts_in_but_the_cookie_is_not(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=600"), ("Set-Cookie", "session=abc")])
    p = await start(config(origin.url, cookies=True))

    first = await get(session, p, "/a")
    second = await get(session, p, "/a")

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert first.headers.getall("Set-Cookie") == ["session=abc"]  # the client that caused the fetch
    assert "Set-Cookie" not in second.headers  # never replayed to anyone else
    assert origin.hits["/a"] == 1


@pytest.mark.parametrize(
    ("cache_control", "stored"),
    [
        ("max-age=600", False),
        ("max-age=600, public", True),
        ("s-maxage=600", True),
        ("max-age=600, must-revalidate", True),
    ],
)
async def test_answers_to_requests_with_authorization(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession, cache_control: str, stored: bool
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", cache_control)])
    p = await start(config(origin.url))

    first = await get(session, p, "/a", ("Authorization", "Bearer x"))
    second = await get(session, p, "/a")

    assert origin.seen[0].headers["Authorization"] == "Bearer x"  # passed on, as it must be
    assert first.cache == "MISS"
    assert second.cache == ("HIT" if stored else "MISS")
    assert origin.hits["/a"] == (1 if stored else 2)


def auth_config(upstream: str, auth: dict[str, Any]) -> Config:
    doc = {
        "server": {"listen": ["127.0.0.1"], "http_port": 0, "drain_timeout": "5s"},
        "sites": [{"name": "app", "hosts": [HOST], "upstreams": [upstream], "cache": True, "auth": auth}],
    }
    return parse_config(tomlkit.dumps(doc), "test.toml")


async def test_pages_behind_homeproxys_basic_auth_stay_cacheable(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    # The upstream never sees the client's Authorization (auth removes it), so its answer is not personal.
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=600")])
    p = await start(auth_config(origin.url, {"users": {"alice": hash_password("secret", n=2**4)}}))
    login = ("Authorization", "Basic " + base64.b64encode(b"alice:secret").decode())

    first = await get(session, p, "/a", login)
    second = await get(session, p, "/a", login)
    refused = await get(session, p, "/a")

    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert "Authorization" not in origin.seen[0].headers
    assert refused.status == 401  # auth still comes first
    assert origin.hits["/a"] == 1


@pytest.mark.parametrize(("cache_control", "stored"), [("max-age=600", False), ("max-age=600, public", True)])
async def test_answers_made_for_a_forward_auth_identity_are_shared_only_when_public(
    start: StartCached,
    origin: Origin,
    backend: StartBackend,
    session: aiohttp.ClientSession,
    cache_control: str,
    stored: bool,
) -> None:
    async def verify(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(headers={"Remote-User": "alice"})

    auth = await backend(verify)
    origin.answers["/a"] = Answer(headers=[("Cache-Control", cache_control)])
    p = await start(auth_config(origin.url, {"forward": auth.url + "/verify"}))

    first = await get(session, p, "/a")
    second = await get(session, p, "/a")

    assert origin.seen[0].headers["Remote-User"] == "alice"
    assert (first.cache, second.cache) == ("MISS", "HIT" if stored else "MISS")
    assert origin.hits["/a"] == (1 if stored else 2)


@pytest.mark.parametrize(
    ("status", "headers", "stored"),
    [
        (404, [("Cache-Control", "max-age=60")], True),
        (301, [("Cache-Control", "max-age=60"), ("Location", "/b")], True),
        (500, [("Cache-Control", "max-age=60")], True),  # any final status with explicit freshness
        (206, [("Cache-Control", "max-age=60"), ("Content-Range", "bytes 0-4/10")], False),
        (200, [("ETag", '"x"')], True),  # a validator and default_ttl
        (404, [("Last-Modified", "@-86400")], True),
        (403, [("ETag", '"x"')], False),  # not heuristically cacheable
        (599, [("ETag", '"x"')], False),
        (599, [("ETag", '"x"'), ("Cache-Control", "public")], True),
    ],
)
async def test_which_statuses_are_stored(
    start: StartCached,
    origin: Origin,
    fake_clock: FakeClock,
    session: aiohttp.ClientSession,
    status: int,
    headers: list[tuple[str, str]],
    stored: bool,
) -> None:
    resolved = [(k, http_date(fake_clock.now + float(v[1:])) if v.startswith("@") else v) for k, v in headers]
    origin.answers["/a"] = Answer(status, resolved)
    p = await start(config(origin.url, default_ttl="30s"))

    first = await get(session, p, "/a")
    second = await get(session, p, "/a")

    assert first.status == second.status == status
    assert (first.cache, second.cache) == ("MISS", "HIT" if stored else "MISS")
    assert origin.hits["/a"] == (1 if stored else 2)


async def test_no_heuristic_freshness_unless_the_site_sets_default_ttl(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    # Last-Modified a day ago: the "10%" heuristic would say fresh for 2.4 hours; homeproxy says
    # revalidate (default_ttl = 0), and the origin confirms with a 304.
    origin.answers["/a"] = Answer(
        headers=[("Last-Modified", origin.date(-86400))], not_modified=[("Last-Modified", origin.date(-86400))]
    )
    p = await start(config(origin.url))

    first = await get(session, p, "/a")
    second = await get(session, p, "/a")

    assert (first.cache, second.cache) == ("MISS", "REVALIDATED")
    assert second.body == first.body
    assert origin.last("/a").headers["If-Modified-Since"] == origin.date(-86400)
    assert origin.hits["/a"] == 2


async def test_default_ttl_makes_validated_responses_fresh_for_that_long(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("ETag", '"e"')], not_modified=[("ETag", '"e"')])
    p = await start(config(origin.url, default_ttl="2m"))

    await get(session, p, "/a")
    fake_clock.advance(119)
    hit = await get(session, p, "/a")
    fake_clock.advance(2)
    revalidated = await get(session, p, "/a")

    assert (hit.cache, revalidated.cache) == ("HIT", "REVALIDATED")
    assert origin.hits["/a"] == 2


# --- Cache-Control parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "cache_control",
    [
        "max-age=a100",
        "max-age=100a",
        "max-age=-100",
        "max-age=100.5",
        "max-age =100",
        "max-age= 100",
        "max-age='100'",
        "max-age=100, max-age=1",  # conflicting duplicates: stale, the conservative reading
        'extension="max-age=100", max-age=1',  # max-age in a quoted string is no directive
        'max-age=1, extension="max-age=100"',
        "s-maxage=abc, max-age=100",
    ],
)
async def test_invalid_or_conflicting_freshness_counts_as_stale(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession, cache_control: str
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", cache_control)])
    p = await start(config(origin.url))

    await get(session, p, "/a")
    fake_clock.advance(2)
    second = await get(session, p, "/a")

    assert second.cache == "MISS"
    assert origin.hits["/a"] == 2


@pytest.mark.parametrize(
    "cache_control",
    [
        'max-age="100"',
        "max-age=003600",
        "MaX-AgE=100",
        "foobar, max-age=100",
        "max-age=99999999999",
        "max-age=" + "9" * 5000,  # absurd: capped at 2^31, no error
        ", ,max-age=100,,, " + ", ".join(f"ext{i}" for i in range(500)),
    ],
)
async def test_valid_freshness_in_unusual_forms(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession, cache_control: str
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", cache_control)])
    p = await start(config(origin.url))

    await get(session, p, "/a")
    fake_clock.advance(50)
    second = await get(session, p, "/a")

    assert second.cache == "HIT"
    assert origin.hits["/a"] == 1


def test_directive_parser() -> None:
    cc = Directives(['max-age=60, private="Set-Cookie, X-User", no-cache', 'x="a, b", S-MAXAGE="30"'])
    assert cc.seconds("max-age") == 60
    assert cc.seconds("s-maxage") == 30
    assert cc.fields("private") == frozenset({"set-cookie", "x-user"})
    assert cc.unqualified("no-cache") and not cc.unqualified("private")
    assert "x" in cc and "a" not in cc and " b" not in cc
    assert Directives(["max-age=1, max-age=1"]).seconds("max-age") == 1  # duplicates that agree are fine
    assert Directives(['max-age="1']).seconds("max-age") == -1  # unterminated quote
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == parse_http_date("Sun Nov  6 08:49:37 1994")
    assert parse_http_date("SUN, 06 NOV 1994 08:49:37 gmt") == 784111777.0
    assert parse_http_date("Sun, 31 Feb 1994 08:49:37 GMT") is None


async def test_no_cache_and_private_with_field_names_store_the_rest(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(
        headers=[
            ("Cache-Control", 'max-age=600, no-cache="X-A", private="X-B"'),
            ("X-A", "1"),
            ("X-B", "2"),
            ("X-C", "3"),
        ]
    )
    p = await start(config(origin.url))

    first = await get(session, p, "/a")
    second = await get(session, p, "/a")

    assert (first.headers["X-A"], first.headers["X-B"]) == ("1", "2")
    assert second.cache == "HIT"
    assert "X-A" not in second.headers and "X-B" not in second.headers
    assert second.headers["X-C"] == "3"
    assert origin.hits["/a"] == 1


# --- revalidation ---------------------------------------------------------------------------


async def test_no_cache_responses_are_stored_but_always_revalidated(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(
        headers=[("Cache-Control", "max-age=600, no-cache"), ("ETag", '"abc"')], not_modified=[("ETag", '"abc"')]
    )
    p = await start(config(origin.url))

    first = await get(session, p, "/a")
    second = await get(session, p, "/a")

    assert (first.cache, second.cache) == ("MISS", "REVALIDATED")
    assert second.status == 200 and second.body == first.body
    assert origin.last("/a").headers["If-None-Match"] == '"abc"'
    assert origin.hits["/a"] == 2


async def test_a_304_refreshes_the_stored_headers_but_not_the_body_metadata(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(
        headers=[
            ("Cache-Control", "max-age=1"),
            ("ETag", '"v"'),
            ("Content-Type", "text/plain"),
            ("X-Version", "1"),
            ("Content-Location", "/foo"),
        ],
        body=b"0123456789",
        not_modified=[
            ("Cache-Control", "max-age=100"),
            ("ETag", '"v"'),
            ("Content-Type", "text/plain;charset=utf-8"),
            ("X-Version", "2"),
            ("Content-Location", "/bar"),
            ("Set-Cookie", "just=you"),
        ],
    )
    p = await start(config(origin.url, cookies=False))

    await get(session, p, "/a")
    fake_clock.advance(2)
    revalidated = await get(session, p, "/a")
    fake_clock.advance(50)
    hit = await get(session, p, "/a")

    assert origin.last("/a").headers["If-None-Match"] == '"v"'
    assert revalidated.cache == "REVALIDATED"
    assert revalidated.body == hit.body == b"0123456789"
    assert revalidated.headers.getall("Set-Cookie") == ["just=you"]  # this client's, not stored
    assert hit.cache == "HIT"  # fresh again for 100 s
    assert hit.headers["X-Version"] == "2"
    assert hit.headers["Content-Type"] == "text/plain;charset=utf-8"
    assert hit.headers["Content-Location"] == "/bar"
    assert hit.headers["Content-Length"] == "10"
    assert "Set-Cookie" not in hit.headers
    assert origin.hits["/a"] == 2


async def test_a_304_never_changes_content_length_or_encoding(
    start: StartCached, raw_backend: StartRawBackend, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    hits = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hits
        while head := await reader.readuntil(b"\r\n\r\n"):
            hits += 1
            date = http_date(fake_clock.now)
            if b"if-none-match" in head.lower():
                writer.write(
                    f'HTTP/1.1 304 Not Modified\r\nDate: {date}\r\nETag: "v"\r\nContent-Length: 999\r\n'
                    "Content-Encoding: gzip\r\nCache-Control: max-age=100\r\n\r\n".encode()
                )
            else:
                writer.write(
                    f'HTTP/1.1 200 OK\r\nDate: {date}\r\nETag: "v"\r\nCache-Control: max-age=1\r\n'
                    "Content-Length: 5\r\n\r\nhello".encode()
                )
            await writer.drain()

    b = await raw_backend(serve)
    p = await start(config(b.url))

    await get(session, p, "/a")
    fake_clock.advance(2)
    revalidated = await get(session, p, "/a")
    hit = await get(session, p, "/a")
    head = await get(session, p, "/a", method="HEAD")  # HEAD shows the stored Content-Length as it is

    assert (revalidated.cache, hit.cache, head.cache) == ("REVALIDATED", "HIT", "HIT")
    assert hit.body == b"hello" and hit.headers["Content-Length"] == "5"
    assert head.headers["Content-Length"] == "5"
    assert "Content-Encoding" not in hit.headers and "Content-Encoding" not in head.headers
    assert hits == 2


async def test_revalidation_with_a_changed_representation_stores_the_new_one(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    version = 1

    async def changing(request: web.BaseRequest) -> web.StreamResponse:
        etag = f'"v{version}"'
        headers = {"Cache-Control": "max-age=10", "ETag": etag, "Date": origin.date()}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=f"version {version}".encode(), headers=headers)

    origin.answers["/a"] = changing
    p = await start(config(origin.url))

    await get(session, p, "/a")
    version = 2
    fake_clock.advance(11)
    changed = await get(session, p, "/a")
    fresh = await get(session, p, "/a")

    assert (changed.cache, fresh.cache) == ("MISS", "HIT")
    assert changed.body == fresh.body == b"version 2"
    assert origin.hits["/a"] == 2


async def test_a_304_for_another_representation_is_not_used(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    async def confused(request: web.BaseRequest) -> web.StreamResponse:
        headers = {"Cache-Control": "max-age=10", "Date": origin.date()}
        if "If-None-Match" in request.headers:
            return web.Response(status=304, headers={**headers, "ETag": '"other"'})
        return web.Response(body=b"full", headers={**headers, "ETag": f'"n{origin.hits["/a"]}"'})

    origin.answers["/a"] = confused
    p = await start(config(origin.url))

    await get(session, p, "/a")
    fake_clock.advance(11)
    again = await get(session, p, "/a")

    assert again.status == 200 and again.body == b"full" and again.cache == "MISS"
    assert origin.hits["/a"] == 3  # the conditional one, then a plain one
    assert "If-None-Match" not in origin.last("/a").headers


# --- the client's own conditional requests ----------------------------------------------------


@pytest.mark.parametrize(
    ("request_headers", "status"),
    [
        ([("If-None-Match", '"abc"')], 304),
        ([("If-None-Match", 'W/"abc"')], 304),  # weak comparison
        ([("If-None-Match", '"x", "abc", "y"')], 304),
        ([("If-None-Match", "*")], 304),
        ([("If-None-Match", '"nope"')], 200),
        ([("If-Modified-Since", "@-100")], 304),
        ([("If-Modified-Since", "@-1000")], 200),  # modified since then
        ([("If-None-Match", '"nope"'), ("If-Modified-Since", "@-100")], 200),  # INM wins over IMS
        ([("If-Modified-Since", "yesterday")], 200),
    ],
)
async def test_a_clients_conditional_request_is_answered_from_the_cache(
    start: StartCached,
    origin: Origin,
    fake_clock: FakeClock,
    session: aiohttp.ClientSession,
    request_headers: list[tuple[str, str]],
    status: int,
) -> None:
    origin.answers["/a"] = Answer(
        headers=[
            ("Cache-Control", "max-age=600"),
            ("ETag", '"abc"'),
            ("Last-Modified", origin.date(-500)),
            ("Expires", origin.date(+600)),
            ("Vary", "Accept-Language"),
            ("Content-Location", "/a.en"),
            ("X-Other", "x"),
        ],
        body=b"body",
    )
    p = await start(config(origin.url))
    resolved = [(k, http_date(fake_clock.now + float(v[1:])) if v.startswith("@") else v) for k, v in request_headers]

    await get(session, p, "/a")
    got = await get(session, p, "/a", *resolved)

    assert got.cache == "HIT" and got.status == status
    assert origin.hits["/a"] == 1
    if status == 304:
        assert got.body == b""
        for name, value in [("ETag", '"abc"'), ("Cache-Control", "max-age=600"), ("Vary", "Accept-Language")]:
            assert got.headers[name] == value
        for name in ("Date", "Expires", "Content-Location", "Age"):
            assert name in got.headers
        assert "X-Other" not in got.headers
    else:
        assert got.body == b"body"


async def test_if_modified_since_without_last_modified_uses_the_stored_date(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=600")])
    p = await start(config(origin.url))

    await get(session, p, "/a")
    got = await get(session, p, "/a", ("If-Modified-Since", origin.date(-3000)))
    newer = await get(session, p, "/a", ("If-Modified-Since", origin.date()))

    assert (got.status, newer.status) == (200, 304)
    assert origin.hits["/a"] == 1


async def test_a_clients_conditional_on_a_stale_entry_is_revalidated_with_our_validators(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(
        headers=[("Cache-Control", "max-age=1"), ("ETag", '"ours"')], not_modified=[("ETag", '"ours"')]
    )
    p = await start(config(origin.url))

    await get(session, p, "/a")
    fake_clock.advance(5)
    matching = await get(session, p, "/a", ("If-None-Match", '"ours"'))
    fake_clock.advance(5)
    other = await get(session, p, "/a", ("If-None-Match", '"theirs"'))

    assert (matching.status, matching.cache) == (304, "REVALIDATED")
    assert (other.status, other.cache, other.body) == (200, "REVALIDATED", b"hello from the origin")
    assert [s.headers["If-None-Match"] for s in origin.seen[1:]] == ['"ours"', '"ours"']


async def test_conditional_requests_pass_through_on_a_miss(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60"), ("ETag", '"e"')], not_modified=[])

    p = await start(config(origin.url))
    got = await get(session, p, "/a", ("If-None-Match", '"e"'))

    assert (got.status, got.cache) == (304, "MISS")
    assert origin.last("/a").headers["If-None-Match"] == '"e"'
    assert len(shared(p)) == 0


# --- request directives ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_headers", "expected"),
    [
        ([("Cache-Control", "no-cache")], "REVALIDATED"),
        ([("Cache-Control", "max-age=0")], "REVALIDATED"),
        ([("Cache-Control", "max-age=5")], "REVALIDATED"),  # the entry is 10 s old
        ([("Cache-Control", "max-age=30")], "HIT"),
        ([("Cache-Control", "min-fresh=100")], "REVALIDATED"),  # 50 s left
        ([("Cache-Control", "min-fresh=10")], "HIT"),
        ([("Pragma", "no-cache")], "REVALIDATED"),  # HTTP/1.0's no-cache, without Cache-Control
        ([("Pragma", "no-cache"), ("Cache-Control", "max-age=3600")], "HIT"),
        ([("Pragma", "x-unknown")], "HIT"),
        ([("Cache-Control", "max-age=abc")], "REVALIDATED"),
    ],
)
async def test_request_cache_control(
    start: StartCached,
    origin: Origin,
    fake_clock: FakeClock,
    session: aiohttp.ClientSession,
    request_headers: list[tuple[str, str]],
    expected: str,
) -> None:
    origin.answers["/a"] = Answer(
        headers=[("Cache-Control", "max-age=60"), ("ETag", '"e"')], not_modified=[("ETag", '"e"')]
    )
    p = await start(config(origin.url))

    await get(session, p, "/a")
    fake_clock.advance(10)
    got = await get(session, p, "/a", *request_headers)

    assert got.cache == expected
    assert got.body == b"hello from the origin"
    assert origin.hits["/a"] == (1 if expected == "HIT" else 2)


@pytest.mark.parametrize(
    ("response_cc", "max_stale", "expected"),
    [
        ("max-age=60", "max-stale=100", "HIT"),
        ("max-age=60", "max-stale", "HIT"),
        ("max-age=60", "max-stale=5", "MISS"),  # 10 s stale
        ("max-age=60, must-revalidate", "max-stale=100", "MISS"),
        ("s-maxage=60", "max-stale=100", "MISS"),
    ],
)
async def test_max_stale(
    start: StartCached,
    origin: Origin,
    fake_clock: FakeClock,
    session: aiohttp.ClientSession,
    response_cc: str,
    max_stale: str,
    expected: str,
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", response_cc)])
    p = await start(config(origin.url))

    await get(session, p, "/a")
    fake_clock.advance(70)
    got = await get(session, p, "/a", ("Cache-Control", max_stale))

    assert got.cache == expected
    assert origin.hits["/a"] == (1 if expected == "HIT" else 2)


async def test_request_no_store_bypasses_the_cache(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60")])
    p = await start(config(origin.url))

    first = await get(session, p, "/a", ("Cache-Control", "no-store"))
    stored = await get(session, p, "/a")
    bypass = await get(session, p, "/a", ("Cache-Control", "no-store"))

    assert (first.cache, stored.cache, bypass.cache) == ("BYPASS", "MISS", "BYPASS")
    assert origin.hits["/a"] == 3


async def test_only_if_cached(start: StartCached, origin: Origin, session: aiohttp.ClientSession) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60")])
    p = await start(config(origin.url))

    miss = await get(session, p, "/a", ("Cache-Control", "only-if-cached"))
    await get(session, p, "/a")
    hit = await get(session, p, "/a", ("Cache-Control", "only-if-cached"))

    assert (miss.status, miss.cache) == (504, "MISS")
    assert (hit.status, hit.cache) == (200, "HIT")
    assert origin.hits["/a"] == 1


# --- Vary ------------------------------------------------------------------------------------


async def test_vary_keeps_one_variant_per_request_header_value(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    async def negotiated(request: web.BaseRequest) -> web.StreamResponse:
        lang = request.headers.get("Accept-Language", "none")
        headers = {"Cache-Control": "max-age=60", "Vary": "Accept-Language, X-Theme", "Date": origin.date()}
        return web.Response(text=f"{lang}/{request.headers.get('X-Theme', '-')}", headers=headers)

    origin.answers["/a"] = negotiated
    p = await start(config(origin.url))

    asks: list[tuple[tuple[str, str], ...]] = [
        (("Accept-Language", "en"),),
        (("Accept-Language", "de"),),
        (),
        (("Accept-Language", "en"), ("X-Theme", "dark")),
        (("Accept-Language", "en"),),  # hit
        (("Accept-Language", " de "),),  # hit: whitespace is normalised
        (),  # hit: absent matches absent only
        (("Accept-Language", "en"), ("X-Theme", "dark"), ("X-Unrelated", "1")),  # hit
    ]
    got = [await get(session, p, "/a", *h) for h in asks]

    assert [g.cache for g in got] == ["MISS"] * 4 + ["HIT"] * 4
    assert [g.body for g in got[4:]] == [b"en/-", b"de/-", b"none/-", b"en/dark"]
    assert origin.hits["/a"] == 4


async def test_vary_normalises_list_members_and_lines(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60"), ("Vary", "Foo")])
    p = await start(config(origin.url))

    await get(session, p, "/a", ("Foo", "1,2"))
    spaced = await get(session, p, "/a", ("Foo", " 1, 2 "))
    two_lines = await get(session, p, "/a", ("Foo", "1"), ("Foo", "2"))
    other = await get(session, p, "/a", ("Foo", "2,1"))

    assert (spaced.cache, two_lines.cache, other.cache) == ("HIT", "HIT", "MISS")
    assert origin.hits["/a"] == 2


async def test_a_new_vary_replaces_the_old_variants(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    vary = "Foo"

    async def varying(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text=vary, headers={"Cache-Control": "max-age=10", "Vary": vary, "Date": origin.date()})

    origin.answers["/a"] = varying
    p = await start(config(origin.url))

    await get(session, p, "/a", ("Foo", "1"))
    fake_clock.advance(11)
    vary = "Bar"
    await get(session, p, "/a", ("Foo", "1"), ("Bar", "x"))
    hit = await get(session, p, "/a", ("Foo", "2"), ("Bar", "x"))

    assert hit.cache == "HIT" and hit.body == b"Bar"
    assert len(shared(p)) == 1


async def test_compressed_variants_are_stored_as_they_are(
    start: StartCached, origin: Origin, backend: StartBackend
) -> None:
    text = b"compress me, please. " * 200
    origin.answers["/t"] = Answer(headers=[("Cache-Control", "max-age=60"), ("Content-Type", "text/plain")], body=text)
    cfg = parse_config(
        tomlkit.dumps(
            {
                "server": {"listen": ["127.0.0.1"], "http_port": 0},
                "sites": [
                    {"name": "app", "hosts": [HOST], "upstreams": [origin.url], "cache": True, "compression": True}
                ],
            }
        ),
        "test.toml",
    )
    p = await start(cfg)

    async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("Accept-Encoding",)) as s:
        gz = [await get(s, p, "/t", ("Accept-Encoding", "gzip")) for _ in range(2)]
        plain = [await get(s, p, "/t", ("Accept-Encoding", "identity")) for _ in range(2)]

    assert [g.cache for g in gz + plain] == ["MISS", "HIT", "MISS", "HIT"]
    assert gz[1].headers["Content-Encoding"] == "gzip" and gzip.decompress(gz[1].body) == text
    assert gz[1].body == gz[0].body
    assert "Content-Encoding" not in plain[1].headers and plain[1].body == text
    assert "accept-encoding" in gz[1].headers["Vary"].lower()
    assert origin.hits["/t"] == 2


# --- methods ---------------------------------------------------------------------------------


async def test_head_is_answered_from_a_stored_get(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60")], body=b"x" * 1000)
    p = await start(config(origin.url))

    await get(session, p, "/a")
    head = await get(session, p, "/a", method="HEAD")

    assert head.cache == "HIT" and head.body == b""
    assert head.headers["Content-Length"] == "1000"
    assert origin.hits["/a"] == 1


async def test_a_head_miss_is_forwarded_and_not_stored(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60")], body=b"x" * 1000)
    p = await start(config(origin.url))

    head = await get(session, p, "/a", method="HEAD")
    got = await get(session, p, "/a")

    assert (head.cache, got.cache) == ("MISS", "MISS")
    assert [s.method for s in origin.seen] == ["HEAD", "GET"]
    assert got.body == b"x" * 1000


async def test_range_requests_pass_through_and_206_is_not_stored(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    async def ranged(request: web.BaseRequest) -> web.StreamResponse:
        headers = {"Cache-Control": "max-age=60", "Date": origin.date()}
        if "Range" in request.headers:
            return web.Response(status=206, body=b"01", headers={**headers, "Content-Range": "bytes 0-1/10"})
        return web.Response(body=b"0123456789", headers=headers)

    origin.answers["/a"] = ranged
    p = await start(config(origin.url))

    partial = await get(session, p, "/a", ("Range", "bytes=0-1"))
    full = await get(session, p, "/a")
    partial_again = await get(session, p, "/a", ("Range", "bytes=0-1"))
    full_again = await get(session, p, "/a")

    assert (partial.status, partial.cache, partial.body) == (206, "BYPASS", b"01")
    assert (full.cache, partial_again.cache, full_again.cache) == ("MISS", "BYPASS", "HIT")
    assert partial_again.status == 206
    assert origin.hits["/a"] == 3


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "M-SEARCH"])
async def test_unsafe_methods_invalidate_the_url(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession, method: str
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60")])
    p = await start(config(origin.url))

    await get(session, p, "/a")
    hit = await get(session, p, "/a")
    changed = await get(session, p, "/a", method=method, data=b"abc")
    after = await get(session, p, "/a")

    assert (hit.cache, changed.cache, after.cache) == ("HIT", "BYPASS", "MISS")
    assert origin.hits["/a"] == 3


async def test_a_failed_unsafe_request_invalidates_nothing(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    async def fails_on_post(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "POST":
            return web.Response(status=500)
        return web.Response(text="ok", headers={"Cache-Control": "max-age=60", "Date": origin.date()})

    origin.answers["/a"] = fails_on_post
    p = await start(config(origin.url))

    await get(session, p, "/a")
    await get(session, p, "/a", method="POST", data=b"x")
    after = await get(session, p, "/a")

    assert after.cache == "HIT"


async def test_location_and_content_location_of_the_same_host_are_invalidated(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    for path in ("/loc", "/cl", "/elsewhere"):
        origin.answers[path] = Answer(headers=[("Cache-Control", "max-age=60")])

    async def created(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(
            status=201,
            headers={"Location": "loc", "Content-Location": f"https://{HOST}/cl", "Link": "</elsewhere>"},
        )

    async def moved(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=303, headers={"Location": "http://other.test/elsewhere"})

    origin.answers["/new"] = created
    origin.answers["/move"] = moved
    p = await start(config(origin.url))

    for path in ("/loc", "/cl", "/elsewhere"):
        await get(session, p, path)
    assert (await get(session, p, "/new", method="POST", data=b"x")).status == 201
    assert (await get(session, p, "/move", method="POST", data=b"x")).status == 303
    after = {path: (await get(session, p, path)).cache for path in ("/loc", "/cl", "/elsewhere")}

    assert after == {"/loc": "MISS", "/cl": "MISS", "/elsewhere": "HIT"}


async def test_an_invalidation_during_a_fetch_keeps_its_answer_out(
    start: StartCached, origin: Origin, gate: asyncio.Event, session: aiohttp.ClientSession
) -> None:
    async def slow_get(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            await gate.wait()
        return web.Response(text="v", headers={"Cache-Control": "max-age=60", "Date": origin.date()})

    origin.answers["/a"] = slow_get
    p = await start(config(origin.url))

    pending = asyncio.ensure_future(get(session, p, "/a"))
    await wait_for(lambda: origin.hits["/a"] == 1, description="the GET at the origin")
    await get(session, p, "/a", method="PUT", data=b"new")
    gate.set()
    first = await pending
    second = await get(session, p, "/a")

    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert origin.hits["/a"] == 3


async def test_websocket_upgrades_bypass_the_cache(
    start: StartCached, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    async def ws(request: web.BaseRequest) -> web.StreamResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str("echo " + msg.data)
        return sock

    b = await backend(ws)
    p = await start(config(b.url))

    async with session.ws_connect(URL(p.url + "/ws"), headers={"Host": HOST}) as conn:
        await conn.send_str("hi")
        assert (await conn.receive_str()) == "echo hi"
    assert len(shared(p)) == 0


# --- collapsing ------------------------------------------------------------------------------


async def test_concurrent_misses_make_one_upstream_request(
    start: StartCached, origin: Origin, gate: asyncio.Event, session: aiohttp.ClientSession
) -> None:
    async def slow(request: web.BaseRequest) -> web.StreamResponse:
        await gate.wait()
        return web.Response(body=b"shared", headers={"Cache-Control": "max-age=60", "Date": origin.date()})

    origin.answers["/a"] = slow
    p = await start(config(origin.url))
    events = record(p)

    tasks = [asyncio.ensure_future(get(session, p, "/a")) for _ in range(5)]
    await wait_for(lambda: origin.hits["/a"] == 1 and shared(p).waiting == 4, description="1 fetch, 4 waiters")
    gate.set()
    got = await asyncio.gather(*tasks)

    assert origin.hits["/a"] == 1
    assert all(g.status == 200 and g.body == b"shared" for g in got)
    assert sorted(g.cache or "" for g in got) == ["HIT"] * 4 + ["MISS"]
    assert sorted(e.cache for e in await events.wait(5)) == ["HIT"] * 4 + ["MISS"]


@pytest.mark.parametrize(
    "answer",
    [
        (200, {"Cache-Control": "no-store"}),  # not storable
        (500, {}),  # failed
        (200, {"Cache-Control": "max-age=0, no-cache", "ETag": '"e"'}),  # stored, but needs validation
    ],
)
async def test_waiters_fetch_for_themselves_when_the_leaders_answer_cannot_be_shared(
    start: StartCached,
    origin: Origin,
    gate: asyncio.Event,
    session: aiohttp.ClientSession,
    answer: tuple[int, dict[str, str]],
) -> None:
    status, headers = answer

    async def slow(request: web.BaseRequest) -> web.StreamResponse:
        if origin.hits["/a"] == 1:
            await gate.wait()
        return web.Response(status=status, body=b"own", headers={**headers, "Date": origin.date()})

    origin.answers["/a"] = slow
    p = await start(config(origin.url))

    tasks = [asyncio.ensure_future(get(session, p, "/a")) for _ in range(4)]
    await wait_for(lambda: shared(p).waiting == 3, description="3 waiters")
    gate.set()
    got = await asyncio.wait_for(asyncio.gather(*tasks), 15)

    assert [g.status for g in got] == [status] * 4
    assert {g.cache for g in got} == {"MISS"}
    assert origin.hits["/a"] == 4
    # The URL is now fetched without collapsing: no one waits behind the next slow answer.
    gate.clear()
    origin.hits["/a"] = 0
    more = [asyncio.ensure_future(get(session, p, "/a")) for _ in range(3)]
    await wait_for(lambda: origin.hits["/a"] == 3, description="3 parallel fetches")
    gate.set()
    await asyncio.gather(*more)


# --- stale on error --------------------------------------------------------------------------


async def test_stale_if_error_serves_the_stored_response_when_the_upstream_errs(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    healthy = True

    async def flaky(request: web.BaseRequest) -> web.StreamResponse:
        if healthy:
            return web.Response(
                text="good", headers={"Cache-Control": "max-age=10, stale-if-error=60", "Date": origin.date()}
            )
        return web.Response(status=503, text="down")

    origin.answers["/a"] = flaky
    p = await start(config(origin.url))

    await get(session, p, "/a")
    healthy = False
    fake_clock.advance(30)
    stale = await get(session, p, "/a")
    fake_clock.advance(100)
    expired = await get(session, p, "/a")

    assert (stale.status, stale.cache, stale.body) == (200, "STALE", b"good")
    assert stale.headers["Age"] == "30"
    assert (expired.status, expired.cache) == (503, "MISS")
    assert origin.hits["/a"] == 3


async def test_request_stale_if_error(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=1")])
    p = await start(config(origin.url))

    await get(session, p, "/a")
    origin.answers["/a"] = Answer(500)
    fake_clock.advance(10)
    stale = await get(session, p, "/a", ("Cache-Control", "stale-if-error=60"))
    plain = await get(session, p, "/a")

    assert (stale.status, stale.cache) == (200, "STALE")
    assert (plain.status, plain.cache) == (500, "MISS")


async def test_stale_on_error_covers_an_upstream_timeout(
    start: StartCached, origin: Origin, fake_clock: FakeClock, gate: asyncio.Event, session: aiohttp.ClientSession
) -> None:
    slow = False

    async def sometimes_slow(request: web.BaseRequest) -> web.StreamResponse:
        if slow:
            await gate.wait()
        return web.Response(text="good", headers={"Cache-Control": "max-age=10", "Date": origin.date()})

    origin.answers["/a"] = sometimes_slow
    cfg = parse_config(
        tomlkit.dumps(
            {
                "server": {"listen": ["127.0.0.1"], "http_port": 0, "drain_timeout": "5s"},
                "sites": [
                    {
                        "name": "app",
                        "hosts": [HOST],
                        "upstreams": [origin.url],
                        "read_timeout": "300ms",
                        "cache": {"stale_on_error": "5m"},
                    }
                ],
            }
        ),
        "test.toml",
    )
    p = await start(cfg)

    await get(session, p, "/a")
    slow = True
    fake_clock.advance(200)
    stale = await get(session, p, "/a")
    fake_clock.advance(200)
    too_old = await get(session, p, "/a")

    assert (stale.status, stale.cache, stale.body) == (200, "STALE", b"good")
    assert (too_old.status, too_old.cache) == (504, "MISS")


async def test_an_upstream_error_is_passed_on_when_nothing_allows_a_stale_answer(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=600"), ("ETag", '"e"')])
    p = await start(config(origin.url))

    await get(session, p, "/a")
    origin.answers["/a"] = Answer(503)
    forced = await get(session, p, "/a", ("Cache-Control", "no-cache"))  # fresh, but validation failed
    hit = await get(session, p, "/a")

    assert (forced.status, forced.cache) == (503, "MISS")
    assert (hit.status, hit.cache) == (200, "HIT")  # an error does not throw the entry away


@pytest.mark.parametrize(
    "cache_control",
    [
        "max-age=10, must-revalidate, stale-if-error=600",
        "max-age=10, proxy-revalidate, stale-if-error=600",
        "s-maxage=10, stale-if-error=600",
        "max-age=10, no-cache, stale-if-error=600",
    ],
)
async def test_no_stale_answers_when_the_response_forbids_them(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession, cache_control: str
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", cache_control), ("ETag", '"e"')])
    p = await start(config(origin.url, stale_on_error="1h"))

    await get(session, p, "/a")
    origin.answers["/a"] = Answer(502)
    fake_clock.advance(20)
    got = await get(session, p, "/a")

    assert (got.status, got.cache) == (502, "MISS")


# --- sizes and bad upstreams ---------------------------------------------------------------------


def streamed(origin: Origin, size: int, *, length: bool) -> Respond:
    """A 200 of `size` bytes sent in 64 KiB writes, with or without Content-Length."""

    async def respond(request: web.BaseRequest) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60", "Date": origin.date()})
        if length:
            resp.content_length = size
        await resp.prepare(request)
        left = size
        while left:
            n = min(left, 65536)
            await resp.write(b"s" * n)
            left -= n
        await resp.write_eof()
        return resp

    return respond


@pytest.mark.parametrize(
    ("size", "length", "stored"),
    [
        (200_000, True, True),  # streamed and teed
        (200_000, False, True),  # chunked
        (600_000, True, False),  # declared too big: not even teed
        (600_000, False, False),  # found too big on the way
    ],
)
async def test_streamed_bodies_are_stored_up_to_the_entry_limit(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession, size: int, length: bool, stored: bool
) -> None:
    origin.answers["/big"] = streamed(origin, size, length=length)
    p = await start(config(origin.url, max_entry_bytes="500KiB"))

    first = await get(session, p, "/big")
    second = await get(session, p, "/big")

    assert first.body == second.body == b"s" * size
    assert (first.cache, second.cache) == ("MISS", "HIT" if stored else "MISS")
    assert origin.hits["/big"] == (1 if stored else 2)


async def test_small_bodies_over_the_entry_limit_are_not_stored(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=60")], body=b"b" * 20_000)
    p = await start(config(origin.url, max_entry_bytes="10KiB"))

    got = [await get(session, p, "/a") for _ in range(2)]

    assert [g.cache for g in got] == ["MISS", "MISS"]
    assert got[1].body == b"b" * 20_000


@pytest.mark.parametrize("declared", [1000, 300_000])
async def test_an_upstream_that_lies_about_content_length_is_never_stored(
    start: StartCached,
    raw_backend: StartRawBackend,
    fake_clock: FakeClock,
    session: aiohttp.ClientSession,
    declared: int,
) -> None:
    hits = 0

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hits
        await reader.readuntil(b"\r\n\r\n")
        hits += 1
        head = (
            f"HTTP/1.1 200 OK\r\nDate: {http_date(fake_clock.now)}\r\nCache-Control: max-age=60\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        )
        writer.write(head.encode() + b"x" * (declared // 2))
        await writer.drain()
        writer.close()

    b = await raw_backend(liar)
    p = await start(config(b.url))
    events = record(p)

    for _ in range(2):
        try:
            got = await get(session, p, "/a")
        except aiohttp.ClientPayloadError:  # a streamed body is cut off, as the upstream's was
            continue
        assert (got.status, got.cache) == (502, "MISS")  # a small one is a clean 502
    await events.wait(2)

    assert hits == 2
    assert len(shared(p)) == 0
    assert [e.cache for e in events.events] == ["MISS", "MISS"]


async def test_a_client_that_hangs_up_mid_body_leaves_no_half_entry(
    start: StartCached, origin: Origin, gate: asyncio.Event, session: aiohttp.ClientSession
) -> None:
    half = 512 * 1024

    async def two_halves(request: web.BaseRequest) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60", "Date": origin.date()})
        resp.content_length = 2 * half
        await resp.prepare(request)
        await resp.write(b"1" * half)
        if origin.hits["/big"] == 1:
            await gate.wait()
        await resp.write(b"2" * half)
        await resp.write_eof()
        return resp

    origin.answers["/big"] = two_halves
    p = await start(config(origin.url))
    events = record(p)

    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    writer.write(f"GET /big HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    status, _, headers = await read_head(reader)
    assert status == 200 and ("X-Cache", "MISS") in headers
    await reader.readexactly(1000)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # hang up with a reset
    writer.transport.abort()
    gate.set()
    (ev,) = await events.wait(1)

    assert ev.error == "client went away"
    assert len(shared(p)) == 0
    again = await get(session, p, "/big")
    assert again.cache == "MISS" and again.body == b"1" * half + b"2" * half
    hit = await get(session, p, "/big")
    assert hit.cache == "HIT" and hit.body == again.body


def sites_config(upstream: str, shared_bytes: str, *sites: tuple[str, str]) -> Config:
    """Caching sites (name, max_bytes) on `<name>.test`, all with `upstream`."""
    doc = {
        "server": {"listen": ["127.0.0.1"], "http_port": 0, "drain_timeout": "5s"},
        "cache": {"max_bytes": shared_bytes},
        "sites": [
            {"name": n, "hosts": [f"{n}.test"], "upstreams": [upstream], "cache": {"max_bytes": m}} for n, m in sites
        ],
    }
    return parse_config(tomlkit.dumps(doc), "test.toml")


async def test_the_least_recently_used_entry_goes_first_across_sites(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    for path in ("/a", "/b", "/c"):
        origin.answers[path] = Answer(headers=[("Cache-Control", "max-age=600")], body=b"z" * 25_000)
    p = await start(sites_config(origin.url, "64KiB", ("one", "1MiB"), ("two", "1MiB")))

    await get(session, p, "/a", host="one.test")
    await get(session, p, "/b", host="two.test")
    assert (await get(session, p, "/a", host="one.test")).cache == "HIT"  # /a is now the most recent
    await get(session, p, "/c", host="one.test")  # no room for three: /b (site two) goes

    assert (await get(session, p, "/b", host="two.test")).cache == "MISS"
    assert shared(p).bytes <= 64 * 1024
    assert origin.hits["/b"] == 2


async def test_a_site_never_holds_more_than_its_own_limit(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    for path in ("/a", "/b"):
        origin.answers[path] = Answer(headers=[("Cache-Control", "max-age=600")], body=b"z" * 25_000)
    p = await start(sites_config(origin.url, "1MiB", ("small", "40KiB"), ("big", "1MiB")))

    await get(session, p, "/a", host="big.test")
    await get(session, p, "/a", host="small.test")
    await get(session, p, "/b", host="small.test")  # evicts small's /a, not big's

    assert (await get(session, p, "/a", host="big.test")).cache == "HIT"
    assert (await get(session, p, "/b", host="small.test")).cache == "HIT"
    assert (await get(session, p, "/a", host="small.test")).cache == "MISS"
    usage = shared(p).usage()
    assert usage["small"][1] <= 40 * 1024


async def test_a_smaller_cache_on_apply_evicts_at_once(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    for path in ("/a", "/b", "/c"):
        origin.answers[path] = Answer(headers=[("Cache-Control", "max-age=600")], body=b"z" * 25_000)
    p = await start(sites_config(origin.url, "1MiB", ("one", "1MiB")))
    for path in ("/a", "/b", "/c"):
        await get(session, p, path, host="one.test")
    assert len(shared(p)) == 3

    await asyncio.to_thread(p.engine.apply, sites_config(origin.url, "60KiB", ("one", "1MiB")))

    assert len(shared(p)) == 2 and shared(p).bytes <= 60 * 1024
    assert (await get(session, p, "/a", host="one.test")).cache == "MISS"  # the oldest went
    assert (await get(session, p, "/c", host="one.test")).cache == "HIT"


# --- purge, header name, stats ----------------------------------------------------------------


async def test_purge_a_site_or_one_url(start: StartCached, origin: Origin, session: aiohttp.ClientSession) -> None:
    for path in ("/a", "/b", "/c"):
        origin.answers[path] = Answer(headers=[("Cache-Control", "max-age=600")])
    p = await start(config(origin.url))
    for path in ("/a", "/b", "/c", "/c?v=2"):
        await get(session, p, path)

    assert await asyncio.to_thread(p.engine.purge, "app", "/a") == 1
    assert await asyncio.to_thread(p.engine.purge, "app", f"http://{HOST}/b") == 1
    assert await asyncio.to_thread(p.engine.purge, "app", "/nothing") == 0
    assert await asyncio.to_thread(p.engine.purge, "other") == 0
    after = [(await get(session, p, path)).cache for path in ("/a", "/b", "/c")]
    assert after == ["MISS", "MISS", "HIT"]
    assert await asyncio.to_thread(p.engine.purge, "app") == 4
    assert (await get(session, p, "/c")).cache == "MISS"


async def test_the_cache_header_can_be_renamed_or_turned_off(
    start: StartCached, origin: Origin, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(headers=[("Cache-Control", "max-age=600")])
    p = await start(config(origin.url, shared={"header": "X-Proxy-Cache"}))

    renamed = [await get(session, p, "/a") for _ in range(2)]
    await asyncio.to_thread(p.engine.apply, config(origin.url, shared={"header": ""}))
    silent = await get(session, p, "/a")
    events = record(p)
    await get(session, p, "/a")

    assert [r.headers.get("X-Proxy-Cache") for r in renamed] == ["MISS", "HIT"]
    assert "X-Cache" not in renamed[1].headers
    assert "X-Cache" not in silent.headers and "X-Proxy-Cache" not in silent.headers
    assert [e.cache for e in await events.wait(1)] == ["HIT"]  # still in the event


async def test_stats_count_cache_statuses_hit_ratio_and_bytes(
    start: StartCached, origin: Origin, fake_clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    origin.answers["/a"] = Answer(
        headers=[("Cache-Control", "max-age=60"), ("ETag", '"e"')], not_modified=[], body=b"1234"
    )
    p = await start(config(origin.url))
    events = record(p)

    await get(session, p, "/a")  # MISS
    await get(session, p, "/a")  # HIT
    await get(session, p, "/a")  # HIT
    await get(session, p, "/a", ("Cache-Control", "no-cache"))  # REVALIDATED
    await get(session, p, "/a", method="POST", data=b"x")  # BYPASS
    stats = Stats(clock=fake_clock)
    stats.record(await events.wait(5))

    app = stats.site("app")
    assert (app.cache_hits, app.cache_misses, app.cache_revalidated, app.cache_stale, app.cache_bypass) == (
        2,
        1,
        1,
        0,
        1,
    )
    assert app.hit_ratio == 3 / 4
    assert app.cache_bytes == 3 * 4


def test_hit_ratio_without_lookups_is_zero() -> None:
    stats = Stats(clock=FakeClock())
    stats.record(
        [
            RequestCompleted(
                time=0.0,
                client="10.0.0.1",
                site="nas",
                host="nas.lan",
                method="GET",
                path="/",
                status=200,
                bytes_in=0,
                bytes_out=10,
                duration=0.01,
                upstream="",
                cache="BYPASS",
            )
        ]
    )
    nas = stats.site("nas")
    assert isinstance(nas, SiteStats)
    assert (nas.hit_ratio, nas.cache_bypass, nas.cache_bytes) == (0.0, 1, 0)
