"""Tests for the `homeproxy` command, run for real: `python -m homeproxy ...` in a subprocess.

`serve` listens on 127.0.0.1 on a free port in front of a real aiohttp backend
in the test, and is driven with real signals (SIGHUP, SIGTERM). The subprocess
inherits the XDG variables the autouse fixture points into tmp_path, so its
default config and its access log land there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import platformdirs
import pytest
from aiohttp import web

from homeproxy import __version__
from homeproxy.config.store import default_config_text
from tests.conftest import free_port
from tests.waiting import wait_for

#: A ceiling for one step of a subprocess (start-up, a reload, a drain); never a sleep.
STEP = 15.0

GOOD = """\
[server]
listen = ["127.0.0.1"]

[[sites]]
name = "app"
hosts = ["app.test"]
upstreams = ["http://127.0.0.1:9"]

[[sites]]
name = "other"
hosts = ["other.test"]
upstreams = ["http://127.0.0.1:9"]
"""

# Three problems, on lines 2, 6 and 7.
THREE_ERRORS = """\
[server]
http_port = 70000

[[sites]]
name = "app"
hosts = []
upstreams = ["ftp://nas"]
"""


def homeproxy(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command to completion (it inherits the test's XDG environment)."""
    return subprocess.run(
        [sys.executable, "-m", "homeproxy", *args], capture_output=True, text=True, timeout=STEP, check=False
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- --version, --help, check ------------------------------------------------------------


def test_version() -> None:
    result = homeproxy("--version")
    assert result.returncode == 0
    assert result.stdout == f"homeproxy {__version__}\n"


def test_help_names_the_commands_and_the_files() -> None:
    result = homeproxy("--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
    assert "check" in result.stdout
    config_home = Path(os.environ["XDG_CONFIG_HOME"])
    assert str(config_home / "homeproxy" / "config.toml") in result.stdout
    assert str(Path(platformdirs.user_log_dir("homeproxy", appauthor=False)) / "access.log") in result.stdout


def test_subcommand_help() -> None:
    for command in ("serve", "check"):
        result = homeproxy(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "--config" in result.stdout
    assert "SIGHUP" in homeproxy("serve", "--help").stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--config", "{path}"],
        ["--config", "{path}", "check"],
        ["check", "-c", "{path}"],
        ["-c", "{path}", "check"],
    ],
    ids=["after", "before", "short-after", "short-before"],
)
def test_check_a_good_file(tmp_path: Path, argv: list[str]) -> None:
    path = write(tmp_path / "good.toml", GOOD)
    result = homeproxy(*(a.format(path=path) for a in argv))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok, 2 sites\n"
    assert result.stderr == ""


def test_check_prints_every_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", THREE_ERRORS)
    result = homeproxy("check", "--config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 4, result.stderr
    assert lines[0].startswith(f"{path}:2: server.http_port: port 70000 is out of range")
    assert lines[1] == f"{path}:6: sites[0].hosts: a site needs at least one host name"
    assert lines[2].startswith(f"{path}:7: sites[0].upstreams: item 1: expected an http(s) URL such as ")
    assert lines[3] == f"{path}: 3 errors"


def test_check_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "config.toml"
    result = homeproxy("check", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr == f"{path}: cannot read: No such file or directory\n"
    assert not path.exists()
    assert not path.parent.exists()


def test_check_without_config_reads_the_default_path() -> None:
    default = Path(os.environ["XDG_CONFIG_HOME"]) / "homeproxy" / "config.toml"
    result = homeproxy("check")
    assert result.returncode == 1
    assert result.stderr == f"{default}: cannot read: No such file or directory\n"
    write(default, GOOD)
    assert homeproxy("check").stdout == f"{default}: ok, 2 sites\n"


def test_check_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[server]\nhttp_port = 8080  # caf\xe9\n")
    result = homeproxy("check", "--config", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}")


def test_check_a_key_repeated_in_a_table(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.toml", "[server]\nhttp_port = 1\nhttp_port = 2\n")
    result = homeproxy("check", "--config", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}:3: ")


# --- serve -----------------------------------------------------------------------------------


class Server:
    """A `homeproxy serve` subprocess; its stderr (the process log) is collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._readers = [asyncio.create_task(self._read(s)) for s in (proc.stdout, proc.stderr) if s is not None]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode("utf-8", "replace"))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    async def wait_log(self, text: str, *, count: int = 1) -> None:
        """Until `text` has been logged `count` times; fails early (with the log) if the process ends."""
        await wait_for(lambda: self.log.count(text) >= count or self.exited, timeout=STEP, description=f"log {text!r}")
        assert self.log.count(text) >= count, f"{text!r} not logged; exit {self.proc.returncode}:\n{self.log}"

    async def wait_ready(self) -> None:
        await self.wait_log(f"homeproxy {__version__} serving ")

    async def exit_code(self) -> int:
        code = await asyncio.wait_for(self.proc.wait(), STEP)
        await asyncio.gather(*self._readers)
        return code

    async def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await self.exit_code()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start `python -m homeproxy ARGS...`; whatever is still running at the end is killed."""
    started: list[Server] = []

    async def start(*args: str) -> Server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "homeproxy", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        server = Server(proc)
        started.append(server)
        return server

    yield start
    for server in started:
        if not server.exited:
            server.proc.kill()
        await server.exit_code()


class Backend:
    """A real aiohttp app on 127.0.0.1:0 that says who it is and what it saw."""

    def __init__(self) -> None:
        self.slow_started = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/slow", self.slow)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def echo(self, request: web.Request) -> web.Response:
        return web.json_response({"host": request.headers.get("Host"), "path": request.path_qs})

    async def slow(self, request: web.Request) -> web.Response:
        self.slow_started.set()
        await asyncio.sleep(1.0)  # the backend is slow on purpose: the request is in flight for a second
        return web.Response(text="slow and complete")


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP)) as session:
        yield session


def serve_config(port: int, backend_port: int, *, sites: tuple[str, ...] = ("app",), tail: str = "") -> str:
    text = f'[server]\nlisten = ["127.0.0.1"]\nhttp_port = {port}\ndrain_timeout = "5s"\n'
    for name in sites:
        text += (
            f'\n[[sites]]\nname = "{name}"\nhosts = ["{name}.test"]\nupstreams = ["http://127.0.0.1:{backend_port}"]\n'
        )
    return text + tail


async def get(client: aiohttp.ClientSession, port: int, host: str, path: str = "/") -> tuple[int, str]:
    async with client.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}) as response:
        return response.status, await response.text()


