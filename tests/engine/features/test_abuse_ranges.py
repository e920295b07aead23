"""Feature abuse (issue 14): `Range` headers with thousands of ranges, or overlapping ones.

The upstream here answers ranges the naive way (old Apache, CVE-2011-3192): one multipart
part per range it is asked for, overlapping or not. homeproxy's `ranges` guard must keep
such a Range from reaching it, so the client gets the whole entity (200) and never a
multipart answer larger than the entity plus part headers; through a caching site the
disarmed request is a plain GET, answered from the cache.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from homeproxy.engine.features.ranges import MAX_RANGES, acceptable
from tests.engine.conftest import StartBackend, StartProxy, fetch, make_config, site

HOST = "files.test"
ENTITY = bytes(range(256)) * 40  # 10 KiB
#: Per-part overhead allowed in a multipart answer (boundary, Content-Type, Content-Range).
PART_OVERHEAD = 200

#: A thousand disjoint one-byte ranges, in ascending order, under 8 KiB of header.
THOUSAND = "bytes=" + ",".join(f"{i}-{i}" for i in range(1000))
#: Two thousand copies of the whole entity: `0-` overlaps itself.
OVERLAPPING_OPEN = "bytes=" + ",".join(["0-"] * 2000)
#: Three closed ranges that overlap (each the whole entity).
OVERLAPPING = f"bytes=0-{len(ENTITY) - 1},0-{len(ENTITY) - 1},100-200"


class NaiveRanges:
    """An upstream that serves `ENTITY` and honours any Range, one part per range."""

    def __init__(self) -> None:
        self.ranges: list[str | None] = []

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        value = request.headers.get("Range")
        self.ranges.append(value)
        headers = {"Cache-Control": "max-age=600", "Accept-Ranges": "bytes", "Content-Type": "application/pdf"}
        if value is None or not value.startswith("bytes="):
            return web.Response(body=ENTITY, headers=headers)
        size = len(ENTITY)
        spans = []
        for spec in value[len("bytes=") :].split(","):
            first, _, last = spec.strip().partition("-")
            if not first:
                start, end = size - int(last), size - 1
            else:
                start, end = int(first), int(last) if last else size - 1
            spans.append((start, min(end, size - 1)))
        if len(spans) == 1:
            start, end = spans[0]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return web.Response(status=206, body=ENTITY[start : end + 1], headers=headers)
        body = b"".join(
            b"--XYZ\r\nContent-Type: application/pdf\r\nContent-Range: bytes %d-%d/%d\r\n\r\n%s\r\n"
            % (start, end, size, ENTITY[start : end + 1])
            for start, end in spans
        )
        headers["Content-Type"] = "multipart/byteranges; boundary=XYZ"
        return web.Response(status=206, body=body + b"--XYZ--\r\n", headers=headers)


@pytest.fixture
async def upstream(backend: StartBackend) -> tuple[NaiveRanges, str]:
    naive = NaiveRanges()
    return naive, (await backend(naive.handle)).url


@pytest.mark.parametrize("cached", [False, True], ids=["pass-through", "cached"])
async def test_abuse_range_thousands_or_overlapping_ranges_get_the_whole_entity(
    proxy: StartProxy, upstream: tuple[NaiveRanges, str], session: aiohttp.ClientSession, cached: bool
) -> None:
    naive, url = upstream
    p = await proxy(make_config(site("files", [HOST], [url], cache=cached)))
    if cached:
        first = await fetch(session, p, "/doc.pdf", host=HOST)
        assert (first.status, first.body, first.headers["X-Cache"]) == (200, ENTITY, "MISS")
    asked_before = len(naive.ranges)

    for abusive in (THOUSAND, OVERLAPPING_OPEN, OVERLAPPING, "bytes=abc,def", "bytes=" + "," * 5000):
        assert len(abusive) < 8000  # under any header line limit: this is about ranges, not size
        got = await fetch(session, p, "/doc.pdf", host=HOST, headers={"Range": abusive})
        # The whole entity, once: never a multipart answer out of proportion to it.
        assert got.status == 200, (abusive[:40], got.status, len(got.body))
        assert got.body == ENTITY
        if cached:
            assert got.headers["X-Cache"] == "HIT"  # disarmed: a plain GET, served from the cache
    # The upstream never saw one of them (through the cache it was not even asked).
    assert [r for r in naive.ranges[asked_before:] if r is not None] == []
    assert len(naive.ranges) - asked_before == (0 if cached else 5)


async def test_abuse_range_legacy_request_range_is_judged_the_same(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    seen: list[str | None] = []

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(request.headers.get("Request-Range"))
        return web.Response(body=ENTITY)

    p = await proxy(make_config(site("files", [HOST], [(await backend(handle)).url])))
    await fetch(session, p, "/", host=HOST, headers={"Request-Range": OVERLAPPING_OPEN})
    await fetch(session, p, "/", host=HOST, headers={"Request-Range": "bytes=0-99"})
    assert seen == [None, "bytes=0-99"]


@pytest.mark.parametrize("cached", [False, True], ids=["pass-through", "cached"])
async def test_abuse_range_reasonable_multi_ranges_pass_and_stay_small(
    proxy: StartProxy, upstream: tuple[NaiveRanges, str], session: aiohttp.ClientSession, cached: bool
) -> None:
    naive, url = upstream
    p = await proxy(make_config(site("files", [HOST], [url], cache=cached)))
    disjoint = "bytes=" + ",".join(f"{i * 100}-{i * 100 + 49}" for i in reversed(range(MAX_RANGES)))
    for value in ("bytes=0-99", "bytes=-100", "bytes=5000-", "bytes=0-9, 20-29", disjoint):
        got = await fetch(session, p, "/doc.pdf", host=HOST, headers={"Range": value})
        assert got.status == 206, value
        assert naive.ranges[-1] == value  # passed on untouched
        parts = value.count(",") + 1
        assert len(got.body) <= len(ENTITY) + PART_OVERHEAD * parts
        if cached:
            assert got.headers["X-Cache"] == "BYPASS"  # ranges are the upstream's to answer


def test_abuse_range_what_the_guard_lets_through() -> None:
    assert acceptable(["bytes=0-99"])
    assert acceptable(["bytes=-500"])
    assert acceptable(["bytes=500-"])
    assert acceptable(["bytes=10-19, 0-9"])  # unsorted but disjoint: bounded
    assert acceptable(["bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_RANGES))])
    assert acceptable(["items=0-5"])  # another unit: only counted
    assert not acceptable(["bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_RANGES + 1))])
    assert not acceptable(["items=" + ",".join(["1"] * (MAX_RANGES + 1))])
    assert not acceptable(["bytes=0-9,9-19"])  # one byte twice
    assert not acceptable(["bytes=0-9,-5"])  # suffix beside another: extent unknown
    assert not acceptable(["bytes=100-,0-9"])  # open beside another
    assert not acceptable(["bytes=9-0,20-30"])
    assert not acceptable(["bytes=0-1", "bytes=2-3"])  # two lines
    assert not acceptable(["bytes"])
    assert not acceptable(["bytes=,,,"])
    assert not acceptable(["bytes=0-1,2-" + "9" * 5000])  # no 5000-digit int() on the loop
