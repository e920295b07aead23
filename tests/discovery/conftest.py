"""Fixtures for discovery tests: real zeroconf, on 127.0.0.1 only (the network rule).

- `peer` is a second `AsyncZeroconf` that registers services the code under test finds:
  `register`, `update`, `unregister`, and `announce_raw`/`goodbye_raw` for names that
  zeroconf's own checks refuse (control characters) but real devices send anyway.
- `unique_type()` / `unique_name()`: other test processes on this machine share loopback
  multicast, so each test uses its own service type or instance names.
- `http_backend(body)`: a real aiohttp server on 127.0.0.1:0 answering `body`.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

LOOPBACK = ["127.0.0.1"]


def unique_type() -> str:
    """A service type no other test (or process) uses: `_hpt-1a2b3c4d._tcp.local.`."""
    return f"_hpt-{secrets.token_hex(4)}._tcp.local."


def unique_name(prefix: str = "svc") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


class Peer:
    """Another device on the (loopback) LAN."""

    def __init__(self, aiozc: AsyncZeroconf) -> None:
        self.aiozc = aiozc
        self._broadcasts: list[Awaitable[Any]] = []

    @staticmethod
    def info(
        instance: str,
        type_: str = "_http._tcp.local.",
        *,
        port: int = 8080,
        properties: Mapping[bytes, bytes | None] | Mapping[str, str | None] | bytes | None = None,
        addresses: tuple[str, ...] = ("127.0.0.1",),
        server: str | None = None,
    ) -> ServiceInfo:
        """A `ServiceInfo`; any instance name (the name setter skips zeroconf's name check)."""
        info = ServiceInfo(
            type_,
            f"placeholder.{type_}",
            port=port,
            properties=dict(properties) if isinstance(properties, Mapping) else (properties or {}),
            addresses=[socket.inet_aton(a) for a in addresses],
            server=server or f"{secrets.token_hex(4)}.local.",
        )
        info.name = f"{instance}.{type_}"
        return info

    async def register(self, info: ServiceInfo) -> ServiceInfo:
        """Register as a cooperating responder (no 1.5 s probe: the names are unique per test);
        returns after the first announcement, the rest follow in the background."""
        self._broadcasts.append(await self.aiozc.async_register_service(info, cooperating_responders=True))
        return info

    async def update(self, info: ServiceInfo) -> None:
        self._broadcasts.append(await self.aiozc.async_update_service(info))

    async def unregister(self, info: ServiceInfo) -> None:
        """Goodbye packets; waits for them (~0.25 s)."""
        await (await self.aiozc.async_unregister_service(info))

    def announce_raw(self, info: ServiceInfo) -> None:
        """Answer for and announce `info` without zeroconf's name checks (as a hostile or odd device)."""
        zc = self.aiozc.zeroconf
        zc.registry.async_add(info)
        zc.async_send(zc.generate_service_broadcast(info, None))

    def goodbye_raw(self, info: ServiceInfo) -> None:
        zc = self.aiozc.zeroconf
        zc.registry.async_remove(info)
        zc.async_send(zc.generate_service_broadcast(info, 0))

    async def close(self) -> None:
        for b in self._broadcasts:
            with contextlib.suppress(Exception):
                await b
        await self.aiozc.async_close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = Peer(AsyncZeroconf(interfaces=LOOPBACK))
    yield p
    await p.close()


@pytest.fixture
async def http_backend() -> AsyncIterator[Callable[[str], Awaitable[int]]]:
    """Factory: a real aiohttp server on 127.0.0.1:0 answering every request with `body`; returns its port."""
    runners: list[web.AppRunner] = []

    async def start(body: str) -> int:
        async def handler(_request: web.Request) -> web.Response:
            return web.Response(text=body)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(site.port)

    yield start
    for r in runners:
        await r.cleanup()
