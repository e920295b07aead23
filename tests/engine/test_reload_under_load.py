"""Reloads under load (issue 14), in process: while clients send requests without pause, the
engine takes 100 config changes (sites added, removed, features toggled). No request to a
steady site fails, and the engine's tasks and the process's open files are back to what they
were once the load stops. (`bench/reload_load.py` does the same to `homeproxy serve` with
SIGHUPs and file edits, for longer.)"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import aiohttp

from tests.engine.conftest import Backend, StartProxy, make_config, site
from tests.waiting import wait_for


def config_with(echo: str, dynamic: list[int], toggles: dict[str, bool]) -> Any:
    steady = [
        site("s0", ["s0.lan"], [echo], cache=toggles["cache"]),
        site("s1", ["s1.lan"], [echo], compression=toggles["compression"]),
        site("s2", ["s2.lan"], [echo], headers={"security": toggles["headers"]}),
    ]
    return make_config(*steady, *(site(f"d{d}", [f"d{d}.lan"], [echo]) for d in dynamic))


def engine_tasks(p: Any) -> int:
    loop = p.engine._loop
    return len(asyncio.all_tasks(loop)) if loop is not None else 0


async def test_a_hundred_changes_under_load_fail_no_request_and_leak_nothing(proxy: StartProxy, echo: Backend) -> None:
    rng = random.Random(14)
    toggles = {"cache": False, "compression": False, "headers": False}
    dynamic = [0, 1]
    p = await proxy(config_with(echo.url, dynamic, toggles))
    results: list[tuple[str, int]] = []
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            host = f"s{rng.randrange(3)}.lan" if rng.random() < 0.8 else f"d{rng.choice([*dynamic, 99])}.lan"
            try:
                async with session.get(f"{p.url}/x", headers={"Host": host}) as r:
                    await r.read()
                    results.append((host, r.status))
            except aiohttp.ClientError:
                results.append((host, 0))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
        clients = [asyncio.ensure_future(client(session)) for _ in range(8)]
        await wait_for(lambda: len(results) > 200, description="the load to run")
        tasks_before, fds_before = engine_tasks(p), len(os.listdir("/proc/self/fd"))
        next_dynamic = 2
        for n in range(100):
            if n % 3 == 0:
                dynamic.append(next_dynamic)
                next_dynamic += 1
            elif n % 3 == 1 and dynamic:
                dynamic.pop(rng.randrange(len(dynamic)))
            else:
                key = rng.choice(sorted(toggles))
                toggles[key] = not toggles[key]
            await asyncio.to_thread(p.engine.apply, config_with(echo.url, dynamic, toggles))
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.gather(*clients)
    steady = [status for host, status in results if host.startswith("s")]
    assert len(steady) > 500
    assert steady.count(200) == len(steady), sorted({s for s in steady if s != 200})
    assert all(status in (200, 404) for host, status in results if host.startswith("d"))
    # The clients' connections are closed: the engine's tasks and the process's files settle back.
    await wait_for(lambda: engine_tasks(p) <= tasks_before, timeout=10, description="engine tasks back")
    await wait_for(
        lambda: len(os.listdir("/proc/self/fd")) <= fds_before + 2, timeout=10, description="open files back"
    )
