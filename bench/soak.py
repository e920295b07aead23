#!/usr/bin/env python3
"""Soak: mixed traffic for a long time, with reloads; RSS and open fds must stay flat.

    .venv/bin/python bench/soak.py                    # 30 minutes, Markdown on stdout
    .venv/bin/python bench/soak.py --minutes 3        # a quick look

`homeproxy serve` fronts one aiohttp backend (its own process) through four sites: `cache`
(cache on), `gzip` (compression on), `plain`, and `ws` (WebSockets). The load, all on
127.0.0.1 and kept moderate (the machine is shared):

- 8 clients of small GETs spread over the sites (paths vary, so the cache fills and evicts);
- 1 client downloading 5 MB bodies and 1 uploading 2 MB bodies;
- 4 WebSocket sessions at a time, each echoing 200 messages, then closing;
- 2 server-sent-event streams at a time, each read for 10 s, then dropped by the client;
- every 30 s the config file is rewritten (cache size and compression toggled) and every
  90 s homeproxy gets a SIGHUP.

Every 10 s the RSS, open fds and threads of homeproxy are sampled. The figures: at start,
after warm-up (`--warm` minutes), and at the end; failed requests by kind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path

import aiohttp
from procs import cleanup, exit_on, free_port, log, spawn, stop, temp_dir, wait_ready

ROOT = Path(__file__).resolve().parent.parent
BACKEND = """
import asyncio, sys
from aiohttp import web, WSMsgType
BIG = b"x" * (5 * 1024 * 1024)
async def small(request):
    return web.Response(text="hello " * 100, content_type="text/html", headers={"Cache-Control": "max-age=20"})
async def big(request):
    return web.Response(body=BIG, content_type="application/octet-stream")
async def upload(request):
    n = 0
    async for chunk in request.content.iter_chunked(65536):
        n += len(chunk)
    return web.Response(text=str(n))
async def sse(request):
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        for i in range(10_000):
            await resp.write(f"data: {i}\\n\\n".encode())
            await asyncio.sleep(0.2)
    except ConnectionError:
        pass
    return resp
async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str(msg.data)
    return sock
app = web.Application(client_max_size=10 * 1024 * 1024)
app.router.add_get("/big", big)
app.router.add_post("/upload", upload)
app.router.add_get("/sse", sse)
app.router.add_get("/ws", ws)
app.router.add_get("/{tail:.*}", small)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def render(port: int, backend: int, flip: bool) -> str:
    up = f'upstreams = ["http://127.0.0.1:{backend}"]'
    return f"""
[server]
listen = ["127.0.0.1"]
http_port = {port}

[logging]
access_log = true
max_bytes = "5MB"
keep_files = 2

[cache]
max_bytes = "{"8MiB" if flip else "16MiB"}"

[[sites]]
name = "cache"
hosts = ["cache.test"]
{up}
cache = true

[[sites]]
name = "gzip"
hosts = ["gzip.test"]
{up}
compression = {str(not flip).lower()}

[[sites]]
name = "plain"
hosts = ["plain.test"]
{up}

[[sites]]
name = "ws"
hosts = ["ws.test"]
{up}
"""


def figures(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, open fds, threads) of `pid`."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])


