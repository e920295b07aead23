"""`AccessLog`: JSON lines, size-based rotation keeping `keep_files`, settings changes, and fed by an engine."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp

from homeproxy.engine import AccessLog, Consumer, RequestCompleted
from tests.engine.conftest import Backend, StartProxy, fetch, make_config, raw_request, record, site

FIELDS = {
    "time",
    "client",
    "site",
    "host",
    "method",
    "path",
    "status",
    "bytes_in",
    "bytes_out",
    "upstream",
    "cache",
    "error",
    "duration_ms",
}


def event(n: int = 0, **changes: Any) -> RequestCompleted:
    base = RequestCompleted(
        time=1_700_000_000.123456 + n,
        client="192.168.1.57",
        site="homeassistant",
        host="ha.home.arpa",
        method="GET",
        path=f"/api/{n}?x=1",
        status=200,
        bytes_in=0,
        bytes_out=18342,
        duration=0.0412084,
        upstream="http://192.168.1.10:8123",
    )
    return dataclasses.replace(base, **changes)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def rotated(log: AccessLog, n: int) -> Path:
    return log.path.with_name(f"{log.path.name}.{n}")


def test_writes_one_json_object_per_line(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "logs" / "access.log")  # the directory is made on first write
    log.write([event(0), event(1, status=502, error="upstream unreachable: refused", host="bücher.lan")])
    log.close()

    first, second = lines(log.path)
    assert set(first) == FIELDS
    assert first == {
        "time": "2023-11-14T22:13:20.123+00:00",
        "client": "192.168.1.57",
        "site": "homeassistant",
        "host": "ha.home.arpa",
        "method": "GET",
        "path": "/api/0?x=1",
        "status": 200,
        "bytes_in": 0,
        "bytes_out": 18342,
        "upstream": "http://192.168.1.10:8123",
        "cache": "",
        "error": "",
        "duration_ms": 41.208,
    }
    assert (second["status"], second["error"], second["host"]) == (502, "upstream unreachable: refused", "bücher.lan")
    assert "bücher.lan" in log.path.read_text(encoding="utf-8")  # UTF-8, not \u escapes


def test_appends_across_batches_and_reopens(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.log")
    log.write([event(0)])
    log.write([event(1), event(2)])
    log.close()
    again = AccessLog(tmp_path / "access.log")
    again.write([event(3)])
    again.close()

    assert [r["path"] for r in lines(log.path)] == [f"/api/{n}?x=1" for n in range(4)]


def test_rotates_by_size_and_keeps_keep_files(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.log", max_bytes=1000, keep_files=2)

    for n in range(40):
        log.write([event(n)])
        assert not rotated(log, 3).exists()
    log.close()

    files = [rotated(log, 2), rotated(log, 1), log.path]
    existing = [f for f in files if f.exists()]
    assert existing[:2] == files[:2]
    for full in files[:2]:
        assert 1000 <= full.stat().st_size < 1000 + 400  # rolled once past max_bytes, at most one line over
    kept = [r["path"] for f in existing for r in lines(f)]
    # Oldest file first, and together they are the most recent requests, none missing in between.
    assert kept == [f"/api/{n}?x=1" for n in range(40 - len(kept), 40)]
    assert len(kept) >= 8


def test_keep_files_zero_deletes_the_full_log(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.log", max_bytes=500, keep_files=0)  # about two lines

    for n in range(5):
        log.write([event(n)])
    log.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["access.log"]
    assert [r["path"] for r in lines(log.path)] == ["/api/4?x=1"]  # 0-1 and 2-3 were deleted when full


def test_disabled_writes_nothing_until_enabled_again(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.log")
    log.write([event(0)])
    log.configure(enabled=False, max_bytes=log.max_bytes, keep_files=log.keep_files)
    log.write([event(1)])
    log.configure(enabled=True, max_bytes=log.max_bytes, keep_files=log.keep_files)
    log.write([event(2)])
    log.close()

    assert [r["path"] for r in lines(log.path)] == ["/api/0?x=1", "/api/2?x=1"]


def test_a_new_path_takes_effect_at_the_next_batch(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "a.log")
    log.write([event(0)])
    log.configure(enabled=True, max_bytes=log.max_bytes, keep_files=log.keep_files, path=tmp_path / "sub" / "b.log")
    log.write([event(1)])
    log.close()

    assert [r["path"] for r in lines(tmp_path / "a.log")] == ["/api/0?x=1"]
    assert [r["path"] for r in lines(tmp_path / "sub" / "b.log")] == ["/api/1?x=1"]


def test_lowering_keep_files_removes_the_extra_files(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.log", max_bytes=100, keep_files=4)
    for n in range(6):
        log.write([event(n)])  # every line is over 100 bytes: one rotation per batch
    assert all(rotated(log, k).exists() for k in (1, 2, 3, 4))

    log.configure(enabled=True, max_bytes=100, keep_files=2)
    log.write([event(6)])
    log.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["access.log.1", "access.log.2"]


async def test_fed_by_a_running_engine(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    log = AccessLog(tmp_path / "access.log")
    consumer = Consumer(p.bus, "access-log", log.write, interval=0.01)
    events = record(p)  # subscribed after the log: when it has an event, the log's queue has it too
    consumer.start()
    try:
        await fetch(session, p, "/a?b=1", host="App.lan:8080", method="PUT", data=b"hello")
        await fetch(session, p, "/x", host="nowhere.lan")
        await events.wait(2)
    finally:
        consumer.stop()  # hands over what is queued
        log.close()

    ok, missing = lines(log.path)
    assert (ok["site"], ok["host"], ok["method"], ok["path"], ok["status"], ok["bytes_in"]) == (
        "app",
        "app.lan",
        "PUT",
        "/a?b=1",
        200,
        5,
    )
    assert ok["upstream"] == echo.url
    assert (missing["site"], missing["status"], missing["upstream"]) == ("", 404, "")


async def test_a_non_utf8_host_does_not_stop_the_access_log(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    log = AccessLog(tmp_path / "access.log")
    consumer = Consumer(p.bus, "access-log", log.write, interval=0.01)
    events = record(p)
    consumer.start()
    try:
        bad = await raw_request(p.port, b"GET / HTTP/1.1\r\nHost: caf\xe9.lan\r\nConnection: close\r\n\r\n")
        assert bad.status == 404
        await fetch(session, p, "/after", host="app.lan")
        await events.wait(2)
    finally:
        consumer.stop()
        log.close()

    written = lines(log.path) if log.path.exists() else []
    assert [r["path"] for r in written] == ["/", "/after"]


async def test_a_full_disk_is_reported_once_and_the_proxy_keeps_serving(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    p = await proxy(make_config(site("app", ["app.lan"], [echo.url])))
    reports: list[tuple[str, bool]] = []
    log = AccessLog(Path("/dev/full"), report=lambda message, failing: reports.append((message, failing)))
    consumer = Consumer(p.bus, "access-log", log.write, interval=0.01)
    consumer.start()
    try:
        for n in range(3):
            events = record(p)
            assert (await fetch(session, p, f"/{n}", host="app.lan")).status == 200
            await events.wait(1)
            await asyncio.sleep(0.05)  # the consumer's next batch
        assert [failing for _, failing in reports] == [True]  # once, however many batches fail
        assert reports[0][0].startswith("access log /dev/full cannot be written: ")
        assert log.lost >= 3
        # The disk has room again (here: the user points the log elsewhere): lines are written again.
        log.configure(enabled=True, max_bytes=10**6, keep_files=1, path=tmp_path / "access.log")
        events = record(p)
        await fetch(session, p, "/after", host="app.lan")
        await events.wait(1)
        await asyncio.sleep(0.05)
    finally:
        consumer.stop()
        log.close()
    assert [failing for _, failing in reports] == [True, False]
    assert "is written again" in reports[1][0]
    assert [line["path"] for line in lines(tmp_path / "access.log")] == ["/after"]  # the consumer stayed on
