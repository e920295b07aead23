"""homeproxy's HTTP/1.1 server: `HttpServer`, what every listener's connections share.

Each client connection is a `ClientConnection` (`client.py`), an `asyncio.Protocol` over
httptools (llhttp), plain or TLS; what it refuses, and the limits, are in `limits.py`.
`HttpServer` holds the engine's handler (one task per request), the `[server]` settings'
limits (read from the current config each time, so a reload applies to the next request),
the open connections, counted in all and per client address at accept (`admit()`; over a
cap a connection is closed at once), a sweep once a second that times out slow heads, slow
bodies and idle keep-alive connections and, at stop, the drain: idle connections close at
once, requests in flight get the drain timeout, the rest are cut and their handlers cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from homeproxy.config.model import ServerSettings
from homeproxy.engine.h1.limits import SWEEP_EVERY
from homeproxy.engine.hop import Network, in_networks, ip_key, trusted_networks
from homeproxy.engine.request import Request

if TYPE_CHECKING:
    from homeproxy.engine.express import ExpressLane
    from homeproxy.engine.h1.client import ClientConnection

Handler = Callable[[Request], Awaitable[None]]


class Cuttable(Protocol):
    def cut(self) -> None:
        """Stop waiting: abort the upstream connection, publish what is known, count it out."""

    def check(self, now: float) -> None:
        """Once a second: act on a timeout that has run out."""


ErrorHook = Callable[[str, int, str], None]
"""`(peer, status, reason)`: a request refused before it could be handled."""

log = logging.getLogger(__name__)

_DEFAULTS = ServerSettings()
REFUSAL_LOG_EVERY = 60.0
"""Seconds between two log lines about connections refused over a cap (a flood logs once)."""


class HttpServer:
    """What every listener's connections share: the handler, the limits' hooks and the set of
    open connections (for the idle sweep and for draining at stop)."""

    def __init__(
        self, handler: Handler, on_error: ErrorHook, settings: Callable[[], ServerSettings] = lambda: _DEFAULTS
    ) -> None:
        self.handler = handler
        self.on_error = on_error
        self.settings = settings
        """The `[server]` settings in force now (the engine's current config)."""
        self.connections: set[ClientConnection] = set()
        self.per_ip: dict[str, int] = {}
        """Open connections per client address (`hop.ip_key`); bounded: each key holds one at least."""
        self.refused_connections = 0
        """Connections closed at accept because a cap was reached."""
        self._refusals_logged = 0
        self._last_refusal_log = -REFUSAL_LOG_EVERY
        self._trusted: tuple[tuple[str, ...], tuple[Network, ...]] = ((), ())
        self.tasks: set[asyncio.Task[None]] = set()
        """The handlers running now, one per request."""
        self.express: ExpressLane | None = None
        """The lane for the common request (`engine/express.py`); None: every request in a task."""
        self.express_calls = 0
        """Requests on the express lane now (answered from callbacks, not in `tasks`)."""
        self.waiting: set[Cuttable] = set()
        """The express lane's requests waiting on an upstream (cut at stop, as tasks are cancelled)."""
        self.closing = False
        self._idle: asyncio.Future[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def protocol(self, secure: bool) -> Callable[[], ClientConnection]:
        """The protocol factory for a listener (`secure`: a TLS one)."""
        from homeproxy.engine.h1.client import ClientConnection

        return lambda: ClientConnection(self, secure)

    def admit(self, conn: ClientConnection) -> bool:
        """Count a new connection in, or say it must close: the server is stopping, or it is over
        `max_connections` in all or `max_connections_per_ip` for its address."""
        if self.closing:
            return False
        limits = self.settings()
        key = ip_key(conn.remote)
        count = self.per_ip.get(key, 0)
        if limits.max_connections and len(self.connections) >= limits.max_connections:
            self._refused(conn.remote, f"{len(self.connections)} open in all (max_connections)")
            return False
        per_ip = limits.max_connections_per_ip
        if per_ip and count >= per_ip and not self._is_trusted(conn, limits):
            self._refused(conn.remote, f"{count} open from {key} (max_connections_per_ip)")
            return False
        self.per_ip[key] = count + 1
        conn.ip_key = key
        self.connections.add(conn)
        return True

    def release(self, conn: ClientConnection) -> None:
        """A connection closed: it no longer counts."""
        self.connections.discard(conn)
        key, conn.ip_key = conn.ip_key, ""
        if key:
            left = self.per_ip.get(key, 1) - 1
            if left > 0:
                self.per_ip[key] = left
            else:
                self.per_ip.pop(key, None)

    def _is_trusted(self, conn: ClientConnection, limits: ServerSettings) -> bool:
        if not limits.trusted_proxies:
            return False
        if self._trusted[0] != limits.trusted_proxies:
            self._trusted = (limits.trusted_proxies, trusted_networks(limits))
        return in_networks(conn.remote, self._trusted[1])

    def _refused(self, peer: str, why: str) -> None:
        self.refused_connections += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_refusal_log >= REFUSAL_LOG_EVERY:
            since = self.refused_connections - self._refusals_logged
            log.warning("closed a new connection from %s: %s (%d refused since the last report)", peer, why, since)
            self._last_refusal_log, self._refusals_logged = now, self.refused_connections

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="homeproxy-client-sweep")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = loop.time()
            limits = self.settings()
            for conn in list(self.connections):
                conn.check_timeouts(now, limits)
            for call in list(self.waiting):
                call.check(now)

    @property
    def active(self) -> int:
        """Requests being handled now."""
        return len(self.tasks) + self.express_calls

    def express_began(self) -> None:
        self.express_calls += 1

    def express_ended(self) -> None:
        self.express_calls -= 1
        if self._idle is not None:  # stopping
            self._check_idle()

    def run(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self.active and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections, let requests in flight finish (up to `timeout`), cut the rest."""
        self.closing = True
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.active:
            self._idle = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._idle), timeout)
        for conn in list(self.connections):
            conn.abort()
        for task in list(self.tasks):  # still waiting on an upstream: cancelled
            task.cancel()
        for call in list(self.waiting):  # the same, on the express lane
            call.cut()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
