"""The demo's traffic generator: a few requests a second to the proxy, as a few LAN clients."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from dataclasses import dataclass

import aiohttp

from homeproxy.demo.config import PASSWORD, USER, host_of
from homeproxy.runtime import Runtime

log = logging.getLogger(__name__)

#: Requests per second that the traffic generator sends by default.
DEFAULT_RATE = 3.0
#: Requests of the generator in flight at once, at most (slow endpoints must not pile up).
MAX_IN_FLIGHT = 8
#: The LAN clients the generator pretends to be (X-Forwarded-For); the last one mistypes passwords.
CLIENTS = ("192.168.1.23", "192.168.1.42", "192.168.1.57", "192.168.1.66")


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
