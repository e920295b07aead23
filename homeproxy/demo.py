"""`homeproxy demo`: live traffic in one command, on loopback only.

`Demo` starts a few sample backends (aiohttp apps on 127.0.0.1, ephemeral
ports) and writes a config for them into a temporary directory: a
Home-Assistant-like API with a WebSocket, a Plex-like media server with a slow
transcode endpoint, a Nextcloud-like site with the cache and compression on,
and a Grafana-like site behind Basic auth (user `demo`, password `demo`). It
starts a `Runtime` on that config (listening on 127.0.0.1 only) and a gentle
traffic generator that talks to the proxy on 127.0.0.1: a few requests a second,
random-ish paths, now and then a slow one, a 404, a 500, a WebSocket or a wrong
password, so every screen has something to show. The generator pretends to be
a few LAN clients through X-Forwarded-For, which the demo config trusts from
127.0.0.1 only.

The backends and the generator share one asyncio loop in one background
thread; `stop()` ends them, stops the runtime and removes the directory.
`DemoApp` is the TUI around a demo (the CLI's `homeproxy demo`); the demo
itself runs without it (the tests do).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from rich.text import Text

from homeproxy.passwords import hash_password
from homeproxy.runtime import Runtime
from homeproxy.tui.app import HomeproxyApp

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The Basic auth user of the demo's "grafana" site, and its password.
USER, PASSWORD = "demo", "demo"
#: Requests per second that the traffic generator sends by default.
DEFAULT_RATE = 3.0
#: Requests of the generator in flight at once, at most (slow endpoints must not pile up).
MAX_IN_FLIGHT = 8
#: The LAN clients the generator pretends to be (X-Forwarded-For); the last one mistypes passwords.
CLIENTS = ("192.168.1.23", "192.168.1.42", "192.168.1.57", "192.168.1.66")

SITES = ("homeassistant", "plex", "nextcloud", "grafana")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- the sample backends ---------------------------------------------------------------


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json", headers=headers)


def _page(title: str, body: str) -> str:
    # Repetitive on purpose: it compresses well, as real pages do.
    rows = "\n".join(
        f"    <li class='file'>Document {i}.odt <span class='size'>{i * 37} KiB</span></li>" for i in range(40)
    )
    return (
        f"<!doctype html>\n<html><head><title>{title}</title>"
        "<link rel='stylesheet' href='/core/css/server.css'></head>\n"
        f"<body><h1>{title}</h1><p>{body}</p>\n  <ul>\n{rows}\n  </ul>\n</body></html>\n"
    )


def homeassistant_app(rng: random.Random) -> web.Application:
    """A Home-Assistant-like JSON API with a WebSocket at /api/websocket."""
    entities = {
        "sensor.living_room_temperature": ("21.5", "°C"),
        "sensor.outdoor_humidity": ("64", "%"),
        "light.kitchen": ("on", ""),
        "switch.coffee_maker": ("off", ""),
        "binary_sensor.front_door": ("off", ""),
    }

    def state(entity: str) -> dict[str, Any]:
        value, unit = entities[entity]
        if entity.startswith("sensor."):
            value = f"{float(value) + rng.uniform(-0.5, 0.5):.1f}"
        return {"entity_id": entity, "state": value, "attributes": {"unit_of_measurement": unit}}

    async def api(_request: web.Request) -> web.Response:
        return _json({"message": "API running."})

    async def states(_request: web.Request) -> web.Response:
        return _json([state(e) for e in entities])

    async def one_state(request: web.Request) -> web.Response:
        entity = request.match_info["entity"]
        if entity not in entities:
            return _json({"message": "Entity not found."}, status=404)
        return _json(state(entity))

    async def service(request: web.Request) -> web.Response:
        await request.read()
        return _json([state("light.kitchen")])

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "auth_required", "ha_version": "demo"})
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_json({"type": "result", "success": True, "echo": msg.data[:200]})
        return ws

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=_page("Home Assistant", "Your home, demoed."), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/api/", api)
    app.router.add_get("/api/states", states)
    app.router.add_get("/api/states/{entity}", one_state)
    app.router.add_post("/api/services/{domain}/{service}", service)
    app.router.add_get("/api/websocket", websocket)
    return app


def plex_app(rng: random.Random) -> web.Application:
    """A Plex-like media server: JSON library listings, a media part, a slow transcode start."""
    sections = [{"key": i, "title": t} for i, t in enumerate(("Movies", "TV Shows", "Music"), 1)]

    async def identity(_request: web.Request) -> web.Response:
        return _json({"MediaContainer": {"machineIdentifier": "demo", "version": "1.40.0"}})

    async def library(_request: web.Request) -> web.Response:
        return _json({"MediaContainer": {"Directory": sections}})

    async def metadata(request: web.Request) -> web.Response:
        item = int(request.match_info["id"])
        if item > 900:
            return _json({"error": "not found"}, status=404)
        return _json({"MediaContainer": {"Metadata": [{"ratingKey": item, "title": f"Episode {item}"}]}})

    async def part(_request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await resp.prepare(_request)
        for _ in range(8):
            await resp.write(rng.randbytes(8 * 1024))
        await resp.write_eof()
        return resp

    async def transcode(_request: web.Request) -> web.Response:
        # The slow endpoint: the dashboard's p95 and the log's durations have something to show.
        await asyncio.sleep(rng.uniform(0.4, 1.6))
        return _json({"MediaContainer": {"size": 1}})

    app = web.Application()
    app.router.add_get("/identity", identity)
    app.router.add_get("/library/sections", library)
    app.router.add_get("/library/metadata/{id:\\d+}", metadata)
    app.router.add_get("/library/parts/{id:\\d+}/file.mp4", part)
    app.router.add_get("/video/:/transcode/universal/start", transcode)
    return app


def nextcloud_app(rng: random.Random) -> web.Application:
    """A Nextcloud-like site: cacheable pages and CSS (with validators), JSON status, no-store API."""
    page = _page("Nextcloud", "Files, demoed.")
    css = "\n".join(f".file-{i} {{ color: #333; padding: {i % 8}px; }}" for i in range(200)) + "\n"

    def cacheable(text: str, content_type: str, max_age: int, request: web.Request) -> web.Response:
        etag = f'"{abs(hash(text)) % 10**12:x}"'
        headers = {"Cache-Control": f"public, max-age={max_age}", "ETag": etag}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(text=text, content_type=content_type, headers=headers)

    async def index(request: web.Request) -> web.Response:
        return cacheable(page, "text/html", 30, request)

    async def stylesheet(request: web.Request) -> web.Response:
        return cacheable(css, "text/css", 300, request)

    async def status(_request: web.Request) -> web.Response:
        return _json({"installed": True, "maintenance": False, "version": "29.0.0"})

    async def notifications(_request: web.Request) -> web.Response:
        if rng.random() < 0.08:
            return _json({"ocs": {"meta": {"status": "failure"}}}, status=500)
        return _json({"ocs": {"data": []}}, headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/index.php", index)
    app.router.add_get("/core/css/server.css", stylesheet)
    app.router.add_get("/status.php", status)
    app.router.add_get("/ocs/v2.php/apps/notifications/api/v2/notifications", notifications)
    return app


def grafana_app(rng: random.Random) -> web.Application:
    """A Grafana-like API: health, search, dashboards, and a query that sometimes fails."""

    async def health(_request: web.Request) -> web.Response:
        return _json({"database": "ok", "version": "11.0.0"})

    async def search(_request: web.Request) -> web.Response:
        return _json([{"uid": "home", "title": "Home"}, {"uid": "power", "title": "Power use"}])

    async def dashboard(request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if uid not in ("home", "power"):
            return _json({"message": "Dashboard not found"}, status=404)
        return _json({"dashboard": {"uid": uid, "panels": [{"id": i} for i in range(6)]}})

    async def query(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(rng.uniform(0.01, 0.15))
        if rng.random() < 0.1:
            return _json({"message": "datasource timed out"}, status=500)
        points = [[rng.uniform(100, 400), 1_700_000_000_000 + i * 60_000] for i in range(30)]
        return _json({"results": {"A": {"frames": [{"data": {"values": points}}]}}})

    app = web.Application()
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/search", search)
    app.router.add_get("/api/dashboards/uid/{uid}", dashboard)
    app.router.add_post("/api/ds/query", query)
    return app


BACKENDS: dict[str, Callable[[random.Random], web.Application]] = {
    "homeassistant": homeassistant_app,
    "plex": plex_app,
    "nextcloud": nextcloud_app,
    "grafana": grafana_app,
}


# --- the config ------------------------------------------------------------------------


def host_of(site: str) -> str:
    """The demo's host name for `site`: `*.localhost` names reach loopback in browsers."""
    return f"{site}.localhost"


