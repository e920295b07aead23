"""Upstream health: active checks, passive counting, and the board that keeps both.

One `UpstreamHealth` per (site, upstream URL), shared by the site's routes that list the same
upstream, kept across config applies (a reload does not forget that a NAS is down).

- **Active** (`health = {...}`): a task per upstream asks for `path` every `interval`;
  `fails` failing checks in a row take it out, `passes` passing ones bring it back. A down
  upstream that passes a check is checked again after a second, so it is back about
  `passes - 1` seconds after it recovers, not `passes` intervals.
- **Passive** (`passive_health`, on by default): `fails` failed requests within `window`
  (refused, reset, timed out; 502/503/504 with `status_5xx`) take it out for `cooldown`
  seconds; with active checks on, `passes` passing checks bring it back sooner.
- Before its first check an upstream counts as up: no 5xx storm after a restart.

Each change of `up` is an `UpstreamHealthChanged` on the event bus. Everything here runs
on the engine's loop; `snapshot()` may be read from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable

from yarl import URL

from homeproxy.config.model import HealthCheck, Site, Upstream
from homeproxy.engine.events import Event
from homeproxy.engine.h1.errors import UpstreamError
from homeproxy.engine.h1.pool import Origin, Pool
from homeproxy.engine.health_types import UpstreamHealthChanged, UpstreamStatus

log = logging.getLogger(__name__)

RECHECK_AFTER_PASS = 1.0
"""Seconds to the next check of a down upstream that just passed one."""
_BODY_LIMIT = 64 * 1024

Resolve = Callable[[], URL | None]
OriginFor = Callable[[URL], tuple[Origin, str]]


class UpstreamHealth:
    """One upstream of one site: whether it takes traffic, and why."""

    def __init__(self, site: Site, upstream: Upstream, route: str, board: HealthBoard) -> None:
        self.site = site
        self.upstream = upstream
        self.url = upstream.url
        self.route = route
        self.board = board
        self.up = True
        self.active_down = False
        self.cooling = False
        self.reason = ""
        self.since = board.clock()
        self.until = 0.0
        self.passes = 0
        self.fails = 0
        self.checked = 0.0
        self.check_ok = False
        self.check_detail = ""
        self.check_latency = 0.0
        self.failures: deque[float] = deque()
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        """Requests waiting for a slot under `max_conns`."""
        self.resolve: Resolve = lambda: None
        self.origin_for: OriginFor | None = None
        self._cool_timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    # --- requests --------------------------------------------------------------------------

    def full(self) -> bool:
        limit = self.upstream.max_conns
        return bool(limit) and self.in_flight >= limit

    def done(self) -> None:
        """A request to it ended: one fewer in flight, and a waiting request may go."""
        self.in_flight -= 1
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def failed(self, why: str) -> None:
        """A request to it failed (refused, reset, timed out, or a 502/503/504 when counted)."""
        passive = self.site.passive_health
        if not passive.enabled or not self.up:
            return
        now = time.monotonic()
        failures = self.failures
        failures.append(now)
        while failures and failures[0] < now - passive.window:
            failures.popleft()
        if len(failures) >= passive.fails:
            failures.clear()
            self.passes = 0  # only checks passed from now on bring it back
            self.cooling = True
            self.until = self.board.clock() + passive.cooldown
            loop = asyncio.get_running_loop()
            self._cool_timer = loop.call_later(passive.cooldown, self._cool_over)
            self._set(f"{passive.fails} failed requests within {passive.window:g} s: {why}")

    def _cool_over(self) -> None:
        self._cool_timer = None
        if self.cooling:
            self.cooling = False
            self.until = 0.0
            self._set("cool-down over")

    # --- active checks ---------------------------------------------------------------------

    def checked_once(self, ok: bool, detail: str, latency: float) -> None:
        check = self.site.health
        assert check is not None
        self.checked = self.board.clock()
        self.check_ok, self.check_detail, self.check_latency = ok, detail, latency
        if ok:
            self.passes += 1
            self.fails = 0
            if (self.active_down or self.cooling) and self.passes >= check.passes:
                self.active_down = False
                self._end_cooling()
                self._set(f"{check.passes} passing check{'s' if check.passes > 1 else ''}: {detail}")
        else:
            self.fails += 1
            self.passes = 0
            if not self.active_down and self.fails >= check.fails:
                self.active_down = True
                self._set(f"{check.fails} failed check{'s' if check.fails > 1 else ''} in a row: {detail}")

    def _end_cooling(self) -> None:
        self.cooling = False
        self.until = 0.0
        if self._cool_timer is not None:
            self._cool_timer.cancel()
            self._cool_timer = None

    def _set(self, reason: str) -> None:
        up = not self.active_down and not self.cooling
        self.reason = reason
        if up == self.up:
            return
        self.up = up
        self.since = self.board.clock()
        if up:
            self.reason = f"back: {reason}"
        log.log(logging.INFO if up else logging.WARNING, "site %s: upstream %s %s (%s)",
                self.site.name, self.url, "is back" if up else "is down", reason)  # fmt: skip
        self.board.publish(UpstreamHealthChanged(self.since, self.site.name, self.url, up, reason))

    def state(self) -> str:
        if self.active_down:
            return "down"
        if self.cooling:
            return "cooling"
        if self.site.health is not None and not self.checked:
            return "unchecked"
        return "up"

    def status(self) -> UpstreamStatus:
        u = self.upstream
        return UpstreamStatus(
            site=self.site.name,
            upstream=self.url,
            route=self.route,
            backup=u.backup,
            weight=u.weight,
            max_conns=u.max_conns,
            up=self.up,
            state=self.state(),
            reason=self.reason,
            since=self.since,
            until=self.until,
            checked=self.checked,
            check_ok=self.check_ok,
            check_detail=self.check_detail,
            check_latency=self.check_latency,
            failures=len(self.failures),
            in_flight=self.in_flight,
        )

    def stop_checks(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def stop(self) -> None:
        self.stop_checks()
        if self._cool_timer is not None:
            self._cool_timer.cancel()
            self._cool_timer = None


class HealthBoard:
    """Every site's upstreams' health; one per engine.

    Compiling a config (off the loop) asks for each upstream's entry with `entry()`; they are
    new ones or the same objects as before, so state survives a reload. `commit()`, on the
    loop once that config is in force, drops the entries it no longer has, hands the new
    settings to the others and starts or restarts their checks."""

    def __init__(self, pool: Pool, publish: Callable[[Event], None], clock: Callable[[], float]) -> None:
        self.pool = pool
        self.publish = publish
        self.clock = clock
        self.entries: dict[tuple[str, str], UpstreamHealth] = {}
        self._pending: dict[tuple[str, str], tuple[UpstreamHealth, Site, Upstream]] = {}

    def begin(self) -> None:
        """A config is about to be compiled."""
        self._pending = {}

    def entry(self, site: Site, upstream: Upstream, route: str) -> UpstreamHealth:
        """The health of `upstream` of `site` (called while compiling; touches no live state)."""
        key = (site.name, upstream.url)
        if key in self._pending:
            return self._pending[key][0]
        found = self.entries.get(key) or UpstreamHealth(site, upstream, route, self)
        self._pending[key] = (found, site, upstream)
        return found

    def commit(self) -> None:
        """On the loop, once the compiled config is in force."""
        pending, self._pending = self._pending, {}
        for key, entry in self.entries.items():
            if key not in pending:
                entry.stop()
        loop = asyncio.get_running_loop()
        for entry, site, upstream in pending.values():
            if entry.site.health != site.health:
                entry.stop_checks()  # (a cool-down under way still ends when it was to)
                entry.passes = entry.fails = 0
                if site.health is None and entry.active_down:
                    entry.active_down = False
                    entry._set("active checks turned off")
            entry.site, entry.upstream = site, upstream
            if site.health is not None and entry.task is None:
                entry.task = loop.create_task(self._checks(entry), name=f"homeproxy-health-{site.name}")
        self.entries = {key: entry for key, (entry, _, _) in pending.items()}

    def snapshot(self) -> tuple[UpstreamStatus, ...]:
        return tuple(e.status() for e in list(self.entries.values()))

    async def close(self) -> None:
        tasks = [e.task for e in self.entries.values() if e.task is not None]
        for entry in self.entries.values():
            entry.stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _checks(self, entry: UpstreamHealth) -> None:
        check = entry.site.health
        assert check is not None
        await asyncio.sleep(random.uniform(0, min(1.0, check.interval)))  # spread the first round
        while True:
            started = time.monotonic()
            try:
                ok, detail = await self.check(entry, check)
            except Exception as e:  # a check must never end the loop
                log.exception("health check of %s failed unexpectedly", entry.url)
                ok, detail = False, f"internal error: {type(e).__name__}"
            latency = time.monotonic() - started
            entry.checked_once(ok, detail, latency)
            recovering = ok and (entry.active_down or entry.cooling)
            await asyncio.sleep(min(RECHECK_AFTER_PASS, check.interval) if recovering else check.interval)

    async def check(self, entry: UpstreamHealth, check: HealthCheck) -> tuple[bool, str]:
        """One active check: (passed, what happened)."""
        base = entry.resolve()
        if base is None:
            return False, "mDNS service not on the network"
        if entry.origin_for is None:
            return False, "not ready"
        origin, base_path = entry.origin_for(base)
        site = entry.site
        host = next((h for h in site.hosts if not h.startswith("*.")), "") if site.preserve_host else ""
        head = (
            f"GET {base_path}{check.path} HTTP/1.1\r\nHost: {host or base.raw_authority}\r\n"
            "User-Agent: homeproxy-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        started = time.monotonic()
        try:
            async with asyncio.timeout(check.timeout):
                conn = await self.pool.acquire(origin, check.timeout, fresh=True)
                try:
                    conn.send(head, None, head_only=False)
                    response = await conn.response(None)
                    body = b""
                    if check.body:
                        async for chunk in response.iter_chunks(None):
                            body += chunk
                            if len(body) >= _BODY_LIMIT or check.body.encode() in body:
                                break
                finally:
                    conn.abort()
        except TimeoutError:
            return False, f"no answer within {check.timeout:g} s"
        except (UpstreamError, OSError) as e:
            return False, str(e) or type(e).__name__
        took = f"in {(time.monotonic() - started) * 1000:.0f} ms"
        low, high = check.status
        if not low <= response.status <= high:
            expected = str(low) if low == high else f"{low}-{high}"
            return False, f"status {response.status} (expected {expected})"
        if check.body and check.body.encode() not in body[:_BODY_LIMIT]:
            return False, f'status {response.status} but the body lacks "{check.body}"'
        return True, f"{response.status} {took}"
