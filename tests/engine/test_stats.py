"""`Stats`: counters, status classes, latency percentiles and per-second rates, on an injected clock."""

from __future__ import annotations

import dataclasses

import aiohttp

from homeproxy.engine import TOTAL, Consumer, RequestCompleted, Stats
from tests.engine.conftest import Backend, StartProxy, closed_port, fetch, make_config, site
from tests.waiting import wait_for


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ev(
    *,
    site: str = "plex",
    status: int = 200,
    time: float = 1000.0,
    duration: float = 0.01,
    bytes_in: int = 0,
    bytes_out: int = 0,
    upstream: str = "",
    error: str = "",
) -> RequestCompleted:
    return RequestCompleted(
        time=time,
        client="10.0.0.5",
        site=site,
        host=f"{site}.lan",
        method="GET",
        path="/",
        status=status,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        duration=duration,
        upstream=upstream,
        error=error,
    )


def test_counts_status_classes_and_bytes_per_site_and_in_total() -> None:
    stats = Stats(clock=Clock(2000.0))
    stats.record([ev(status=s, bytes_in=10, bytes_out=100) for s in (101, 200, 204, 302, 404, 404, 502)])
    stats.record([ev(site="nas", status=503, bytes_out=7), ev(site="", status=404, bytes_out=48)])

    snap = stats.snapshot()

    plex = snap["plex"]
    assert plex.requests == 7
    assert plex.status == (1, 2, 1, 2, 1)
    assert plex.errors == 1
    assert (plex.bytes_in, plex.bytes_out) == (70, 700)
    assert (snap["nas"].requests, snap["nas"].errors) == (1, 1)
    assert (snap[""].requests, snap[""].status) == (1, (0, 0, 0, 1, 0))  # unknown hosts
    total = snap[TOTAL]
    assert total.requests == 9
    assert total.status == (1, 2, 1, 3, 2)
    assert (total.bytes_in, total.bytes_out) == (70, 755)


def test_a_status_outside_the_classes_is_counted_but_not_classed() -> None:
    stats = Stats(clock=Clock(2000.0))
    stats.record([ev(status=0)])  # e.g. a request cut off before any answer

    plex = stats.site("plex")
    assert (plex.requests, plex.status) == (1, (0, 0, 0, 0, 0))


def test_latency_percentiles() -> None:
    stats = Stats(clock=Clock(2000.0))
    # 1000 requests; no percentile sits on a boundary, so any rank convention gives the same answer.
    durations = [0.010] * 600 + [0.050] * 340 + [0.200] * 55 + [1.0] * 5
    stats.record([ev(duration=d) for d in reversed(durations)])

    plex = stats.site("plex")
    assert (plex.p50, plex.p95, plex.p99) == (0.010, 0.200, 0.200)


def test_percentiles_cover_only_the_recent_window() -> None:
    stats = Stats(clock=Clock(2000.0), window=10)
    stats.record([ev(duration=5.0) for _ in range(10)])
    stats.record([ev(duration=0.1) for _ in range(10)])

    plex = stats.site("plex")
    assert (plex.p50, plex.p99) == (0.1, 0.1)
    assert plex.requests == 20  # the counters are not windowed


def test_an_unseen_site_is_all_zeros() -> None:
    stats = Stats(clock=Clock(2000.0), history=7)

    for view in (stats.site("ghost"), stats.snapshot()[TOTAL]):
        assert (view.requests, view.status, view.p50, view.p99, view.rps) == (0, (0, 0, 0, 0, 0), 0.0, 0.0, 0.0)
        assert view.rate == (0,) * 7


def test_rate_history_per_finished_second() -> None:
    clock = Clock(1000.5)
    stats = Stats(clock=clock, history=5)
    stats.record(
        [
            ev(time=995.2, duration=0.1),  # finished in second 995
            ev(time=996.9, duration=0.5),  # started in 996, finished in 997: counted in 997
            ev(time=997.0, duration=0.2),
            ev(time=999.1, duration=0.0),
            ev(time=999.5, duration=0.3),
            ev(time=999.9, duration=0.05),
        ]
    )

    plex = stats.site("plex")
    assert plex.rate == (1, 0, 2, 0, 3)  # seconds 995..999, oldest first
    assert plex.rps == 6 / 5
    assert stats.snapshot()[TOTAL].rate == (1, 0, 2, 0, 3)

    clock.now = 1002.5  # two seconds later the window is 997..1001
    stats.record([ev(time=1000.5, duration=0.1)])
    assert stats.site("plex").rate == (2, 0, 3, 1, 0)

    clock.now = 5000.0  # long after: nothing left in the window, counters kept
    later = stats.site("plex")
    assert later.rate == (0, 0, 0, 0, 0)
    assert later.requests == 7


def test_the_current_second_does_not_erase_the_oldest_shown_second() -> None:
    stats = Stats(clock=Clock(1000.5), history=5)
    stats.record([ev(time=995.5, duration=0.0)] * 3)  # the oldest second of the window 995..999
    assert stats.site("plex").rate == (3, 0, 0, 0, 0)

    stats.record([ev(time=1000.2, duration=0.0)])  # a request in the current, unfinished second

    assert stats.site("plex").rate == (3, 0, 0, 0, 0)