def demo_config(proxy_port: int, backend_ports: dict[str, int], password_hash: str) -> str:
    """The demo's config file: 127.0.0.1 only, one site per backend."""
    ha, plex, cloud, grafana = (backend_ports[s] for s in SITES)
    return f"""# homeproxy demo: a temporary config, removed when the demo ends.
# Everything listens on 127.0.0.1 only. Try it in a browser: *.localhost names reach this machine.

[server]
listen = ["127.0.0.1"]
http_port = {proxy_port}
https_port = 0
# The demo's traffic generator pretends to be several LAN clients (X-Forwarded-For);
# that is believed only from this machine.
trusted_proxies = ["127.0.0.1/32"]
drain_timeout = "2s"

[logging]
# In the demo's temporary directory.
access_log = true
max_bytes = "1MiB"
keep_files = 1

[[sites]]
name = "homeassistant"
hosts = ["{host_of("homeassistant")}", "ha.localhost"]
upstreams = ["http://127.0.0.1:{ha}"]
websockets = true

[[sites]]
name = "plex"
hosts = ["{host_of("plex")}"]
upstreams = ["http://127.0.0.1:{plex}"]
read_timeout = "30s"

[[sites]]
name = "nextcloud"
hosts = ["{host_of("nextcloud")}", "cloud.localhost"]
upstreams = ["http://127.0.0.1:{cloud}"]
cache = true
compression = true

# Basic auth: user "{USER}", password "{PASSWORD}".
[[sites]]
name = "grafana"
hosts = ["{host_of("grafana")}"]
upstreams = ["http://127.0.0.1:{grafana}"]
auth = {{ users = {{ {USER} = "{password_hash}" }} }}
"""


