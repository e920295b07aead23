"""The demo's sample backends: aiohttp apps that look like Home Assistant, Plex, Nextcloud and Grafana."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web


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
