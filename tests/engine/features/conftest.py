"""Fixtures for the per-site feature tests (the engine's fixtures in tests/engine/conftest.py apply too).

- `fake_clock` is a wall clock that only moves when a test moves it.
- `feature_proxy(config, clock=..., data_dir=...)` starts a real `Engine` with an injected
  clock and data dir (default: `tmp_path / "data"`), and stops it after the test.
- `client_at("127.0.0.2")` is a client whose connections come from another loopback
  address, the only way to be another client IP on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from homeproxy.config import Config
from homeproxy.engine import Engine, EventBus
from tests.engine.conftest import Proxy


@dataclass
class FakeClock:
    """Wall-clock seconds that move only when `advance()` is called."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


StartFeatureProxy = Callable[..., Awaitable[Proxy]]
"""The type of the `feature_proxy` fixture: `(config, *, clock=None, data_dir=None) -> Proxy`."""


@pytest.fixture
async def feature_proxy(gate: asyncio.Event, tmp_path: Path) -> AsyncIterator[StartFeatureProxy]:
    """Factory: a real `Engine` with an injected clock and data dir; stopped after the test."""
    engines: list[Engine] = []

    async def start(config: Config, *, clock: Callable[[], float] | None = None, data_dir: Path | None = None) -> Proxy:
        bus = EventBus()
        engine = Engine(config, bus, clock=clock or time.time, data_dir=data_dir or tmp_path / "data")
        engines.append(engine)
        await asyncio.to_thread(engine.start)
        assert engine.listen_errors == ()
        return Proxy(engine, bus)

    yield start
    gate.set()
    for engine in engines:
        await asyncio.to_thread(engine.stop)
        assert not engine.running


@asynccontextmanager
async def client_at(address: str, **options: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections leave from `address` (any 127.x.y.z on Linux loopback)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60), **options
    ) as session:
        yield session
