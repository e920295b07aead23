#!/usr/bin/env python3
"""Reloads under load: 100 config changes and 20 SIGHUPs while a bounded load runs.

    .venv/bin/python bench/reload_load.py             # ~80 s, Markdown on stdout

`homeproxy serve` fronts 10 steady sites (s0..s9) and some coming and going (d0, d1, ...),
all to one aiohttp backend in its own process. 16 clients send requests without pause:
80% to the steady sites, 20% to the dynamic ones. Meanwhile the config file is rewritten
100 times, 0.6 s apart (homeproxy's watcher applies each): a dynamic site is added, one is
removed, or a steady site's cache, compression, headers or rate limit is toggled; and
20 SIGHUPs are sent in between. The figures:

- requests sent, and failed: a steady site's request that is not a 200 is a failure; a
  dynamic site's 404 is expected when it was removed around the time it was sent;
- changes applied (homeproxy's "config reloaded" log lines) and SIGHUPs taken;
- open file descriptors, threads and RSS of homeproxy after warm-up and at the end (after
  the clients close their connections).

Traffic stays on 127.0.0.1. Needs only the project's venv.
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
import sys
from aiohttp import web
async def answer(request):
    return web.Response(text="ok " * 20, headers={"Cache-Control": "max-age=5"})
app = web.Application()
app.router.add_route("*", "/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""
TOGGLES = ("cache = true", "compression = true", "headers = { security = true }", 'rate_limit = "5000/s"')


def render(port: int, backend: int, steady: dict[int, set[str]], dynamic: list[int]) -> str:
    out = [f'[server]\nlisten = ["127.0.0.1"]\nhttp_port = {port}\n\n[logging]\naccess_log = false\nlevel = "info"\n']
    for i in range(10):
        out.append(f'[[sites]]\nname = "s{i}"\nhosts = ["s{i}.test"]\nupstreams = ["http://127.0.0.1:{backend}"]')
        out.extend(sorted(steady[i]))
        out.append("")
    for d in dynamic:
        out.append(f'[[sites]]\nname = "d{d}"\nhosts = ["d{d}.test"]\nupstreams = ["http://127.0.0.1:{backend}"]\n')
    return "\n".join(out) + "\n"


def proc_figures(pid: int) -> tuple[int, int, int]:
    """(open fds, threads, RSS KiB) of `pid`."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fds, int(fields["Threads"]), int(fields["VmRSS"].split()[0])


async def run(args: argparse.Namespace, work: str) -> None:
    port, backend = free_port(), free_port()
    spawn("backend", [sys.executable, "-c", BACKEND, str(backend)])
    steady: dict[int, set[str]] = {i: set() for i in range(10)}
    dynamic: list[int] = [0, 1, 2]
    next_dynamic = 3
    config = Path(work) / "homeproxy.toml"
    config.write_text(render(port, backend, steady, dynamic))
    logfile = Path(work) / "homeproxy.log"
    hp = spawn("homeproxy", [str(ROOT / ".venv/bin/homeproxy"), "serve", "--config", str(config)], log_to=logfile)
    wait_ready(port, "/", "s0.test", hp, "homeproxy", timeout=20, request_timeout=2)
    live = set(dynamic)
    removed_at: dict[int, float] = {}
    results: list[tuple[str, int, float]] = []
    done = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not done.is_set():
            if random.random() < 0.8:
                host = f"s{random.randrange(10)}.test"
            else:
                host = f"d{random.choice(sorted(live | set(removed_at)) or [0])}.test"
            sent = time.monotonic()
            try:
                async with session.get(f"http://127.0.0.1:{port}/x", headers={"Host": host}) as r:
                    await r.read()
                    results.append((host, r.status, sent))
            except aiohttp.ClientError:
                results.append((host, 0, sent))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        clients = [asyncio.ensure_future(client(session)) for _ in range(16)]
        await asyncio.sleep(3)
        warm = proc_figures(hp.pid)
        hups = 0
        for n in range(args.changes):
            kind = n % 3
            if kind == 0:
                dynamic.append(next_dynamic)
                live.add(next_dynamic)
                next_dynamic += 1
            elif kind == 1 and dynamic:
                gone = dynamic.pop(random.randrange(len(dynamic)))
                live.discard(gone)
                removed_at[gone] = time.monotonic()
            else:
                site = steady[random.randrange(10)]
                toggle = random.choice(TOGGLES)
                site.symmetric_difference_update({toggle})
            config.write_text(render(port, backend, steady, dynamic))
            await asyncio.sleep(args.gap)
            if n % (args.changes // args.hups) == 2 and hups < args.hups:
                os.kill(hp.pid, signal.SIGHUP)
                hups += 1
        await asyncio.sleep(1)
        done.set()
        await asyncio.gather(*clients)
    await asyncio.sleep(2)  # homeproxy closes the clients' connections
    end = proc_figures(hp.pid)
    stop("homeproxy", hp, grace=5)
    text = logfile.read_text(errors="replace")
    applied = text.count("config reloaded")
    taken = text.count("SIGHUP: re-reading")

    steady_results = [r for r in results if r[0].startswith("s")]
    failed = [r for r in steady_results if r[1] != 200]
    dyn = [r for r in results if r[0].startswith("d")]
    dyn_failed = [r for r in dyn if r[1] not in (200, 404)]
    print(f"## Reloads under load: {args.changes} config changes {args.gap:g} s apart, {args.hups} SIGHUPs\n")
    print(f"- requests: {len(results)} ({len(steady_results)} to steady sites, {len(dyn)} to dynamic ones)")
    print(f"- failed requests to steady sites: **{len(failed)}**; dynamic sites: {len(dyn_failed)} neither 200 nor 404")
    print(f"- dynamic sites' 404s (sent around their removal): {sum(1 for r in dyn if r[1] == 404)}")
    print(f"- config changes applied: {applied} (of {args.changes} writes); SIGHUPs taken: {taken}")
    print()
    print("| homeproxy | open fds | threads | RSS MiB |")
    print("|---|---:|---:|---:|")
    print(f"| after warm-up | {warm[0]} | {warm[1]} | {warm[2] / 1024:.1f} |")
    print(f"| at the end | {end[0]} | {end[1]} | {end[2] / 1024:.1f} |")
    if failed:
        print(f"\nfailures: {sorted({(r[0], r[1]) for r in failed})[:10]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--hups", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.6, help="seconds between two config writes")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    exit_on(signal.SIGINT, signal.SIGTERM)
    work = temp_dir("homeproxy-reload-", keep=args.keep)
    try:
        asyncio.run(run(args, work))
    finally:
        log("done")
        cleanup(grace=5)


if __name__ == "__main__":
    main()
