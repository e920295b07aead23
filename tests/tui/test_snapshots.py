"""How the TUI looks, with deterministic data: a fixed clock, canned events, a fixed address."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from homeproxy.engine import RequestCompleted
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp
from tests.tui.conftest import snapshot_config, snapshot_runtime_at

NOW = 1_800_000_000.0
# An unusual loopback address and port, so the address shown is the same on every run.
LISTEN, PORT = "127.77.0.9", 18099


@pytest.fixture
def snapshot_runtime(in_tmp: Path) -> Iterator[Runtime]:
    Path("config.toml").write_text(
        snapshot_config(
            LISTEN,
            PORT,
            """[[sites]]
name = "homeassistant"
hosts = ["ha.home.arpa", "ha.local"]
upstreams = ["http://192.0.2.10:8123"]

[[sites]]
name = "plex"
hosts = ["plex.home.arpa"]
upstreams = ["http://192.0.2.20:32400"]

[[sites]]
name = "nextcloud"
hosts = ["cloud.home.arpa"]
upstreams = ["http://192.0.2.30:80"]
enabled = false
""",
        ),
        encoding="utf-8",
    )
    with snapshot_runtime_at(Path("config.toml"), in_tmp / "log") as rt:
        events = []
        for i in range(40):
            site, status = ("homeassistant", 200) if i % 4 else ("plex", 502 if i % 8 == 0 else 206)
            events.append(
                RequestCompleted(
                    time=NOW - 10 + i / 4,
                    client="192.168.1.5",
                    site=site,
                    host=f"{site}.home.arpa",
                    method="GET",
                    path=f"/[red]{i}",
                    status=status,
                    bytes_in=0,
                    bytes_out=1000 * i,
                    duration=0.002 * (i + 1),
                    upstream="http://192.0.2.10:8123",
                )
            )
        rt.stats.record(events)
        yield rt


def test_main_screen_80x24(snap_compare: Callable[..., bool], snapshot_runtime: Runtime) -> None:
    assert snap_compare(HomeproxyApp(snapshot_runtime), terminal_size=(80, 24))


def test_main_screen_120x40(snap_compare: Callable[..., bool], snapshot_runtime: Runtime) -> None:
    assert snap_compare(HomeproxyApp(snapshot_runtime), terminal_size=(120, 40))
