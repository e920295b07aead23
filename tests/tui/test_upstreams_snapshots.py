"""How the upstreams screen looks: a fixed clock, canned health from the engine, canned requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from homeproxy.engine import RequestCompleted, UpstreamStatus
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from homeproxy.tui.screens.sites import SitesScreen
from homeproxy.tui.screens.upstreams import UpstreamsScreen
from tests.tui.conftest import SNAPSHOT_NOW, snapshot_config, snapshot_runtime_at
from tests.waiting import wait_for

NOW = SNAPSHOT_NOW
# An unusual loopback address and port (not the ones the other snapshot tests use); the
# upstreams are loopback addresses where nothing listens, so the engine's own checks (every
# 30 s, the first within a second) stay on this machine.
LISTEN, PORT = "127.77.0.9", 18096
A, B, C, D = (f"http://127.77.0.{n}:8123" for n in (21, 22, 23, 24))


def status(url: str, state: str, **fields: object) -> UpstreamStatus:
    values: dict[str, object] = {
        "site": "homeassistant",
        "upstream": url,
        "route": "",
        "backup": False,
        "weight": 1,
        "max_conns": 0,
        "up": state in ("up", "unchecked"),
        "state": state,
        "reason": "",
        "since": NOW - 7200,
        "until": 0.0,
        "checked": NOW - 4,
        "check_ok": True,
        "check_detail": "200 in 3 ms",
        "check_latency": 0.003,
        "failures": 0,
        "in_flight": 0,
    }
    values.update(fields)
    return UpstreamStatus(**values)  # type: ignore[arg-type]


CANNED = (
    status(A, "up", weight=3, in_flight=2),
    status(
        B,
        "down",
        reason="3 failed checks in a row: Connection refused",
        since=NOW - 312,
        checked=NOW - 2,
        check_ok=False,
        check_detail="Connection refused",
        check_latency=0.0004,
        failures=2,
    ),
    status(
        C,
        "cooling",
        backup=True,
        max_conns=20,
        reason="3 failures in 30s: upstream unreachable",
        since=NOW - 5,
        until=NOW + 25,
        failures=3,
    ),
    status(D, "unchecked", route="/api/", checked=0.0, check_ok=False, check_detail="", check_latency=0.0),
)


def request(i: int, upstream: str, status: int) -> RequestCompleted:
    return RequestCompleted(
        time=NOW - 30 + i / 10,
        client="192.168.1.5",
        site="homeassistant",
        host="ha.home.arpa",
        method="GET",
        path=f"/{i}",
        status=status,
        bytes_in=0,
        bytes_out=100,
        duration=0.004 + (i % 7) / 1000,
        upstream=upstream,
        error="" if status else "upstream unreachable",
    )


@pytest.fixture
def upstreams_runtime(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    Path("config.toml").write_text(
        snapshot_config(
            LISTEN,
            PORT,
            f"""[[sites]]
name = "homeassistant"
hosts = ["ha.home.arpa"]
upstreams = [{{ url = "{A}", weight = 3 }}, "{B}", {{ url = "{C}", backup = true, max_conns = 20 }}]
balance = "weighted"
health = {{ path = "/healthz", interval = "30s" }}

[[sites.routes]]
path = "/api/"
upstreams = ["{D}"]
""",
        ),
        encoding="utf-8",
    )
    with snapshot_runtime_at(Path("config.toml"), in_tmp / "log") as rt:
        assert rt.engine is not None
        monkeypatch.setattr(rt.engine, "upstream_health", lambda: CANNED)
        events = [request(i, A, 200 if i % 25 else 500) for i in range(75)]
        events += [request(i, B, 0) for i in range(5)]
        events += [request(i, D, 200) for i in range(20)]
        rt.stats.record(events)
        yield rt


async def _upstreams(pilot: Pilot[None]) -> None:
    await pilot.press("2")
    await wait_for(lambda: isinstance(pilot.app.screen, SitesScreen), description="the Sites screen")
    await pilot.press("u")
    await wait_for(lambda: isinstance(pilot.app.screen, UpstreamsScreen), description="the upstreams screen")
    await pilot.press("down")  # the one that is down: its reason in the detail
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_upstreams(snap_compare: Callable[..., bool], upstreams_runtime: Runtime, size: tuple[int, int]) -> None:
    assert snap_compare(HomeproxyApp(upstreams_runtime), terminal_size=size, run_before=_upstreams)