def access_log_lines() -> list[dict[str, Any]]:
    path = Path(platformdirs.user_log_dir("homeproxy", appauthor=False)) / "access.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_serve_proxies_to_a_real_backend_and_writes_the_access_log(
    tmp_path: Path, serve: Callable[..., Awaitable[Server]], backend: Backend, client: aiohttp.ClientSession
) -> None:
    port = free_port()
    config = write(tmp_path / "proxy.toml", serve_config(port, backend.port))
    server = await serve("serve", "--config", str(config))
    await server.wait_ready()
    assert f"listening on http://127.0.0.1:{port}" in server.log

    status, body = await get(client, port, "app.test", "/hello?x=1")
    assert status == 200
    assert json.loads(body) == {"host": "app.test", "path": "/hello?x=1"}
    status, _ = await get(client, port, "nobody.test")
    assert status == 404

    # The access log is JSON lines in the log dir of the subprocess' environment.
    log_file = Path(os.environ["XDG_STATE_HOME"]) / "homeproxy" / "log" / "access.log"
    assert Path(platformdirs.user_log_dir("homeproxy", appauthor=False)) / "access.log" == log_file
    await wait_for(lambda: len(access_log_lines()) >= 2, timeout=STEP, description="two access log lines")
    first, second = access_log_lines()[:2]
    assert (first["site"], first["host"], first["method"], first["path"], first["status"]) == (
        "app",
        "app.test",
        "GET",
        "/hello?x=1",
        200,
    )
    assert first["upstream"] == f"http://127.0.0.1:{backend.port}"
    assert first["client"] == "127.0.0.1"
    assert (second["site"], second["host"], second["status"]) == ("", "nobody.test", 404)

    assert await server.terminate() == 0
    assert "stopped" in server.log
    assert config.read_text(encoding="utf-8") == serve_config(port, backend.port)  # serve never rewrites it


async def test_serve_drains_an_in_flight_request_on_sigterm(
    tmp_path: Path, serve: Callable[..., Awaitable[Server]], backend: Backend, client: aiohttp.ClientSession
) -> None:
    port = free_port()
    config = write(tmp_path / "proxy.toml", serve_config(port, backend.port))
    server = await serve("--config", str(config), "serve")  # --config before the subcommand
    await server.wait_ready()

    slow = asyncio.create_task(get(client, port, "app.test", "/slow"))
    await wait_for(backend.slow_started.is_set, timeout=STEP, description="the slow request to reach the backend")
    server.proc.send_signal(signal.SIGTERM)
    await server.wait_log("SIGTERM: draining in-flight requests")
    assert not slow.done()
    assert await asyncio.wait_for(slow, STEP) == (200, "slow and complete")
    assert await server.exit_code() == 0
    assert "stopped" in server.log


