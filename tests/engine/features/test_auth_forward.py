"""auth, forward mode: a real aiohttp auth service on loopback decides, as Authelia would.

It lets a request through when the client's cookie says `session=good`, answering 200
with Remote-User and friends; otherwise it answers as the test tells it (401 with a
challenge, 302 to a portal with a cookie, 500, a huge body, or nothing at all).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from homeproxy.engine.features import auth_forward
from homeproxy.engine.features.auth_forward import ForwardClient
from tests.engine.conftest import (
    Backend,
    Seen,
    StartBackend,
    StartProxy,
    closed_port,
    fetch,
    make_config,
    raw_request,
    record,
    site,
)
from tests.engine.features.conftest import client_at

GOOD = {"Cookie": "session=good; theme=dark"}


@dataclass
class Question:
    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class AuthService:
    """What the auth service was asked, and how it answers the unauthenticated."""

    url: str = ""
    questions: list[Question] = field(default_factory=list)
    refuse: str = "401"
    hang: asyncio.Event | None = None
    forbidden: str | None = None
    """A path prefix no one may reach (403), judged by `X-Forwarded-Uri` as Authelia's rules are."""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.questions.append(Question(request.method, request.raw_path, request.headers, await request.read()))
        if self.hang is not None:
            await self.hang.wait()
        if self.forbidden is not None and request.headers.get("X-Forwarded-Uri", "").startswith(self.forbidden):
            return web.Response(status=403, text="not for you")
        if "session=good" in request.headers.get("Cookie", ""):
            headers = CIMultiDict(
                [
                    ("Remote-User", "alice"),
                    ("Remote-Groups", "admins,family"),
                    ("Remote-Email", "alice@home.test"),
                    ("X-Not-Copied", "1"),
                    ("Set-Cookie", "refresh=1"),
                ]
            )
            return web.Response(status=200, text="ok", headers=headers)
        if self.refuse == "302":
            rd = request.headers.get("X-Original-URL", "")
            headers = CIMultiDict(
                [("Location", f"https://auth.home.test/?rd={rd}"), ("Set-Cookie", "authelia_flow=abc; HttpOnly")]
            )
            return web.Response(status=302, text="Found", headers=headers)
        if self.refuse == "500":
            return web.Response(status=500, text="database down")
        if self.refuse == "huge":
            return web.Response(status=401, body=b"x" * (auth_forward.MAX_ANSWER + 1))
        return web.Response(
            status=401,
            text="who are you?",
            headers={"WWW-Authenticate": 'Basic realm="authelia"', "X-Auth-Reason": "no session"},
        )

    @property
    def last(self) -> Question:
        assert self.questions, "the auth service was not asked"
        return self.questions[-1]


@pytest.fixture
async def auth_service(backend: StartBackend) -> AuthService:
    service = AuthService()
    b = await backend(service.handle)
    service.url = f"{b.url}/api/verify"
    return service


def _config(echo: Backend, service: AuthService, **auth: Any) -> Any:
    return make_config(site("app", ["app.test"], [echo.url], auth={"forward": service.url, **auth}))


