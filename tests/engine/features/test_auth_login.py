"""auth, login mode: the sign-in form, the signed session cookie, its key file, CSRF and
open-redirect defences, logout, cookie_domain, and the app's own Authorization untouched.

Cookies are carried by hand (the proxy is reached at 127.0.0.1 under other Host names),
and redirects are never followed, so that every answer is seen as sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from homeproxy.engine.features import auth_check as auth_module
from homeproxy.engine.features.auth_session import COOKIE, KEY_FILE, make_token
from homeproxy.passwords import hash_password
from tests.engine.conftest import Backend, Proxy, Seen, make_config, raw_request, record, site
from tests.engine.features.conftest import FakeClock, StartFeatureProxy, client_at

ALICE = hash_password("correct horse", n=2**4)
BOB_HASH = hash_password("another", n=2**4)
USERS = {"alice": ALICE}
LOGIN = "/.homeproxy/login"
LOGOUT = "/.homeproxy/logout"
HTML = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
FORM = "application/x-www-form-urlencoded"
TTL = 3600


class Got:
    """One answer, redirects not followed."""

    def __init__(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def seen(self) -> Seen:
        assert self.status == 200, (self.status, self.body[:300])
        return Seen.of(self.body)

    @property
    def session(self) -> str:
        """The homeproxy_session value this answer sets."""
        for line in self.headers.getall("Set-Cookie", ()):
            if line.startswith(COOKIE + "="):
                return line.split(";")[0].split("=", 1)[1]
        raise AssertionError(f"no {COOKIE} in {self.headers.getall('Set-Cookie', ())}")

    def cookie_line(self) -> str:
        return next(c for c in self.headers.getall("Set-Cookie", ()) if c.startswith(COOKIE + "="))


async def req(
    session: aiohttp.ClientSession,
    p: Proxy,
    path: str = "/",
    *,
    host: str = "app.test",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: Any = None,
) -> Got:
    url = URL(p.url + path, encoded=True)
    hdrs = {"Host": host, **(headers or {})}
    async with session.request(method, url, headers=hdrs, data=data, allow_redirects=False) as resp:
        return Got(resp.status, resp.headers, await resp.read())


async def login(
    session: aiohttp.ClientSession,
    p: Proxy,
    user: str = "alice",
    password: str = "correct horse",
    next_path: str = "/",
    *,
    host: str = "app.test",
    headers: dict[str, str] | None = None,
) -> Got:
    body = urlencode({"username": user, "password": password, "next": next_path})
    hdrs = {"Content-Type": FORM, "Origin": f"http://{host}", **(headers or {})}
    return await req(session, p, LOGIN, host=host, method="POST", headers=hdrs, data=body)


def with_session(value: str, **more: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}", **more}


async def _start(
    start: StartFeatureProxy, echo: Backend, clock: FakeClock, data_dir: Path | None = None, **auth: Any
) -> Proxy:
    settings = {"mode": "login", "users": USERS, "session_ttl": f"{TTL}s", **auth}
    config = make_config(site("app", ["app.test"], [echo.url], auth=settings))
    return await start(config, clock=clock, data_dir=data_dir)


async def test_a_browser_without_a_session_gets_the_form(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)

    got = await req(session, p, "/photos/2024?sort=date", headers=HTML)

    assert got.status == 401
    assert got.headers["Content-Type"] == "text/html; charset=utf-8"
    assert got.headers["WWW-Authenticate"].startswith('Cookie realm="homeproxy"')
    assert got.headers["Cache-Control"] == "no-store"
    assert got.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in got.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in got.headers["Content-Security-Policy"]
    page = got.body.decode()
    assert f'action="{LOGIN}"' in page and 'method="post"' in page
    assert 'name="next" value="/photos/2024?sort=date"' in page
    assert 'type="password"' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    assert '"headers"' not in page  # the upstream was not asked


async def test_other_clients_get_a_plain_401(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)

    api = await req(session, p, "/api/items", headers={"Accept": "application/json"})
    post = await req(session, p, "/upload", method="POST", headers=HTML, data=b"x")

    for got in (api, post):
        assert got.status == 401
        assert b"<form" not in got.body
        assert got.headers["WWW-Authenticate"].startswith("Cookie ")


async def test_login_sets_a_signed_cookie_and_the_app_sees_its_own_authorization(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    fake_clock: FakeClock,
    tmp_path: Path,
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    rec = record(p)

    done = await login(session, p, next_path="/photos?x=1")
    app = await req(
        session,
        p,
        "/photos?x=1",
        headers={"Cookie": f"theme=dark; {COOKIE}={done.session}; lang=en", "Authorization": "Bearer app-token"},
    )

    assert done.status == 303 and done.headers["Location"] == "/photos?x=1"
    attrs = [a.strip() for a in done.cookie_line().split(";")[1:]]
    assert sorted(attrs) == sorted(["Path=/", f"Max-Age={TTL}", "HttpOnly", "SameSite=Lax"])  # no Secure on HTTP
    seen = app.seen
    assert seen.path == "/photos?x=1"
    assert seen.all("Cookie") == ["theme=dark; lang=en"]  # homeproxy's cookie stays home
    assert seen.all("Authorization") == ["Bearer app-token"]  # the app's own header, untouched
    events = await rec.wait(2)
    assert all(e.error == "" for e in events)


async def test_session_key_file_is_private_and_outlives_the_engine(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    fake_clock: FakeClock,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "secrets" / "homeproxy"
    p = await _start(feature_proxy, echo, fake_clock, data_dir=data_dir)
    value = (await login(session, p)).session
    key_file = data_dir / KEY_FILE

    assert len(key_file.read_bytes()) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    await asyncio.to_thread(p.engine.stop)

    again = await _start(feature_proxy, echo, fake_clock, data_dir=data_dir)
    assert (await req(session, again, "/", headers=with_session(value))).status == 200
    elsewhere = await _start(feature_proxy, echo, fake_clock, data_dir=tmp_path / "other")
    assert (await req(session, elsewhere, "/", headers=with_session(value))).status == 401  # another key


async def test_a_key_file_readable_by_others_is_tightened(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    fake_clock: FakeClock,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / KEY_FILE).write_bytes(b"k" * 32)
    (data_dir / KEY_FILE).chmod(0o644)
    p = await _start(feature_proxy, echo, fake_clock, data_dir=data_dir)

    value = (await login(session, p)).session

    assert stat.S_IMODE((data_dir / KEY_FILE).stat().st_mode) == 0o600
    assert value == make_token(b"k" * 32, "alice", int(fake_clock.now), int(fake_clock.now) + TTL, "s:app", ALICE)


async def test_a_damaged_key_file_is_a_500_not_an_open_door(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    fake_clock: FakeClock,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / KEY_FILE).write_bytes(b"short")
    p = await _start(feature_proxy, echo, fake_clock, data_dir=data_dir)
    rec = record(p)

    got = await req(session, p, "/", headers=HTML)

    assert got.status == 500 and b'"headers"' not in got.body
    (event,) = await rec.wait(1)
    assert event.error == "auth: session key unusable"


async def test_wrong_password_shows_the_form_again(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    rec = record(p)

    wrong = await login(session, p, password="nope", next_path="/x", headers=HTML)
    unknown = await login(session, p, user="mallory", password="x", headers=HTML)
    empty = await login(session, p, password="", headers=HTML)

    for got in (wrong, unknown, empty):
        assert got.status == 401 and b"<form" in got.body
        assert "Set-Cookie" not in got.headers
    assert b"Wrong user name or password." in wrong.body
    assert b'name="next" value="/x"' in wrong.body
    events = await rec.wait(3)
    assert [e.error for e in events[:2]] == ["auth: wrong user name or password"] * 2


async def test_repeated_failures_are_throttled(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)

    for i in range(auth_module.FREE_FAILURES):
        assert (await login(session, p, password=f"guess{i}")).status == 401
    page = await login(session, p, headers=HTML)
    plain = await login(session, p)
    fake_clock.advance(1)
    ok = await login(session, p)

    assert page.status == 429 and page.headers["Retry-After"] == "1" and b"Too many attempts" in page.body
    assert plain.status == 429 and plain.headers["Retry-After"] == "1"
    assert ok.status == 303


async def test_sessions_expire(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    value = (await login(session, p)).session

    fake_clock.advance(TTL - 1)
    still = await req(session, p, "/", headers=with_session(value))
    fake_clock.advance(1)
    expired = await req(session, p, "/", headers=with_session(value, **HTML))

    assert still.status == 200
    assert expired.status == 401 and b"<form" in expired.body


async def test_a_shorter_session_ttl_shortens_live_sessions(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    value = (await login(session, p)).session
    fake_clock.advance(120)

    shorter = {"mode": "login", "users": USERS, "session_ttl": "60s"}
    await asyncio.to_thread(p.engine.apply, make_config(site("app", ["app.test"], [echo.url], auth=shorter)))

    assert (await req(session, p, "/", headers=with_session(value))).status == 401


async def test_a_changed_password_or_removed_user_ends_sessions(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    value = (await login(session, p)).session

    changed = {"mode": "login", "users": {"alice": hash_password("new", n=2**4)}, "session_ttl": f"{TTL}s"}
    await asyncio.to_thread(p.engine.apply, make_config(site("app", ["app.test"], [echo.url], auth=changed)))
    after_change = await req(session, p, "/", headers=with_session(value))
    removed = {"mode": "login", "users": {"bob": ALICE}, "session_ttl": f"{TTL}s"}
    await asyncio.to_thread(p.engine.apply, make_config(site("app", ["app.test"], [echo.url], auth=removed)))
    after_removal = await req(session, p, "/", headers=with_session(value))

    assert after_change.status == 401 and after_removal.status == 401


def _tamper(value: str, change: Any) -> str:
    version, payload, mac = value.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data = change(data)
    encoded = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{version}.{encoded}.{mac}"


@pytest.mark.parametrize(
    "forge",
    [
        lambda v: _tamper(v, lambda d: ["bob", *d[1:]]),  # another user
        lambda v: _tamper(v, lambda d: [d[0], d[1], d[2] + 10**6, d[3]]),  # a later expiry
        lambda v: _tamper(v, lambda d: [d[0], d[1], d[2], "d:app.test"]),  # another scope
        lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),  # a broken MAC
        lambda v: "v2" + v[2:],
        lambda v: v.split(".")[1],
        lambda v: "v1.%%%.%%%",
        lambda v: "v1." + "A" * 5000 + ".AA",
        lambda v: "",
        lambda v: "v1.bm90IGpzb24.AA",  # "not json"
        lambda v: "v1.WzEsMiwzLDRd.AA",  # [1,2,3,4]
    ],
)
async def test_a_forged_or_broken_cookie_is_no_session(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock, forge: Any
) -> None:
    config = make_config(
        site("app", ["app.test"], [echo.url], auth={"mode": "login", "users": {**USERS, "bob": ALICE}})
    )
    p = await feature_proxy(config, clock=fake_clock)
    value = (await login(session, p)).session

    got = await req(session, p, "/", headers=with_session(forge(value), **HTML))

    assert got.status == 401 and b"<form" in got.body


async def test_repeated_cookie_headers_and_several_session_values(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    value = (await login(session, p)).session

    got = await raw_request(
        p.port,
        f"GET / HTTP/1.1\r\nHost: app.test\r\nCookie: a=1; {COOKIE}=stale.old.value\r\n"
        f"Cookie: {COOKIE}={value}; b=2\r\n\r\n".encode(),
    )

    assert got.status == 200, got.body
    assert Seen.of(got.body).all("Cookie") == ["a=1; b=2"]  # one line, no homeproxy_session


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/photos/1?x=2#top", "/photos/1?x=2#top"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),  # a path on this site
        ("javascript:alert(1)", "/"),
        ("/a b", "/"),
        ("/\tx", "/"),
        ("/é", "/"),
        ("", "/"),
        (LOGOUT, "/"),
        (LOGIN + "?next=/x", "/"),
        ("/" + "a" * 3000, "/"),
    ],
)
async def test_next_is_a_path_on_this_site(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    fake_clock: FakeClock,
    given: str,
    expected: str,
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)

    done = await login(session, p, next_path=given)

    assert done.status == 303 and done.headers["Location"] == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://app.test.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling host is not this site
        {"Referer": "http://evil.example/page"},
    ],
)
async def test_cross_site_login_posts_are_refused(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    fake_clock: FakeClock,
    headers: dict[str, str],
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    body = urlencode({"username": "alice", "password": "correct horse", "next": "/"})
    hdrs = {"Content-Type": FORM, **headers}

    got = await req(session, p, LOGIN, method="POST", headers=hdrs, data=body)

    assert got.status == 403 and "Set-Cookie" not in got.headers


async def test_same_site_posts_by_referer_or_without_browser_headers_are_accepted(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    body = urlencode({"username": "alice", "password": "correct horse"})

    by_referer = await req(
        session,
        p,
        LOGIN,
        method="POST",
        headers={"Content-Type": FORM, "Referer": "http://app.test/x", "Sec-Fetch-Site": "same-origin"},
        data=body,
    )
    plain = await req(session, p, LOGIN, method="POST", headers={"Content-Type": FORM}, data=body)

    assert by_referer.status == 303 and plain.status == 303


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"username=alice&password=correct+horse", 400),
        ("application/json", b'{"username": "alice"}', 400),
        (FORM, b"username=alice&username=bob&password=correct+horse", 400),  # a repeated field
        (FORM, b"username=%FF%FE&password=x", 400),  # not UTF-8
        (FORM, b"username=al\xffice&password=x", 400),  # raw non-ASCII
        (FORM, b"&".join(b"f%d=1" % i for i in range(40)), 400),  # too many fields
        (FORM, b"password=" + b"a" * 20_000, 413),
    ],
)
async def test_malformed_login_posts_get_a_clear_answer(
    feature_proxy: StartFeatureProxy,
    echo: Backend,
    session: aiohttp.ClientSession,
    fake_clock: FakeClock,
    content_type: str,
    body: bytes,
    status: int,
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)

    got = await req(session, p, LOGIN, method="POST", headers={"Content-Type": content_type}, data=body)
    after = await login(session, p)

    assert got.status == status and "Set-Cookie" not in got.headers
    assert after.status == 303


async def test_a_chunked_oversized_login_post_is_refused(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)

    async def chunks() -> Any:
        for _ in range(5):
            yield b"a" * 8192

    got = await req(session, p, LOGIN, method="POST", headers={"Content-Type": FORM}, data=chunks())

    assert got.status == 413


async def test_the_login_page_itself(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    value = (await login(session, p)).session

    page = await req(session, p, LOGIN + "?next=%2Fdocs", headers=HTML)
    evil = await req(session, p, LOGIN + "?next=https://evil.example", headers=HTML)
    signed_in = await req(session, p, LOGIN + "?next=%2Fdocs", headers=with_session(value))
    put = await req(session, p, LOGIN, method="PUT", data=b"x")

    assert page.status == 200 and 'name="next" value="/docs"' in page.body.decode()
    assert 'name="next" value="/"' in evil.body.decode()
    assert signed_in.status == 303 and signed_in.headers["Location"] == "/docs"
    assert put.status == 405 and put.headers["Allow"] == "GET, HEAD, POST"


async def test_everything_on_the_form_is_escaped(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock, realm='<b>Home</b> & "lab"')

    page = await req(session, p, '/x?q="><script>alert(1)</script>', headers=HTML)
    wrong = await login(session, p, user='"><img src=x onerror=alert(1)>', password="x", headers=HTML)

    text = page.body.decode()
    assert "<b>Home</b>" not in text and "&lt;b&gt;Home&lt;/b&gt; &amp; &quot;lab&quot;" in text
    assert "<script>" not in text  # the path fell back to "/" or was escaped
    assert "<img" not in wrong.body.decode()


async def test_logout_clears_the_cookie(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock)
    value = (await login(session, p)).session

    out = await req(session, p, LOGOUT, headers=with_session(value))
    posted = await req(session, p, LOGOUT, method="POST", headers=with_session(value))

    for got in (out, posted):
        assert got.status == 303 and got.headers["Location"] == "/"
        line = got.cookie_line()
        assert line.startswith(f"{COOKIE}=;") and "Max-Age=0" in line and "Path=/" in line


async def test_cookie_domain_covers_sibling_sites(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    shared = {"mode": "login", "users": USERS, "cookie_domain": "home.test"}
    config = make_config(
        site("photos", ["photos.home.test"], [echo.url], auth=shared),
        site("music", ["music.home.test"], [echo.url], auth=shared),
        site("others", ["notes.home.test"], [echo.url], auth={"mode": "login", "users": {"alice": BOB_HASH}}),
        site("alone", ["alone.home.test"], [echo.url], auth={"mode": "login", "users": USERS}),
    )
    p = await feature_proxy(config, clock=fake_clock)

    done = await login(session, p, host="photos.home.test")
    cookie = with_session(done.session)
    music = await req(session, p, "/", host="music.home.test", headers=cookie)
    notes = await req(session, p, "/", host="notes.home.test", headers=cookie)
    alone = await req(session, p, "/", host="alone.home.test", headers=cookie)
    out = await req(session, p, LOGOUT, host="music.home.test", headers=cookie)

    assert "Domain=home.test" in done.cookie_line()
    assert music.status == 200
    assert notes.status == 401  # the same name with another password is another person
    assert alone.status == 401  # no cookie_domain: this site's own cookies only
    assert any("Domain=home.test" in c and "Max-Age=0" in c for c in out.headers.getall("Set-Cookie"))


async def test_host_only_cookies_are_per_site(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    auth = {"mode": "login", "users": USERS}
    config = make_config(
        site("a", ["a.test"], [echo.url], auth=auth),
        site("b", ["b.test"], [echo.url], auth=auth),
    )
    p = await feature_proxy(config, clock=fake_clock)

    done = await login(session, p, host="a.test")
    on_b = await req(session, p, "/", host="b.test", headers=with_session(done.session))

    assert "Domain" not in done.cookie_line()
    assert on_b.status == 401  # a cookie copied to another site does not work there


async def test_bypass_networks_skip_the_form_but_never_see_the_cookie(
    feature_proxy: StartFeatureProxy, echo: Backend, fake_clock: FakeClock
) -> None:
    p = await _start(feature_proxy, echo, fake_clock, bypass=["127.0.0.2/32"])

    async with client_at("127.0.0.2") as lan, client_at("127.0.0.3") as outside:
        free = await req(lan, p, "/", headers={"Cookie": f"{COOKIE}=whatever; keep=1", **HTML})
        form = await req(outside, p, "/", headers=HTML)

    assert free.seen.all("Cookie") == ["keep=1"]
    assert form.status == 401 and b"<form" in form.body


async def test_secure_cookie_when_a_trusted_proxy_says_https(
    feature_proxy: StartFeatureProxy, echo: Backend, session: aiohttp.ClientSession, fake_clock: FakeClock
) -> None:
    config = make_config(
        site("app", ["app.test"], [echo.url], auth={"mode": "login", "users": USERS}),
        trusted_proxies=["127.0.0.1/32"],
    )
    p = await feature_proxy(config, clock=fake_clock)

    done = await login(session, p, headers={"X-Forwarded-Proto": "https", "Origin": "https://app.test"})

    assert done.status == 303 and "Secure" in [a.strip() for a in done.cookie_line().split(";")]
