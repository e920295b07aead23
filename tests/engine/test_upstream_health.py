"""Upstream health against real backends: passive counting, active checks, backups, all down.

Each backend is a real aiohttp server on loopback that can be stopped (its port then refuses
connections) and started again on the same port, and whose health answer (`/health`) can be
turned bad by status or by body. The engine says what it decided through
`UpstreamHealthChanged` events on its bus and `Engine.upstream_health()`.

`Server` (with `server_factory`), `HealthChanges`, `status_of` and the request helpers are
shared with `test_balance.py` and `test_upstream_retries.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from homeproxy.config import Config
from homeproxy.engine.health_types import UpstreamHealthChanged, UpstreamStatus
from tests.engine.conftest import STEP_TIMEOUT, Proxy, StartProxy, fetch, make_config
from tests.waiting import wait_for

HEALTH = "/health"
#: Active checks fast enough for tests: a check every 200 ms.
FAST_CHECKS: dict[str, Any] = {"path": HEALTH, "interval": "200ms", "timeout": "1s", "passes": 2, "fails": 2}


# --- backends that can go away and come back -----------------------------------------------


@dataclass(eq=False)
class Server:
    """A real aiohttp backend on 127.0.0.1 that answers its name, counts what it gets, holds
    requests to `/hold...` until `release` is set (if it `holds`), and answers `/health` with
    `health_status` and `health_body` (counting the probes)."""

    name: str
    port: int = 0
    health_status: int = 200
    health_body: str = "ok"
    status: int = 200
    """The status of its answers to requests (not probes)."""
    holds: bool = True
    served: list[str] = field(default_factory=list)
    """Paths of the requests it answered or is answering (probes not included)."""
    bodies: list[int] = field(default_factory=list)
    """The length of each request body it read to the end."""
    probes: int = 0
    holding: int = 0
    """Requests to `/hold...` waiting for `release` now."""
    most_at_once: int = 0
    """The most requests it had in hand at the same time."""
    on_probe: Callable[[Server], None] | None = None
    """Called as each probe arrives, before it is answered."""
    probe_gate: asyncio.Event | None = None
    """If set, probes wait for this event before they are answered."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _at_once: int = 0
    _runner: web.ServerRunner | None = None

    @property
    def busy(self) -> bool:
        """Some request is in hand now."""
        return self._at_once > 0

    @property
    def url(self) -> str:
        assert self.port, "not started"
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == HEALTH:
            self.probes += 1
            if self.on_probe is not None:
                self.on_probe(self)
            if self.probe_gate is not None:
                await self.probe_gate.wait()
            return web.Response(status=self.health_status, text=self.health_body)
        self.served.append(request.path)
        self._at_once += 1
        self.most_at_once = max(self.most_at_once, self._at_once)
        try:
            body = await request.read()
            self.bodies.append(len(body))
            if self.holds and request.path.startswith("/hold"):
                self.holding += 1
                try:
                    await self.release.wait()
                finally:
                    self.holding -= 1
        finally:
            self._at_once -= 1
        return web.Response(status=self.status, text=self.name, headers={"X-Body-Length": str(len(body))})

    async def start(self) -> None:
        """Listen (again: on the same port as before)."""
        assert self._runner is None
        runner = web.ServerRunner(web.Server(self.handle), handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        tcp = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        try:
            await tcp.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = tcp.port

    async def stop(self) -> None:
        """Stop listening and close its connections: from now on its port refuses connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self.release.set()
            await runner.cleanup()
            self.release = asyncio.Event()


StartServer = Callable[[str], Awaitable[Server]]


@contextlib.asynccontextmanager
async def server_factory() -> AsyncIterator[StartServer]:
    """`Server`s started on demand, all stopped at the end."""
    made: list[Server] = []

    async def start(name: str) -> Server:
        server = Server(name)
        await server.start()
        made.append(server)
        return server

    try:
        yield start
    finally:
        for server in made:
            server.release.set()
        for server in made:
            await server.stop()


@pytest.fixture
async def servers() -> AsyncIterator[StartServer]:
    async with server_factory() as start:
        yield start


# --- what the engine says ---------------------------------------------------------------


class HealthChanges:
    """The `UpstreamHealthChanged` events of one engine's bus, from subscription on."""

    def __init__(self, p: Proxy) -> None:
        self.sub = p.bus.subscribe("upstream-health-test", kinds=(UpstreamHealthChanged,))
        self.events: list[UpstreamHealthChanged] = []

    def poll(self) -> list[UpstreamHealthChanged]:
        self.events.extend(e for e in self.sub.drain() if isinstance(e, UpstreamHealthChanged))
        return self.events

    def of(self, server: Server) -> list[UpstreamHealthChanged]:
        return [e for e in self.poll() if e.upstream == server.url]

    def went(self, server: Server, *, up: bool) -> bool:
        return any(e.up is up for e in self.of(server))

    async def wait(self, server: Server, *, up: bool, timeout: float = STEP_TIMEOUT) -> UpstreamHealthChanged:
        """The first event saying `server` went down (`up=False`) or came back."""
        what = "back up" if up else "down"
        await wait_for(lambda: self.went(server, up=up), timeout=timeout, description=f"{server.name} {what}")
        return next(e for e in self.of(server) if e.up is up)


def status_of(p: Proxy, server: Server) -> UpstreamStatus:
    (found,) = [s for s in p.engine.upstream_health() if s.upstream == server.url and s.route == ""]
    return found


def lb_config(upstreams: list[Any], **options: Any) -> Config:
    """One site `lb.lan` with these upstreams (URLs or tables) and options."""
    return make_config({"name": "lb", "hosts": ["lb.lan"], "upstreams": upstreams, **options})


async def get(session: aiohttp.ClientSession, p: Proxy, path: str = "/", **headers: str) -> tuple[int, str]:
    """(status, body) of one GET to `lb.lan`."""
    got = await fetch(session, p, path, host="lb.lan", headers=headers or None)
    return got.status, got.body.decode("utf-8", "replace")


async def served_by(session: aiohttp.ClientSession, p: Proxy, n: int, path: str = "/r") -> list[str]:
    """The names of the backends that answered `n` GETs sent one after another (all must be 200)."""
    out = []
    for k in range(n):
        status, body = await get(session, p, f"{path}{k}")
        assert status == 200, (status, body[:200])
        out.append(body)
    return out


class Traffic:
    """GETs sent one after another in the background while the test changes the backends."""

    def __init__(self, session: aiohttp.ClientSession, p: Proxy) -> None:
        self.answers: list[tuple[int, str]] = []
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._run(session, p))

    async def _run(self, session: aiohttp.ClientSession, p: Proxy) -> None:
        k = 0
        while not self._stop.is_set():
            self.answers.append(await get(session, p, f"/t{k}"))
            k += 1

    async def more(self, n: int) -> None:
        """Wait for `n` more answers than there are now."""
        target = len(self.answers) + n
        await wait_for(lambda: len(self.answers) >= target or self._task.done(), description=f"{n} more answers")
        if self._task.done():
            self._task.result()

    async def stop(self) -> list[tuple[int, str]]:
        self._stop.set()
        await asyncio.wait_for(self._task, STEP_TIMEOUT)
        return self.answers