# --- the traffic -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One request the generator may send."""

    site: str
    method: str
    path: str
    weight: float = 1.0


CALLS = (
    Call("homeassistant", "GET", "/api/states", 3),
    Call("homeassistant", "GET", "/api/states/sensor.living_room_temperature", 3),
    Call("homeassistant", "GET", "/api/states/sensor.kitchen_window", 0.3),  # 404
    Call("homeassistant", "POST", "/api/services/light/turn_on", 1),
    Call("homeassistant", "GET", "/api/", 1),
    Call("homeassistant", "GET", "/favicon.ico", 0.3),  # 404
    Call("plex", "GET", "/identity", 1),
    Call("plex", "GET", "/library/sections", 2),
    Call("plex", "GET", "/library/metadata/{n}", 2),
    Call("plex", "GET", "/library/parts/{n}/file.mp4", 1),
    Call("plex", "GET", "/video/:/transcode/universal/start", 0.6),  # slow
    Call("nextcloud", "GET", "/", 2),
    Call("nextcloud", "GET", "/core/css/server.css", 2),
    Call("nextcloud", "GET", "/status.php", 1),
    Call("nextcloud", "GET", "/ocs/v2.php/apps/notifications/api/v2/notifications", 1.5),
    Call("nextcloud", "GET", "/remote.php/dav/files/demo/missing.odt", 0.3),  # 404
    Call("grafana", "GET", "/api/health", 1),
    Call("grafana", "GET", "/api/search", 1),
    Call("grafana", "GET", "/api/dashboards/uid/home", 1),
    Call("grafana", "POST", "/api/ds/query", 2.5),
    Call("printer", "GET", "/", 0.2),  # no such site: the proxy's own 404
)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Traffic:
    """The generator: requests at about `rate` per second, against the proxy on 127.0.0.1."""

    def __init__(self, runtime: Runtime, rate: float, rng: random.Random) -> None:
        self.runtime = runtime
        self.rate = rate
        self.rng = rng
        self.sent = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _port(self) -> int | None:
        """The proxy's port right now (it follows a port changed in Settings)."""
        engine = self.runtime.engine
        if engine is None:
            return None
        return next((port for _host, port in engine.addresses), None)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        # A fresh connector each run; no proxy from the environment, no cookie jar.
        async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as http:
            try:
                while True:
                    await asyncio.sleep(self.rng.expovariate(self.rate))
                    if len(self._tasks) >= MAX_IN_FLIGHT:
                        continue
                    task = asyncio.create_task(self._one(http), name="homeproxy-demo-request")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _one(self, http: aiohttp.ClientSession) -> None:
        port = self._port()
        if port is None:
            return
        call = self.rng.choices(CALLS, weights=[c.weight for c in CALLS])[0]
        client = self.rng.choice(CLIENTS)
        path = call.path.replace("{n}", str(self.rng.randint(1, 1000)))
        headers = {"Host": host_of(call.site), "X-Forwarded-For": client, "User-Agent": "homeproxy-demo"}
        if call.site == "grafana":
            # The last client mistypes its password; everyone else logs in (now and then not at all).
            if client == CLIENTS[-1]:
                headers["Authorization"] = _basic(USER, "hunter2")
            elif self.rng.random() > 0.05:
                headers["Authorization"] = _basic(USER, PASSWORD)
        url = f"http://127.0.0.1:{port}{path}"
        self.sent += 1
        try:
            if call.site == "homeassistant" and self.rng.random() < 0.05:
                await self._websocket(http, port, headers)
                return
            body = json.dumps({"queries": [{"refId": "A"}]}) if call.method == "POST" else None
            async with http.request(call.method, url, headers=headers, data=body) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            log.debug("demo request %s %s failed: %s", call.method, url, e)

    async def _websocket(self, http: aiohttp.ClientSession, port: int, headers: dict[str, str]) -> None:
        url = f"http://127.0.0.1:{port}/api/websocket"
        async with http.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
            await ws.receive(timeout=5)
            for _ in range(self.rng.randint(1, 4)):
                await ws.send_json({"type": "ping"})
                await ws.receive(timeout=5)
                await asyncio.sleep(self.rng.uniform(0.1, 0.5))