async def test_sighup_rereads_the_config(
    tmp_path: Path, serve: Callable[..., Awaitable[Server]], backend: Backend, client: aiohttp.ClientSession
) -> None:
    """An edit the file watcher cannot see (same size, inode and mtime) is applied on SIGHUP.

    First a visible edit (a new comment) proves the watcher has looked at the file;
    then the real edit is written in place and the mtime put back, so only SIGHUP
    can make the new site answer.
    """
    port = free_port()
    with_both = serve_config(port, backend.port, sites=("app", "new"))
    padding = "#" * (len(with_both) - len(serve_config(port, backend.port)) - 1) + "\n"
    before = serve_config(port, backend.port) + padding
    assert len(before) == len(with_both)
    config = write(tmp_path / "proxy.toml", before)
    server = await serve("serve", "--config", str(config))
    await server.wait_ready()
    assert (await get(client, port, "new.test"))[0] == 404

    # A visible edit, applied by the watcher.
    touched = tmp_path / "touched.toml"
    write(touched, "# touched\n" + before)
    os.replace(touched, config)
    await server.wait_log("config applied (file)")

    # The invisible edit: same bytes count, same inode, mtime restored.
    st = config.stat()
    with open(config, "r+b") as f:
        f.write(("# touched\n" + with_both).encode("utf-8"))
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (await get(client, port, "new.test"))[0] == 404

    server.proc.send_signal(signal.SIGHUP)
    await server.wait_log("config applied (file)", count=2)
    assert f"SIGHUP: re-reading {config}" in server.log
    status, body = await get(client, port, "new.test", "/after-hup")
    assert status == 200
    assert json.loads(body) == {"host": "new.test", "path": "/after-hup"}

    # SIGHUP with nothing new says so.
    server.proc.send_signal(signal.SIGHUP)
    await server.wait_log("config unchanged")
    assert await server.terminate() == 0


async def test_serve_writes_a_default_config_when_there_is_none(
    tmp_path: Path, serve: Callable[..., Awaitable[Server]]
) -> None:
    """The default config listens on 0.0.0.0:8080; the test holds that port so serve cannot take it."""
    path = tmp_path / "fresh" / "homeproxy.toml"
    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", 8080))
        holder.listen()
    except OSError:  # someone else holds it: serve cannot take it either
        holder.close()
    try:
        server = await serve("serve", "--config", str(path))
        assert await server.exit_code() == 1
    finally:
        holder.close()
    assert path.read_text(encoding="utf-8") == default_config_text()
    assert f"no config file found: wrote a commented default to {path}" in server.log
    assert "cannot listen on 0.0.0.0:8080: the port is already in use" in server.log


async def test_serve_refuses_an_invalid_config(tmp_path: Path, serve: Callable[..., Awaitable[Server]]) -> None:
    path = write(tmp_path / "bad.toml", THREE_ERRORS)
    server = await serve("serve", "--config", str(path))
    assert await server.exit_code() == 1
    assert f"{path}:2: server.http_port: port 70000 is out of range" in server.log
    assert f"{path}:6: sites[0].hosts: a site needs at least one host name" in server.log
    assert f"{path}:7: sites[0].upstreams: item 1: expected an http(s) URL" in server.log
    assert f"not starting: fix the config (`homeproxy check --config {path}`)" in server.log
    assert path.read_text(encoding="utf-8") == THREE_ERRORS


async def test_serve_on_a_port_in_use(tmp_path: Path, serve: Callable[..., Awaitable[Server]]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = write(tmp_path / "proxy.toml", serve_config(port, 9))
        server = await serve("serve", "--config", str(path))
        assert await server.exit_code() == 1
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use by another program" in server.log
    assert "serving" not in server.log


async def test_serve_on_a_file_that_is_not_utf8(tmp_path: Path, serve: Callable[..., Awaitable[Server]]) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nlisten = ["127.0.0.1"]\nhttp_port = 0  # caf\xe9\n')
    server = await serve("serve", "--config", str(path))
    with contextlib.suppress(AssertionError):
        await server.wait_ready()  # should not get this far; if it does, stop it
    if not server.exited:
        server.proc.send_signal(signal.SIGTERM)
    assert await server.exit_code() == 1
    assert "Traceback" not in server.log
    assert str(path) in server.log
