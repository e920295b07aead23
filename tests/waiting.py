"""Bounded waits on conditions, instead of sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(predicate: Callable[[], object], *, timeout: float = 10.0, description: str = "condition") -> None:
    """Poll `predicate` on the running loop until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {description}")
        await asyncio.sleep(0.02)


def wait_for_sync(predicate: Callable[[], object], *, timeout: float = 10.0, description: str = "condition") -> None:
    """The same, blocking (for tests without a loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {description}")
        time.sleep(0.02)