async def run(args: argparse.Namespace, work: str) -> None:
    port, backend = free_port(), free_port()
    spawn("backend", [sys.executable, "-c", BACKEND, str(backend)])
    config = Path(work) / "homeproxy.toml"
    config.write_text(render(port, backend, False))
    env = {**os.environ, "XDG_STATE_HOME": work, "XDG_DATA_HOME": work}
    hp = spawn(
        "homeproxy",
        [str(ROOT / ".venv/bin/homeproxy"), "serve", "--config", str(config)],
        log_to=Path(work) / "homeproxy.log",
        env=env,
    )
    wait_ready(port, "/", "plain.test", hp, "homeproxy", timeout=20, request_timeout=2)
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + args.minutes * 60
    counts: dict[str, int] = {}
    failures: dict[str, int] = {}
    samples: list[tuple[float, float, int, int]] = []

    def count(kind: str, ok: bool) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        if not ok:
            failures[kind] = failures.get(kind, 0) + 1

    async def small(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            host = random.choice(["cache.test", "gzip.test", "plain.test"])
            path = f"/page/{random.randrange(5000)}"
            try:
                async with session.get(base + path, headers={"Host": host, "Accept-Encoding": "gzip, br"}) as r:
                    await r.read()
                    count("small", r.status == 200)
            except aiohttp.ClientError:
                count("small", False)
            await asyncio.sleep(0.01)

    async def big(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            try:
                async with session.get(base + "/big", headers={"Host": "plain.test"}) as r:
                    n = len(await r.read())
                    count("download 5 MB", r.status == 200 and n == 5 * 1024 * 1024)
            except aiohttp.ClientError:
                count("download 5 MB", False)
            await asyncio.sleep(0.5)

    async def upload(session: aiohttp.ClientSession) -> None:
        body = b"u" * (2 * 1024 * 1024)
        while time.monotonic() < end:
            try:
                async with session.post(base + "/upload", data=body, headers={"Host": "plain.test"}) as r:
                    count("upload 2 MB", r.status == 200 and await r.text() == str(len(body)))
            except aiohttp.ClientError:
                count("upload 2 MB", False)
            await asyncio.sleep(0.5)

    async def websocket(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            try:
                async with session.ws_connect(base + "/ws", headers={"Host": "ws.test"}) as ws:
                    ok = True
                    for i in range(200):
                        await ws.send_str(f"m{i}")
                        ok = ok and (await ws.receive(timeout=10)).data == f"m{i}"
                    count("websocket session", ok)
            except (aiohttp.ClientError, TimeoutError):
                count("websocket session", False)

    async def sse(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            try:
                async with session.get(base + "/sse", headers={"Host": "plain.test"}) as r:
                    events = 0
                    stop_at = time.monotonic() + 10
                    async for line in r.content:
                        events += line.startswith(b"data:")
                        if time.monotonic() > stop_at:
                            break
                    count("SSE stream (10 s)", r.status == 200 and events >= 30)
            except aiohttp.ClientError:
                count("SSE stream (10 s)", False)

    async def chaos() -> None:
        flip = False
        n = 0
        while time.monotonic() < end:
            await asyncio.sleep(30)
            n += 1
            flip = not flip
            config.write_text(render(port, backend, flip))
            if n % 3 == 0:
                os.kill(hp.pid, signal.SIGHUP)
            count("reload", True)

    async def sample() -> None:
        while time.monotonic() < end:
            samples.append((time.monotonic(), *figures(hp.pid)))
            await asyncio.sleep(10)

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        tasks = [small(session) for _ in range(8)] + [big(session), upload(session)]
        tasks += [websocket(session) for _ in range(4)] + [sse(session) for _ in range(2)]
        await asyncio.gather(sample(), chaos(), *tasks)
    await asyncio.sleep(3)
    final = figures(hp.pid)
    stop("homeproxy", hp, grace=10)

    def at(minutes: float) -> tuple[float, float, int, int]:
        return min(samples, key=lambda s: abs(s[0] - started - minutes * 60))

    first, warm = samples[0], at(args.warm)
    peak_rss = max(s[1] for s in samples if s[0] - started >= args.warm * 60)
    print(f"## Soak: {args.minutes:g} minutes of mixed traffic with reloads\n")
    print("| homeproxy | RSS MiB | open fds | threads |")
    print("|---|---:|---:|---:|")
    print(f"| at start | {first[1]:.1f} | {first[2]} | {first[3]} |")
    print(f"| after warm-up ({args.warm:g} min) | {warm[1]:.1f} | {warm[2]} | {warm[3]} |")
    print(f"| at the end (load running) | {samples[-1][1]:.1f} | {samples[-1][2]} | {samples[-1][3]} |")
    print(f"| 3 s after the load stopped | {final[0]:.1f} | {final[1]} | {final[2]} |")
    print(f"\nPeak RSS after warm-up: {peak_rss:.1f} MiB.\n")
    print("| what | done | failed |")
    print("|---|---:|---:|")
    for kind in sorted(counts):
        print(f"| {kind} | {counts[kind]} | {failures.get(kind, 0)} |")
    shown = samples[:: max(1, len(samples) // 20)]
    trace = ", ".join(f"({(s[0] - started) / 60:.1f}, {s[1]:.0f}, {s[2]}, {s[3]})" for s in shown)
    log(f"samples (minute, RSS MiB, fds, threads): {trace}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warm", type=float, default=5.0, help="minutes of warm-up before the baseline")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    args.warm = min(args.warm, args.minutes / 3)
    exit_on(signal.SIGINT, signal.SIGTERM)
    work = temp_dir("homeproxy-soak-", keep=args.keep)
    try:
        asyncio.run(run(args, work))
    finally:
        cleanup(grace=10)


if __name__ == "__main__":
    main()
