"""TUI fixtures: a real Runtime (engine on loopback) and a real backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from homeproxy.discovery.service import DiscoveredService
from homeproxy.runtime import Runtime
from tests.conftest import serving


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    """A real aiohttp backend on 127.0.0.1; yields its port."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from backend {request.path}")

    async with serving(hello) as port:
        yield port


def write_config(path: Path, backend_port: int, *, listen: str = "127.0.0.1", port: int = 0) -> None:
    path.write_text(
        f"""# my homelab
[server]
listen = ["{listen}"]
http_port = {port}

[logging]
access_log = false

# the file server in the closet
[[sites]]
name = "files"
hosts = ["files.home.arpa"]
upstreams = ["http://127.0.0.1:{backend_port}"]
""",
        encoding="utf-8",
    )


@pytest.fixture
async def runtime(tmp_path: Path, backend: int) -> AsyncIterator[Runtime]:
    """A started Runtime whose one site points at `backend`."""
    path = tmp_path / "config.toml"
    write_config(path, backend)
    rt = Runtime(path, log_dir=tmp_path / "log", discovery=False)
    await asyncio.to_thread(rt.start)
    yield rt
    await asyncio.to_thread(rt.stop)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


#: The fixed "now" of every snapshot's clock.
SNAPSHOT_NOW = 1_800_000_000.0


def snapshot_config(listen: str, port: int, sites: str) -> str:
    """A config for a snapshot: a fixed (unusual) loopback address, no access log, then `sites`."""
    return f'[server]\nlisten = ["{listen}"]\nhttp_port = {port}\n\n[logging]\naccess_log = false\n\n{sites}'


@contextlib.contextmanager
def snapshot_runtime_at(path: Path, log_dir: Path, now: float = SNAPSHOT_NOW) -> Iterator[Runtime]:
    """A started Runtime on a fixed clock and no file watching (so screens look the same every run)."""
    rt = Runtime(path, log_dir=log_dir, clock=lambda: now, discovery=False)
    rt.start(watch=False)
    try:
        yield rt
    finally:
        rt.stop()


def make_service(
    instance: str,
    type_: str = "_http._tcp.local.",
    addresses: tuple[str, ...] = ("192.0.2.5",),
    port: int = 80,
    *,
    path: str = "",
    host: str = "device.local.",
    properties: tuple[tuple[str, str | None], ...] = (),
    seen: float = 0.0,
) -> DiscoveredService:
    """A service as discovery would have resolved it (canned, for tests that don't need the network)."""
    return DiscoveredService(
        name=f"{instance}.{type_}",
        instance=instance,
        type=type_,
        host=host,
        addresses=addresses,
        port=port,
        properties=properties,
        path=path,
        seen=seen,
    )