def test_ring_slots_are_reused_for_new_seconds() -> None:
    clock = Clock(1010.5)
    stats = Stats(clock=clock, history=5)
    stats.record([ev(time=1003.5, duration=0.0)] * 4)  # slot of second 1003
    stats.record([ev(time=1008.5, duration=0.0)])  # same slot (1008 % 5 == 1003 % 5), a new second

    assert stats.site("plex").rate == (0, 0, 0, 1, 0)  # seconds 1005..1009: 1003's count is gone


def test_rps_averages_the_last_five_seconds() -> None:
    stats = Stats(clock=Clock(1100.5), history=60)
    stats.record([ev(time=1090.5, duration=0.0)] * 50)  # long ago: outside the last five seconds
    stats.record([ev(time=1095.5 + s, duration=0.0) for s in range(5) for _ in range(s + 1)])  # 1,2,3,4,5

    plex = stats.site("plex")
    assert plex.rps == 15 / 5
    assert len(plex.rate) == 60


def test_snapshot_is_a_copy() -> None:
    stats = Stats(clock=Clock(2000.0))
    stats.record([ev()])
    before = stats.snapshot()["plex"]

    stats.record([ev(), ev()])

    assert before.requests == 1
    assert stats.snapshot()["plex"].requests == 3
    assert dataclasses.is_dataclass(before)


A = "http://10.0.0.1:80"
B = "http://10.0.0.2:80"


def test_counts_requests_errors_and_share_per_upstream_of_each_site() -> None:
    stats = Stats(clock=Clock(2000.0))
    stats.record(
        [
            ev(upstream=A),
            ev(upstream=A, status=502),  # a 5xx is an error
            ev(upstream=A, status=200, error="client went away"),  # so is a request that failed
            ev(upstream=B, status=404),  # a 4xx is not
            ev(status=200),  # answered without an upstream (a cache hit): no upstream's share
            ev(site="nas", upstream=A, status=503),  # the same URL under another site is its own
        ]
    )

    plex = stats.upstreams("plex")
    assert set(plex) == {("plex", A), ("plex", B)}
    a, b = plex["plex", A], plex["plex", B]
    assert (a.requests, a.errors, a.share) == (3, 2, 0.75)
    assert (b.requests, b.errors, b.share) == (1, 0, 0.25)
    nas = stats.upstreams()["nas", A]
    assert (nas.requests, nas.errors, nas.share) == (1, 1, 1.0)
    assert stats.upstreams("ghost") == {}


def test_upstream_median_latency_covers_its_recent_window() -> None:
    stats = Stats(clock=Clock(2000.0), upstream_window=5)
    stats.record([ev(upstream=A, duration=d) for d in (9.0, 9.0, 9.0, 0.1, 0.2, 0.3, 0.4, 0.5)])
    stats.record([ev(upstream=B, duration=d) for d in (0.02, 0.01, 0.03)])

    ups = stats.upstreams("plex")
    assert ups["plex", A].p50 == 0.3  # the 9 s requests fell out of the window
    assert ups["plex", A].requests == 8  # the counters are not windowed
    assert ups["plex", B].p50 == 0.02


def test_the_upstream_table_is_bounded_and_drops_the_one_seen_longest_ago() -> None:
    stats = Stats(clock=Clock(2000.0), max_upstreams=2)
    stats.record([ev(upstream=A), ev(upstream=B)])
    stats.record([ev(upstream=A)])  # A is now the most recent
    stats.record([ev(upstream="http://10.0.0.3:80")])

    assert set(stats.upstreams()) == {("plex", A), ("plex", "http://10.0.0.3:80")}
    assert stats.upstreams()["plex", A].share == 2 / 3


async def test_stats_fed_by_a_running_engine(proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    p = await proxy(
        make_config(
            site("app", ["app.lan"], [echo.url]),
            site("down", ["down.lan"], [down]),
        )
    )
    stats = Stats()
    consumer = Consumer(p.bus, "stats", stats.record, interval=0.01)
    consumer.start()
    try:
        for i in range(3):
            await fetch(session, p, f"/{i}", host="app.lan", method="POST", data=b"12345")
        await fetch(session, p, host="down.lan")
        await fetch(session, p, host="other.lan")
        await wait_for(lambda: stats.snapshot()[TOTAL].requests == 5, description="5 requests counted")
    finally:
        consumer.stop()

    snap = stats.snapshot()
    assert (snap["app"].requests, snap["app"].status, snap["app"].bytes_in) == (3, (0, 3, 0, 0, 0), 15)
    assert (snap["down"].requests, snap["down"].errors) == (1, 1)
    assert snap[""].status == (0, 0, 0, 1, 0)
    assert snap["app"].p50 > 0
    ups = stats.upstreams()
    assert set(ups) == {("app", echo.url), ("down", down)}
    assert (ups["app", echo.url].requests, ups["app", echo.url].errors, ups["app", echo.url].share) == (3, 0, 1.0)
    assert (ups["down", down].requests, ups["down", down].errors) == (1, 1)