# --- passive health: a backend that dies mid-run ------------------------------------------


async def test_a_backend_killed_mid_run_is_taken_out_by_failed_requests_with_no_client_error(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    a, b = await servers("a"), await servers("b")
    passive = {"fails": 2, "window": "30s", "cooldown": "30s"}
    p = await proxy(lb_config([a.url, b.url], passive_health=passive))  # no active checks
    changes = HealthChanges(p)
    traffic = Traffic(session, p)

    await traffic.more(10)
    await a.stop()  # mid-run: its port refuses connections from now on
    down = await changes.wait(a, up=False)
    served_before = len(a.served)
    await traffic.more(10)
    answers = await traffic.stop()

    assert [s for s, _ in answers] == [200] * len(answers)  # every GET was retried on b
    assert {"a", "b"} <= {body for _, body in answers}
    assert len(a.served) == served_before
    assert answers[-10:] == [(200, "b")] * 10
    assert "2 failed requests within 30 s" in down.reason, down.reason
    state = status_of(p, a)
    assert (state.up, state.state) == (False, "cooling")
    assert state.until > state.since
    assert status_of(p, b).up
    assert not changes.went(b, up=False)


async def test_a_killed_backend_comes_back_when_its_checks_pass_and_gets_traffic_again(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    a, b = await servers("a"), await servers("b")
    passive = {"fails": 2, "window": "30s", "cooldown": "30s"}  # a cool-down far longer than the test
    p = await proxy(lb_config([a.url, b.url], health=FAST_CHECKS, passive_health=passive))
    changes = HealthChanges(p)
    traffic = Traffic(session, p)

    await traffic.more(6)
    await a.stop()
    await changes.wait(a, up=False)
    assert status_of(p, a).state in ("cooling", "down")
    served_while_down = len(a.served)
    await traffic.more(6)
    assert len(a.served) == served_while_down

    await a.start()  # the same port
    back = await changes.wait(a, up=True)
    assert "2 passing checks" in back.reason, back.reason
    await wait_for(lambda: len(a.served) > served_while_down, description="traffic to a again")
    answers = await traffic.stop()

    assert [s for s, _ in answers] == [200] * len(answers)
    state = status_of(p, a)
    assert (state.up, state.state, state.check_ok) == (True, "up", True)
    assert [e.up for e in changes.of(a)] == [False, True]


# --- active checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checks", "turn_bad", "said"),
    [
        ({}, {"health_status": 500}, "status 500 (expected 200-399)"),
        ({"status": "200-399", "body": "ok"}, {"health_body": "starting"}, 'body lacks "ok"'),
    ],
    ids=["status", "body"],
)
async def test_failing_checks_take_it_out_after_fails_checks_and_not_before(
    proxy: StartProxy,
    servers: StartServer,
    session: aiohttp.ClientSession,
    checks: dict[str, Any],
    turn_bad: dict[str, Any],
    said: str,
) -> None:
    a, b = await servers("a"), await servers("b")
    p = await proxy(lb_config([a.url, b.url], health={**FAST_CHECKS, "fails": 3, **checks}))
    changes = HealthChanges(p)
    await wait_for(lambda: status_of(p, a).check_ok, description="a passing a check")

    # From now on a fails its checks; note, as each failing probe arrives (before it is
    # answered), whether the engine has said that a is down.
    down_when_probed: list[bool] = []

    def note(server: Server) -> None:
        down_when_probed.append(changes.went(a, up=False))

    for key, value in turn_bad.items():
        setattr(a, key, value)
    a.on_probe = note
    down = await changes.wait(a, up=False)
    await wait_for(lambda: len(down_when_probed) >= 4, description="a probe after the third failing one")

    # Three failing checks, not two, took it out: nothing said at the 1st, 2nd and 3rd probes.
    assert down_when_probed[:4] == [False, False, False, True]
    assert down.reason.startswith("3 failed checks in a row: "), down.reason
    assert said in down.reason, down.reason
    state = status_of(p, a)
    assert (state.up, state.state, state.check_ok) == (False, "down", False)
    assert said in state.check_detail
    assert set(await served_by(session, p, 6)) == {"b"}


async def test_backup_gets_requests_only_while_every_primary_is_down(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    one, two, spare = await servers("one"), await servers("two"), await servers("spare")
    ups = [one.url, {"url": two.url}, {"url": spare.url, "backup": True}]
    p = await proxy(lb_config(ups, health=FAST_CHECKS))
    changes = HealthChanges(p)

    assert sorted(set(await served_by(session, p, 20))) == ["one", "two"]
    assert spare.served == []

    one.health_status = 503
    await changes.wait(one, up=False)
    assert set(await served_by(session, p, 6)) == {"two"}  # one primary is left: still no backup
    assert spare.served == []

    two.health_status = 503
    await changes.wait(two, up=False)
    assert await served_by(session, p, 6) == ["spare"] * 6

    one.health_status = 200
    await changes.wait(one, up=True)
    assert await served_by(session, p, 6) == ["one"] * 6
    assert len(spare.served) == 6
    assert not changes.went(spare, up=False)


async def test_all_down_is_a_503_with_retry_after_and_the_checks_go_on(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    a, b = await servers("a"), await servers("b")
    p = await proxy(lb_config([a.url, b.url], health=FAST_CHECKS))
    changes = HealthChanges(p)
    a.health_status = b.health_status = 500
    await changes.wait(a, up=False)
    await changes.wait(b, up=False)

    for path in ("/", "/some/page", "/favicon.ico"):
        got = await fetch(session, p, path, host="lb.lan")
        assert got.status == 503, (path, got.status)  # never a 404: the site is there, its upstreams are not
        retry_after = got.headers.get("Retry-After")
        assert retry_after is not None and 1 <= int(retry_after) <= 30, retry_after
    assert a.served == b.served == []

    probed = a.probes, b.probes
    await wait_for(lambda: a.probes >= probed[0] + 3 and b.probes >= probed[1] + 3, description="checks going on")

    b.health_status = 200  # and the checks are what bring one back
    await changes.wait(b, up=True)
    assert await served_by(session, p, 4) == ["b"] * 4


async def test_after_failed_requests_it_takes_passes_new_passing_checks_to_come_back(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    """Checks that passed before it was taken out do not count towards bringing it back."""
    a, b = await servers("a"), await servers("b")
    passive = {"fails": 2, "window": "30s", "cooldown": "30s", "status_5xx": True}
    p = await proxy(lb_config([a.url, b.url], health={**FAST_CHECKS, "timeout": "5s"}, passive_health=passive))
    changes = HealthChanges(p)
    await wait_for(lambda: a.probes >= 3, description="a few passing checks of a")

    # Hold one (passing) probe at a while failed requests take it out, then let it answer.
    a.probe_gate = gate = asyncio.Event()
    probed = a.probes
    await wait_for(lambda: a.probes > probed, description="a probe held at a")
    a.status = 502  # its gateway is in trouble, its own health answer is fine
    for k in range(4):
        await get(session, p, f"/r{k}")
    down = await changes.wait(a, up=False)
    assert "2 failed requests within 30 s: status 502" in down.reason, down.reason
    back_when_probed: list[bool] = []
    a.on_probe = lambda server: back_when_probed.append(changes.went(a, up=True))
    a.probe_gate = None
    gate.set()  # one passing check since it went out

    await changes.wait(a, up=True)
    await wait_for(lambda: len(back_when_probed) >= 2, description="a probe after the second passing one")
    assert back_when_probed[:2] == [False, True]  # two passing checks after it went out, not one
    assert status_of(p, a).state == "up"


# --- health across a config apply ----------------------------------------------------------


@pytest.mark.parametrize("how", ["passive", "active"])
async def test_a_down_upstream_stays_down_across_an_apply_that_leaves_health_alone(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession, how: str
) -> None:
    a, b = await servers("a"), await servers("b")
    options: dict[str, Any] = {"passive_health": {"fails": 2, "window": "30s", "cooldown": "30s"}}
    if how == "active":
        options["health"] = FAST_CHECKS
    p = await proxy(lb_config([a.url, b.url], **options))
    changes = HealthChanges(p)

    if how == "passive":
        await a.stop()
        await served_by(session, p, 4)  # a refuses: two of these count against it
        await changes.wait(a, up=False)
        await a.start()  # well again, but cooling down for 30 s
    else:
        a.health_status = 500  # failing its checks (it would still answer requests)
        await changes.wait(a, up=False)
    before = status_of(p, a)
    served = len(a.served)

    # An unrelated change: another site, and a longer read timeout on this one.
    other = {"name": "other", "hosts": ["other.lan"], "upstreams": [b.url]}
    lb = {"name": "lb", "hosts": ["lb.lan"], "upstreams": [a.url, b.url], "read_timeout": "61s", **options}
    await asyncio.to_thread(p.engine.apply, make_config(lb, other))

    after = status_of(p, a)
    assert (after.up, after.state, after.since) == (False, before.state, before.since)
    assert await served_by(session, p, 8) == ["b"] * 8
    assert len(a.served) == served
    assert [e.up for e in changes.of(a)] == [False]
    assert status_of(p, a).state == before.state


async def test_a_cool_down_still_ends_after_an_apply_that_turns_active_checks_off(
    proxy: StartProxy, servers: StartServer, session: aiohttp.ClientSession
) -> None:
    a, b = await servers("a"), await servers("b")
    passive = {"fails": 2, "window": "30s", "cooldown": "2500ms", "status_5xx": True}
    checks = {**FAST_CHECKS, "interval": "30s"}  # on, but not in the way
    p = await proxy(lb_config([a.url, b.url], health=checks, passive_health=passive))
    changes = HealthChanges(p)

    a.status = 502
    for k in range(4):
        await get(session, p, f"/r{k}")
    await changes.wait(a, up=False)
    a.status = 200
    await asyncio.to_thread(p.engine.apply, lb_config([a.url, b.url], passive_health=passive))

    assert status_of(p, a).state == "cooling"
    back = await changes.wait(a, up=True)  # the cool-down's end was not forgotten with the checks
    assert "cool-down over" in back.reason, back.reason
    await wait_for(lambda: status_of(p, a).up, description="a up")
    assert set(await served_by(session, p, 4)) == {"a", "b"}