async def test_a_2xx_lets_the_request_through_with_the_identity_headers(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    p = await proxy(_config(echo, auth_service))

    got = await fetch(session, p, "/docs/1?x=y", host="app.test", method="POST", headers=GOOD, data=b"payload")

    seen = got.seen
    assert seen.method == "POST" and seen.path == "/docs/1?x=y" and seen.body == "payload"
    assert seen.one("Remote-User") == "alice"
    assert seen.one("Remote-Groups") == "admins,family"
    assert seen.one("Remote-Email") == "alice@home.test"
    assert seen.all("X-Not-Copied") == []  # only forward_headers are copied
    assert "Set-Cookie" not in got.headers


async def test_the_question_describes_the_original_request(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    p = await proxy(_config(echo, auth_service))

    await fetch(
        session,
        p,
        "/docs/1?x=y",
        host="app.test",
        method="PUT",
        headers={
            **GOOD,
            "Authorization": "Basic YTpi",
            "X-Forwarded-Uri": "/spoofed",
            "X-Forwarded-For": "10.9.9.9",
            "X-Original-URL": "http://spoofed/",
            "Connection": "X-Hop",
            "X-Hop": "secret",
        },
        data=b"body",
    )

    q = auth_service.last
    assert q.method == "GET" and q.path == "/api/verify"
    assert q.body == b"" and "Content-Length" not in q.headers
    h = q.headers
    assert h.getall("X-Forwarded-Method") == ["PUT"]
    assert h.getall("X-Forwarded-Proto") == ["http"]
    assert h.getall("X-Forwarded-Host") == ["app.test"]
    assert h.getall("X-Forwarded-Uri") == ["/docs/1?x=y"]
    assert h.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert h.getall("X-Real-IP") == ["127.0.0.1"]
    assert h.getall("X-Original-URL") == ["http://app.test/docs/1?x=y"]
    assert h.getall("X-Original-Method") == ["PUT"]
    assert h["Cookie"] == GOOD["Cookie"]  # how the auth service knows the user
    assert h["Authorization"] == "Basic YTpi"
    assert "X-Hop" not in h and "Connection" not in h  # hop-by-hop
    assert h["Host"] != "app.test"  # the auth service's own host


PATH_SPELLINGS = {
    "escaped-letter": (b"/%61dmin/panel?x=%61&y", "/admin/panel?x=%61&y"),
    "double-slash-and-dot": (b"//admin/./panel?next=%2Fhome", "/admin/panel?next=%2Fhome"),
    "dot-dot-and-encoded-slash": (b"/docs/..%2Fadmin", "/admin"),
}


@pytest.mark.parametrize(("target", "asked"), list(PATH_SPELLINGS.values()), ids=list(PATH_SPELLINGS))
async def test_the_auth_service_is_asked_about_the_path_routes_see(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, target: bytes, asked: str
) -> None:
    """Any spelling of `/admin` is asked about as `/admin` (the query as it was sent), so a rule
    for `/admin` holds for it: refused, and the upstream never hears of it."""
    auth_service.forbidden = "/admin"
    p = await proxy(_config(echo, auth_service))

    got = await raw_request(
        p.port, b"GET %s HTTP/1.1\r\nHost: app.test\r\nCookie: session=good\r\nConnection: close\r\n\r\n" % target
    )
    fine = await raw_request(
        p.port, b"GET /%61pp?x=%61 HTTP/1.1\r\nHost: app.test\r\nCookie: session=good\r\nConnection: close\r\n\r\n"
    )

    first, second = auth_service.questions
    assert first.headers.getall("X-Forwarded-Uri") == [asked]
    assert first.headers.getall("X-Original-URL") == [f"http://app.test{asked}"]
    assert got.status == 403  # the auth service's answer: the echo upstream was never asked
    assert second.headers.getall("X-Forwarded-Uri") == ["/app?x=%61"]
    assert fine.status == 200 and Seen.of(fine.body).path == "/%61pp?x=%61"  # upstream: as sent


async def test_a_trusted_proxys_proto_and_host_are_believed(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    config = make_config(
        site("app", ["app.test"], [echo.url], auth={"forward": auth_service.url}), trusted_proxies=["127.0.0.1/32"]
    )
    p = await proxy(config)

    await fetch(
        session,
        p,
        "/",
        host="app.test",
        headers={
            **GOOD,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "app.example",
            "X-Forwarded-For": "10.0.0.7",
        },
    )

    h = auth_service.last.headers
    assert h["X-Forwarded-Proto"] == "https"
    assert h["X-Original-URL"] == "https://app.example/"
    assert h["X-Forwarded-For"] == "10.0.0.7"


async def test_a_client_cannot_claim_an_identity(
    proxy: StartProxy, echo: Backend, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    async def silent_ok(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok")  # a 2xx that names nobody

    service = await backend(silent_ok)
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], auth={"forward": service.url})))

    got = await fetch(session, p, "/", host="app.test", headers={"Remote-User": "admin", "remote-groups": "admins"})

    assert got.seen.all("Remote-User") == [] and got.seen.all("Remote-Groups") == []


async def test_a_401_goes_back_to_the_client_as_it_is(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    p = await proxy(_config(echo, auth_service))
    rec = record(p)

    got = await fetch(session, p, "/", host="app.test")

    assert got.status == 401
    assert got.headers["WWW-Authenticate"] == 'Basic realm="authelia"'
    assert got.headers["X-Auth-Reason"] == "no session"
    assert got.body == b"who are you?"
    (event,) = await rec.wait(1)
    assert event.upstream == ""  # the app was never asked


async def test_a_302_to_the_portal_goes_back_with_its_location_and_cookie(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    auth_service.refuse = "302"
    p = await proxy(_config(echo, auth_service))

    url = f"{p.url}/private?a=1"
    async with session.get(url, headers={"Host": "app.test"}, allow_redirects=False) as resp:
        status, headers = resp.status, resp.headers

    assert status == 302
    assert headers["Location"] == "https://auth.home.test/?rd=http://app.test/private?a=1"
    assert headers["Set-Cookie"].startswith("authelia_flow=abc")


async def test_an_auth_service_error_is_passed_on_and_recorded(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    auth_service.refuse = "500"
    p = await proxy(_config(echo, auth_service))
    rec = record(p)

    got = await fetch(session, p, "/", host="app.test")

    assert got.status == 500 and got.body == b"database down"
    (event,) = await rec.wait(1)
    assert event.error == "auth: the auth service failed (500)"


async def test_a_huge_answer_is_a_502(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    auth_service.refuse = "huge"
    p = await proxy(_config(echo, auth_service))

    got = await fetch(session, p, "/", host="app.test")

    assert got.status == 502 and b'"headers"' not in got.body


async def test_an_unreachable_auth_service_is_a_502_never_a_pass(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/verify"
    p = await proxy(make_config(site("app", ["app.test"], [echo.url], auth={"forward": url})))
    rec = record(p)

    got = await fetch(session, p, "/", host="app.test", headers=GOOD)

    assert got.status == 502 and b'"headers"' not in got.body
    (event,) = await rec.wait(1)
    assert event.error.startswith("auth: the auth service is unreachable")


async def test_a_slow_auth_service_is_a_502(
    proxy: StartProxy,
    echo: Backend,
    auth_service: AuthService,
    session: aiohttp.ClientSession,
    gate: asyncio.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth_forward, "TIMEOUT", aiohttp.ClientTimeout(total=0.5))
    auth_service.hang = gate
    p = await proxy(_config(echo, auth_service))
    rec = record(p)

    got = await fetch(session, p, "/", host="app.test", headers=GOOD)

    assert got.status == 502
    (event,) = await rec.wait(1)
    assert event.error == "auth: the auth service timed out"


async def test_bypass_skips_the_question_but_still_drops_claimed_identities(
    proxy: StartProxy, echo: Backend, auth_service: AuthService
) -> None:
    p = await proxy(_config(echo, auth_service, bypass=["127.0.0.2/32"]))

    async with client_at("127.0.0.2") as lan, client_at("127.0.0.3") as outside:
        free = await fetch(lan, p, "/", host="app.test", headers={"Remote-User": "admin"})
        asked = await fetch(outside, p, "/", host="app.test")

    assert free.seen.all("Remote-User") == []
    assert asked.status == 401
    assert len(auth_service.questions) == 1


async def test_custom_forward_headers(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    p = await proxy(_config(echo, auth_service, forward_headers=["Remote-Email"]))

    got = await fetch(session, p, "/", host="app.test", headers={**GOOD, "Remote-User": "forged"})

    assert got.seen.one("Remote-Email") == "alice@home.test"
    assert got.seen.all("Remote-User") == ["forged"]  # not an identity header on this site: the app's business


async def test_bad_requests_still_get_a_clear_answer(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    p = await proxy(_config(echo, auth_service))

    repeated = await raw_request(
        p.port,
        b"GET / HTTP/1.1\r\nHost: app.test\r\nCookie: session=good\r\nCookie: x=1\r\n"
        b"Authorization: a\r\nAuthorization: b\r\nRemote-User: x\r\nRemote-User: y\r\n\r\n",
    )
    huge = await raw_request(p.port, b"GET / HTTP/1.1\r\nHost: app.test\r\nCookie: " + b"a" * 20_000 + b"\r\n\r\n")
    refused = await fetch(session, p, "/", host="app.test")

    assert repeated.status == 200, repeated.body
    assert Seen.of(repeated.body).all("Remote-User") == ["alice"]  # both claimed copies gone
    assert huge.status == 431  # a header line over homeproxy's limit
    assert refused.status == 401


async def test_the_client_is_closed_when_the_engine_stops(
    proxy: StartProxy, echo: Backend, auth_service: AuthService, session: aiohttp.ClientSession
) -> None:
    p = await proxy(_config(echo, auth_service))
    await fetch(session, p, "/", host="app.test", headers=GOOD)
    client = p.engine.features.state["auth.forward_client"]
    assert isinstance(client, ForwardClient)
    opened = client.session

    await asyncio.to_thread(p.engine.stop)

    assert opened.closed
