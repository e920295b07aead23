"""The demo's lifecycle: `Demo` starts the backends, the config, the runtime and the traffic, and removes them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from homeproxy.demo.backends import BACKENDS
from homeproxy.demo.config import PASSWORD, SITES, demo_config, host_of
from homeproxy.demo.traffic import DEFAULT_RATE, Traffic
from homeproxy.passwords import hash_password
from homeproxy.runtime import Runtime

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Demo:
    """Sample backends, a temporary config for them, a running `Runtime` and the traffic generator.

    `with Demo() as demo:` starts everything and stops and removes everything after.
    """

    def __init__(self, *, rate: float = DEFAULT_RATE, seed: int | None = None) -> None:
        if not rate > 0:
            raise ValueError("the traffic rate must be above 0 requests per second")
        self.rate = rate
        self.rng = random.Random(seed)
        self.directory: Path | None = None
        """The temporary directory with the config, the logs and the config's backups."""
        self.runtime: Runtime | None = None
        self.backend_ports: dict[str, int] = {}
        self.traffic: Traffic | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._generator: asyncio.Task[None] | None = None

    @property
    def config_path(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the demo has not started")
        return self.directory / "config.toml"

    @property
    def proxy_url(self) -> str:
        """Where the proxy answers (the first listener)."""
        if self.runtime is None or self.runtime.engine is None or not self.runtime.engine.addresses:
            raise RuntimeError("the demo's proxy is not running")
        host, port = self.runtime.engine.addresses[0]
        return f"http://{host}:{port}"

    def site_urls(self) -> dict[str, str]:
        """A browser URL for each site (`*.localhost` reaches loopback)."""
        port = self.proxy_url.rsplit(":", 1)[1]
        return {site: f"http://{host_of(site)}:{port}/" for site in SITES}

    def start(self) -> Runtime:
        """Start the backends, write the config, start the runtime and the traffic. Blocking."""
        if self.directory is not None:
            raise RuntimeError("the demo has already started")
        try:
            self.directory = Path(tempfile.mkdtemp(prefix="homeproxy-demo-"))
            self._start_loop()
            self.backend_ports = self._call(self._start_backends())
            self.config_path.write_text(
                demo_config(free_port(), self.backend_ports, hash_password(PASSWORD)), encoding="utf-8"
            )
            self.runtime = Runtime(self.config_path, log_dir=self.directory / "log", data_dir=self.directory / "data")
            self.runtime.start()
            assert self.runtime.engine is not None
            if self.runtime.engine.listen_errors:
                raise RuntimeError("; ".join(self.runtime.engine.listen_errors))
            self.traffic = Traffic(self.runtime, self.rate, self.rng)
            self._generator = self._call(self._start_traffic(self.traffic))
        except BaseException:
            self.stop()
            raise
        return self.runtime

    def stop(self) -> None:
        """Stop the traffic, the runtime and the backends; remove the directory. Safe to call twice."""
        try:
            if self._loop is not None and self._generator is not None:
                with contextlib.suppress(Exception):
                    self._call(self._stop_traffic())
            if self.runtime is not None:
                self.runtime.stop()
                self.runtime = None
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._call(self._stop_backends())
                self._stop_loop()
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def __enter__(self) -> Demo:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- the loop thread -----------------------------------------------------------------

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="homeproxy-demo", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(loop.shutdown_default_executor())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        assert self._loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    # --- on the loop ---------------------------------------------------------------------

    async def _start_backends(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        for name, make in BACKENDS.items():
            runner = web.AppRunner(make(self.rng), access_log=None)
            await runner.setup()
            self._runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            ports[name] = runner.addresses[0][1]
        return ports

    async def _stop_backends(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _start_traffic(self, traffic: Traffic) -> asyncio.Task[None]:
        return asyncio.create_task(traffic.run(), name="homeproxy-demo-traffic")

    async def _stop_traffic(self) -> None:
        task, self._generator = self._generator, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