# --- the demo --------------------------------------------------------------------------


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


# --- the TUI around it -----------------------------------------------------------------


def welcome(demo: Demo) -> Text:
    """What the demo says first (printed, and in the TUI's first toast)."""
    text = Text.assemble(("homeproxy demo", "bold"), f": the proxy listens on {demo.proxy_url} (loopback only).\n")
    for site, url in demo.site_urls().items():
        text.append(f"  {site:<14} {url}")
        if site == "grafana":
            text.append(f"  (user {USER}, password {PASSWORD})", style="bold")
        text.append("\n")
    text.append("Sample backends and a traffic generator run until you quit; then everything is removed.")
    return text


class DemoApp(HomeproxyApp):
    """The TUI around a running `Demo`, with a welcome toast that has the demo password."""

    TITLE = "homeproxy demo"
    # Textual finds CSS_PATH beside the module of the class that uses it: point at the app's own.
    CSS_PATH = str(Path(inspect.getfile(HomeproxyApp)).with_name("app.tcss"))

    def __init__(self, demo: Demo) -> None:
        if demo.runtime is None:
            raise RuntimeError("start the demo first")
        super().__init__(demo.runtime)
        self.demo = demo

    def on_mount(self) -> None:
        # HomeproxyApp's own on_mount runs too (Textual calls the handler of every class).
        self.notify(welcome(self.demo).markup, title="Welcome to the demo", timeout=30)


def run_demo(rate: float = DEFAULT_RATE) -> int:
    """`homeproxy demo`: start the demo, open the TUI, stop and clean up on quit."""
    with Demo(rate=rate) as demo:
        assert demo.directory is not None
        # The screen belongs to the TUI: the process log goes to the demo's directory.
        handler = logging.FileHandler(demo.directory / "homeproxy.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            print(welcome(demo).plain)
            DemoApp(demo).run()
        finally:
            root.removeHandler(handler)
            handler.close()
    print("homeproxy demo: stopped, and its temporary files are removed.")
    return 0
