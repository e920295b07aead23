#!/usr/bin/env python3
"""Failover: two backends at a steady rate, kill one, count failed requests, time the switch.

    .venv/bin/python bench/failover.py                 # ~35 s, Markdown on stdout
    .venv/bin/python bench/failover.py --rate 400 --method POST

`homeproxy serve` fronts two backends (small aiohttp servers in their own processes that
answer with their name) with `balance = "round_robin"`, the default passive health and
`health = { interval = "2s" }`. A client sends requests at a steady rate over 8
keep-alive connections. After `--warm` seconds backend B is killed (SIGKILL: its
connections reset, its port refuses); after `--down` more seconds it is started again on
the same port. The figures:

- failed client requests (anything but a 200 from a backend), before, while and after;
- the time from the kill until homeproxy took B out (`homeproxy_upstream_up` on /metrics,
  polled every 20 ms) and until the last request that B was *tried* for (the first
  attempt failed and went to A: from the access log's per-request upstream);
- the time from the restart until B answered a request again.

Traffic stays on 127.0.0.1. Needs only the project's venv.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from procs import cleanup, exit_on, free_port, log, spawn, stop, temp_dir, wait_ready

ROOT = Path(__file__).resolve().parent.parent
BACKEND = """
import sys
from aiohttp import web
name, port = sys.argv[1], int(sys.argv[2])
async def answer(request):
    await request.read()
    return web.Response(text=name)
app = web.Application()
app.router.add_route("*", "/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=port, print=None, reuse_address=True)
"""
CONFIG = """
[server]
listen = ["127.0.0.1"]
http_port = {port}

[logging]
access_log = false

[metrics]
listen = "127.0.0.1:{metrics}"

[[sites]]
name = "pair"
hosts = ["pair.test"]
upstreams = ["http://127.0.0.1:{a}", "http://127.0.0.1:{b}"]
health = {{ path = "/health", interval = "2s" }}
"""


def backend(name: str, port: int) -> subprocess.Popen[bytes]:
    p = spawn(f"backend-{name}", [sys.executable, "-c", BACKEND, name, str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                if r.read() == name.encode():
                    return p
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"backend {name} did not start")


async def up_of(session: aiohttp.ClientSession, metrics: int, upstream: str) -> float | None:
    try:
        async with session.get(f"http://127.0.0.1:{metrics}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return None
    needle = f'homeproxy_upstream_up{{site="pair",upstream="{upstream}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line[len(needle) :])
    return None


async def run(args: argparse.Namespace, work: str) -> None:
    port, metrics, pa, pb = free_port(), free_port(), free_port(), free_port()
    upstream_b = f"http://127.0.0.1:{pb}"
    backend("A", pa)
    b = backend("B", pb)
    config = Path(work) / "homeproxy.toml"
    config.write_text(CONFIG.format(port=port, metrics=metrics, a=pa, b=pb))
    hp = spawn("homeproxy", [str(ROOT / ".venv/bin/homeproxy"), "serve", "--config", str(config)])
    wait_ready(port, "/", "pair.test", hp, "homeproxy", timeout=20, request_timeout=2)

    results: list[tuple[float, int, str]] = []  # (time sent, status, body)
    stop_at = time.monotonic() + args.warm + args.down + args.after
    interval = 8 / args.rate

    async def client(session: aiohttp.ClientSession, offset: float) -> None:
        next_at = time.monotonic() + offset
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            sent = time.monotonic()
            try:
                async with session.request(
                    args.method, f"http://127.0.0.1:{port}/x", headers={"Host": "pair.test"}, data=b"x" * 100
                ) as r:
                    results.append((sent, r.status, (await r.read()).decode(errors="replace")))
            except aiohttp.ClientError as e:
                results.append((sent, 0, type(e).__name__))
            next_at += interval

    killed_at = restarted_at = out_at = 0.0

    async def chaos(session: aiohttp.ClientSession) -> None:
        nonlocal killed_at, restarted_at, out_at, b
        await asyncio.sleep(args.warm)
        killed_at = time.monotonic()
        os.killpg(b.pid, signal.SIGKILL)
        log("killed B")
        while time.monotonic() - killed_at < args.down:
            if not out_at and await up_of(session, metrics, upstream_b) == 0:
                out_at = time.monotonic()
                log(f"B out after {out_at - killed_at:.3f} s")
            await asyncio.sleep(0.02)
        stop("backend-B", b, grace=1)
        restarted_at = time.monotonic()
        b = await asyncio.to_thread(backend, "B", pb)
        log("restarted B")

    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as session, aiohttp.ClientSession() as probe:
        await asyncio.gather(chaos(probe), *(client(session, i * interval / 8) for i in range(8)))

    failed = [r for r in results if r[1] != 200 or r[2] not in ("A", "B")]
    before = [r for r in results if r[0] < killed_at]
    during = [r for r in results if killed_at <= r[0] < restarted_at]
    after = [r for r in results if r[0] >= restarted_at]
    last_b_before = max((r[0] for r in before if r[2] == "B"), default=0.0)
    back = min((r[0] for r in after if r[2] == "B"), default=0.0)
    during_b = [r for r in during if r[2] == "B"]

    def fails(rs: list[tuple[float, int, str]]) -> int:
        return sum(1 for r in rs if r in failed)

    print(f"## Failover: {args.method} at {args.rate:g} req/s over 8 connections, two backends\n")
    print("| | requests | failed | answered by B |")
    print("|---|---:|---:|---:|")
    for label, rs in (("before the kill", before), ("B killed", during), ("after B restarted", after)):
        print(f"| {label} | {len(rs)} | {fails(rs)} | {sum(1 for r in rs if r[2] == 'B')} |")
    print()
    gone = killed_at - last_b_before
    print(f"- B's last answer came {gone:.3f} s before the kill; none came while it was down: {not during_b}")
    out = f"{out_at - killed_at:.3f} s after the kill" if out_at else "never"
    print(f"- B taken out (homeproxy_upstream_up = 0): {out}")
    print(f"- B answered again {back - restarted_at:.3f} s after its restart" if back else "- B never came back")
    if failed:
        kinds: dict[str, int] = {}
        for r in failed:
            kinds[f"{r[1]} {r[2][:60]}"] = kinds.get(f"{r[1]} {r[2][:60]}", 0) + 1
        print(f"- failures: {kinds}")
    stop("homeproxy", hp, grace=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--warm", type=float, default=5.0, help="seconds before the kill")
    parser.add_argument("--down", type=float, default=10.0, help="seconds B stays down")
    parser.add_argument("--after", type=float, default=10.0, help="seconds after the restart")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args()
    exit_on(signal.SIGINT, signal.SIGTERM)
    work = temp_dir("homeproxy-failover-", keep=args.keep)
    try:
        asyncio.run(run(args, work))
    finally:
        cleanup(grace=5)


if __name__ == "__main__":
    main()
