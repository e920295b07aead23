"""homeproxy's HTTP/1.1 server: `HttpServer`, what every listener's connections share.

Each client connection is a `ClientConnection` (`client.py`), an `asyncio.Protocol` over
httptools (llhttp), plain or TLS; what it refuses, and the limits, are in `limits.py`.
`HttpServer` holds the engine's handler (one task per request), the open connections (a
sweep once a second closes idle keep-alive ones and times out slow heads) and, at stop,
drains: idle connections close at once, requests in flight get the drain timeout, the
rest are cut and their handlers cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from homeproxy.engine.h1.limits import SWEEP_EVERY
from homeproxy.engine.request import Request

if TYPE_CHECKING:
    from homeproxy.engine.h1.client import ClientConnection

Handler = Callable[[Request], Awaitable[None]]
ErrorHook = Callable[[str, int, str], None]
"""`(peer, status, reason)`: a request refused before it could be handled."""


class HttpServer:
    """What every listener's connections share: the handler, the limits' hooks and the set of
    open connections (for the idle sweep and for draining at stop)."""

    def __init__(self, handler: Handler, on_error: ErrorHook) -> None:
        self.handler = handler
        self.on_error = on_error
        self.connections: set[ClientConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        """The handlers running now, one per request."""
        self.closing = False
        self._idle: asyncio.Future[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def protocol(self, secure: bool) -> Callable[[], ClientConnection]:
        """The protocol factory for a listener (`secure`: a TLS one)."""
        from homeproxy.engine.h1.client import ClientConnection

        return lambda: ClientConnection(self, secure)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="homeproxy-client-sweep")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = loop.time()
            for conn in list(self.connections):
                conn.check_timeouts(now)

    @property
    def active(self) -> int:
        """Requests being handled now."""
        return len(self.tasks)

    def run(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.tasks and self._idle is not None and not self._idle.done():
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
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
