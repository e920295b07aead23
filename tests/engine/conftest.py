"""Fixtures for the engine tests: real aiohttp backends and a real `Engine`, all on loopback.

- `backend(handler)` starts an aiohttp server on 127.0.0.1:0 whose every request goes to `handler`.
- `echo` is a ready backend that answers with a JSON description of what it received.
- `raw_backend(callback)` is a bare asyncio TCP server, for upstreams that misbehave on purpose.
- `proxy(config)` starts an `Engine` on 127.0.0.1:0 and stops it (draining) after the test.
- `make_config(...)`/`site(...)` build a `Config` through the real TOML loader.
- `fetch(session, proxy, path, host=...)` sends one request through the proxy with any Host header.
- `record(proxy)` collects the engine's `RequestCompleted` events; `gate` holds waiting backends until set.
- `raw_request(...)`/`read_response(...)` speak HTTP/1.1 over a plain socket, for what aiohttp's client refuses to send.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import tomlkit
from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from homeproxy.config import Config
from homeproxy.config.load import parse_config
from homeproxy.engine import Engine, EventBus, RequestCompleted, Subscription
from tests.waiting import wait_for

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
RawCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

#: Upper bound for any single network step in these tests (never a sleep: only a ceiling).
STEP_TIMEOUT = 15.0


# --- config -----------------------------------------------------------------------------


def site(name: str, hosts: list[str], upstreams: list[str], **options: Any) -> dict[str, Any]:
    """One `[[sites]]` table."""
    return {"name": name, "hosts": hosts, "upstreams": upstreams, **options}


def make_config(*sites: dict[str, Any], **server: Any) -> Config:
    """A config listening on 127.0.0.1 on a free port, parsed from TOML like a real file."""
    doc = {
        "server": {"listen": ["127.0.0.1"], "http_port": 0, "drain_timeout": "5s", **server},
        "sites": list(sites),
    }
    return parse_config(tomlkit.dumps(doc), "test.toml")


# --- backends ---------------------------------------------------------------------------


@pytest.fixture
def gate() -> Iterator[asyncio.Event]:
    """An event that a test sets to let a waiting backend answer; set at teardown so nothing hangs."""
    event = asyncio.Event()
    yield event
    event.set()


@dataclass
class Backend:
    """A running upstream."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def backend(gate: asyncio.Event) -> AsyncIterator[Callable[[Handler], Awaitable[Backend]]]:
    """Factory: a real aiohttp server on 127.0.0.1:0 that sends every request to `handler`."""
    runners: list[web.ServerRunner] = []

    async def start(handler: Handler) -> Backend:
        runner = web.ServerRunner(web.Server(handler), handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        runners.append(runner)
        tcp = web.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        return Backend(tcp.port)

    yield start
    gate.set()
    for runner in reversed(runners):
        await runner.cleanup()


def echo_handler(name: str = "echo") -> Handler:
    """A handler describing the request as JSON: its own name, method, raw target, header lines, body."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        return web.json_response(
            {
                "name": name,
                "method": request.method,
                "path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_len": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body": body.decode("latin-1") if len(body) <= 4096 else "",
            }
        )

    return handle


@pytest.fixture
async def named_echo(backend: Callable[[Handler], Awaitable[Backend]]) -> Callable[[str], Awaitable[Backend]]:
    """Factory: an echo backend that also reports `name` (to tell upstreams apart)."""

    async def start(name: str) -> Backend:
        return await backend(echo_handler(name))

    return start


@pytest.fixture
async def echo(named_echo: Callable[[str], Awaitable[Backend]]) -> Backend:
    """A backend that answers with a JSON description of what it received."""
    return await named_echo("echo")


@dataclass
class Seen:
    """What `echo` saw, decoded."""

    name: str
    method: str
    path: str
    headers: list[tuple[str, str]]
    body_len: int
    body_sha256: str
    body: str

    @classmethod
    def parse(cls, data: Any) -> Seen:
        return cls(
            data["name"],
            data["method"],
            data["path"],
            [(k, v) for k, v in data["headers"]],
            data["body_len"],
            data["body_sha256"],
            data["body"],
        )

    @classmethod
    def of(cls, text: str | bytes) -> Seen:
        """Parse an echo backend's answer."""
        return cls.parse(json.loads(text))

    def all(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def one(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None


@pytest.fixture
async def raw_backend() -> AsyncIterator[Callable[[RawCallback], Awaitable[Backend]]]:
    """Factory: a bare TCP server on 127.0.0.1:0 running `callback` per connection."""
    servers: list[asyncio.Server] = []

    async def start(callback: RawCallback) -> Backend:
        server = await asyncio.start_server(callback, "127.0.0.1", 0)
        servers.append(server)
        return Backend(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound then released, so it refuses connections)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the engine -------------------------------------------------------------------------


@dataclass
class Proxy:
    """A running engine and how to reach it."""

    engine: Engine
    bus: EventBus

    @property
    def port(self) -> int:
        return self.engine.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def proxy(gate: asyncio.Event) -> AsyncIterator[Callable[[Config], Awaitable[Proxy]]]:
    """Factory: start a real `Engine` with `config` (its thread and loop); stop it after the test."""
    engines: list[Engine] = []

    async def start(config: Config) -> Proxy:
        bus = EventBus()
        engine = Engine(config, bus)
        engines.append(engine)
        await asyncio.to_thread(engine.start)
        assert engine.listen_errors == ()
        assert engine.addresses and engine.addresses[0][1] != 0
        return Proxy(engine, bus)

    yield start
    gate.set()  # let any backend still waiting answer, so the drain is quick
    for engine in engines:
        await asyncio.to_thread(engine.stop)
        assert not engine.running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client; tests set the Host header themselves."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


@dataclass
class Recorder:
    """Collects the `RequestCompleted` events of one bus."""

    sub: Subscription
    events: list[RequestCompleted] = field(default_factory=list)

    def poll(self) -> list[RequestCompleted]:
        self.events.extend(self.sub.drain())
        return self.events

    async def wait(self, count: int) -> list[RequestCompleted]:
        await wait_for(lambda: len(self.poll()) >= count, description=f"{count} RequestCompleted events")
        return self.events


def record(p: Proxy) -> Recorder:
    return Recorder(p.bus.subscribe("test"))


# --- raw HTTP ---------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None


async def read_head(reader: asyncio.StreamReader) -> tuple[int, str, list[tuple[str, str]]]:
    """Read one status line and its header block."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP_TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    assert version.startswith("HTTP/1."), lines[0]
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return int(status), (reason[0] if reason else ""), headers


async def read_response(reader: asyncio.StreamReader, *, head_request: bool = False) -> RawResponse:
    """Read one complete response (Content-Length, chunked, or until EOF)."""
    status, reason, headers = await read_head(reader)
    raw = RawResponse(status, reason, headers, b"")
    if head_request or status in (204, 304) or 100 <= status < 200:
        return raw
    te = (raw.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        body = b""
        while True:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), STEP_TIMEOUT)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                await asyncio.wait_for(reader.readuntil(b"\r\n"), STEP_TIMEOUT)
                break
            body += await asyncio.wait_for(reader.readexactly(size + 2), STEP_TIMEOUT)
            body = body[:-2]
        raw.body = body
    elif (length := raw.get("Content-Length")) is not None:
        raw.body = await asyncio.wait_for(reader.readexactly(int(length)), STEP_TIMEOUT)
    else:
        raw.body = await asyncio.wait_for(reader.read(), STEP_TIMEOUT)
    return raw


async def raw_request(port: int, data: bytes, *, head_request: bool = False) -> RawResponse:
    """Send `data` on a new connection and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader, head_request=head_request)
    finally:
        writer.close()


async def is_refused(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:`port` is refused."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


def connect_refused_sync(port: int) -> bool:
    """The same, blocking (a loopback connect answers at once), for `wait_for` predicates."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Fetched:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def seen(self) -> Seen:
        """What the echo backend saw (the body parsed as its JSON)."""
        assert self.status == 200, (self.status, self.body[:300])
        return Seen.of(self.body)


async def fetch(
    session: aiohttp.ClientSession,
    p: Proxy,
    path: str = "/",
    *,
    host: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: Any = None,
) -> Fetched:
    """One request through the proxy with Host `host`; the path is sent exactly as given."""
    url = URL(p.url + path, encoded=True)
    async with session.request(method, url, headers={"Host": host, **(headers or {})}, data=data) as resp:
        return Fetched(resp.status, resp.headers, await resp.read())


StartProxy = Callable[[Config], Awaitable[Proxy]]
"""The type of the `proxy` fixture."""
StartBackend = Callable[[Handler], Awaitable[Backend]]
"""The type of the `backend` fixture."""
StartRawBackend = Callable[[RawCallback], Awaitable[Backend]]
"""The type of the `raw_backend` fixture."""
NamedEcho = Callable[[str], Awaitable[Backend]]
"""The type of the `named_echo` fixture."""
