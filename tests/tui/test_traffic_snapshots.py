"""How the Traffic screen and the request detail look, with deterministic data.

A fixed clock, canned events (among them paths that look like markup), a fixed
listen address, and TZ=UTC because the log shows local times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from homeproxy.engine import RequestCompleted
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.bridge import RequestsArrived
from homeproxy.tui.widgets.request_log import RequestLog
from tests.tui.conftest import snapshot_config, snapshot_runtime_at
from tests.waiting import wait_for

NOW = 1_800_000_000.0
LISTEN, PORT = "127.77.0.9", 18097

REQUEST_HEADERS = (
    ("Host", "ha.home.arpa"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Accept", "application/json"),
    ("Cookie", "session=[b]not-markup[/b]; theme=dark"),
    ("X-Forwarded-For", "192.168.1.20"),
)
RESPONSE_HEADERS = (
    ("Content-Type", "application/json; charset=utf-8"),
    ("Content-Length", "5120"),
    ("Cache-Control", "max-age=60"),
    ("X-Cache", "HIT"),
    ("Server", "homeproxy"),
)

# (method, host, path, status, cache, error, client)
CANNED = (
    ("GET", "ha.home.arpa", "/api/states", 200, "MISS", "", "192.168.1.20"),
    ("GET", "ha.home.arpa", "/api/states", 200, "HIT", "", "192.168.1.20"),
    ("POST", "ha.home.arpa", "/api/services/light/turn_on", 200, "", "", "192.168.1.21"),
    ("GET", "plex.home.arpa", "/library/sections/1/all?type=1&sort=addedAt:desc", 206, "", "", "fd00::1:2:3:4"),
    ("GET", "plex.home.arpa", "/[red]x", 404, "", "", "192.168.1.30"),
    ("GET", "plex.home.arpa", "/[@click=app.quit]", 404, "", "", "192.168.1.30"),
    ("GET", "ha.home.arpa", "/auth/authorize", 302, "", "", "192.168.1.20"),
    ("PUT", "cloud.home.arpa", "/remote.php/dav/files/alice/Photos/2027/IMG_0001.jpg", 201, "", "", "192.168.1.40"),
    ("GET", "plex.home.arpa", "/video/:/transcode/universal/start.m3u8", 502, "", "upstream unreachable", "10.0.0.7"),
    ("DELETE", "ha.home.arpa", "/api/config/automation/config/42", 200, "", "", "192.168.1.21"),
    ("HEAD", "ha.home.arpa", "/", 200, "REVALIDATED", "", "192.168.1.20"),
    ("GET", "unknown.example", "/", 404, "", "", "203.0.113.9"),
)


def canned(count: int, start: int = 0) -> list[RequestCompleted]:
    events = []
    for i in range(start, start + count):
        method, host, path, status, cache, error, client = CANNED[i % len(CANNED)]
        site = {"ha.home.arpa": "homeassistant", "plex.home.arpa": "plex", "cloud.home.arpa": "nextcloud"}.get(host, "")
        events.append(
            RequestCompleted(
                time=NOW - 60 + i * 0.731,
                client=client,
                site=site,
                host=host,
                method=method,
                path=path,
                status=status,
                bytes_in=2048 if method in ("POST", "PUT") else 0,
                bytes_out=(i * 7919) % 300_000 if method != "HEAD" else 0,
                duration=0.0004 + (i % 9) * 0.0123,
                upstream={"homeassistant": "http://192.0.2.10:8123", "plex": "http://192.0.2.20:32400"}.get(site, ""),
                cache=cache,
                error=error,
                request_headers=(*REQUEST_HEADERS[:1], ("X-Request-Number", str(i)), *REQUEST_HEADERS[1:]),
                response_headers=RESPONSE_HEADERS if status < 400 else (),
            )
        )
    return events


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def traffic_runtime(in_tmp: Path, utc: None) -> Iterator[Runtime]:
    Path("config.toml").write_text(
        snapshot_config(
            LISTEN,
            PORT,
            """[[sites]]
name = "homeassistant"
hosts = ["ha.home.arpa"]
upstreams = ["http://192.0.2.10:8123"]

[[sites]]
name = "plex"
hosts = ["plex.home.arpa"]
upstreams = ["http://192.0.2.20:32400"]

[[sites]]
name = "nextcloud"
hosts = ["cloud.home.arpa"]
upstreams = ["http://192.0.2.30:80"]
""",
        ),
        encoding="utf-8",
    )
    with snapshot_runtime_at(Path("config.toml"), in_tmp / "log") as rt:
        yield rt


def app_with_requests(runtime: Runtime, count: int = 48) -> HomeproxyApp:
    app = HomeproxyApp(runtime)
    app.requests.extend(canned(count))
    return app


def test_traffic_80x24(snap_compare: Callable[..., bool], traffic_runtime: Runtime) -> None:
    assert snap_compare(app_with_requests(traffic_runtime), terminal_size=(80, 24), press=["3"])


def test_traffic_120x40(snap_compare: Callable[..., bool], traffic_runtime: Runtime) -> None:
    assert snap_compare(app_with_requests(traffic_runtime), terminal_size=(120, 40), press=["3"])


def test_traffic_scrolled_back_with_new_requests_120x40(
    snap_compare: Callable[..., bool], traffic_runtime: Runtime
) -> None:
    """A filter on (2xx), the cursor on an older row, and the "N new requests" marker."""
    app = app_with_requests(traffic_runtime, 96)

    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press("3", "x", "up", "up", "up")
        more = canned(12, start=96)
        app.requests.extend(more)
        app.screen.post_message(RequestsArrived(more, 0))
        log = app.screen.query_one(RequestLog)
        await wait_for(lambda: log.new == 7, description="the 7 2xx of the 12")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


def test_request_detail_80x24(snap_compare: Callable[..., bool], traffic_runtime: Runtime) -> None:
    # The newest of 38 is CANNED[37 % 12]: a cache HIT from homeassistant, with both sets of headers.
    assert snap_compare(app_with_requests(traffic_runtime, 38), terminal_size=(80, 24), press=["3", "enter"])
