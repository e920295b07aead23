#!/usr/bin/env python3
"""Cache benchmark: requests/s for one cacheable URL, side by side in one run:

  (a) direct      the backend itself
  (b) cache hit   through homeproxy with `cache = true` (every request a HIT)
  (c) uncached    through homeproxy with the cache off (every request forwarded)

for two backends: nginx serving a static 100-byte file with `Cache-Control:
max-age=60` (../shared/bench/conf/backend-nginx.conf, the `/cached` location
run.py uses), and a small aiohttp app that builds a 10 KB JSON listing per
request (a dynamic page, the kind a home-lab service serves; `max-age=60` too).

    .venv/bin/python bench/cache_bench.py                 # both backends, ~75 s
    .venv/bin/python bench/cache_bench.py --backend aiohttp --duration 5

Pinned like ../shared/bench/run.py: wrk on CPU 0, homeproxy and the backend on
CPU 1 (taskset). Traffic goes to 127.0.0.1 only. homeproxy runs as `homeproxy
serve` from this project's .venv with a config written to a temp directory
(one homeproxy serves both the cached and the uncached site). Everything
started here is tracked by pid, in its own process group, and stopped at exit
(also on Ctrl-C / SIGTERM); the temp directory is removed unless --keep-tmp.
Needs: wrk, taskset, nginx (for the nginx backend), aiohttp in the venv.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import procs
from procs import PROCS, cleanup, exit_on, free_port, get, log, spawn, stop, temp_dir, wait_ready

GRACE = 5.0  # seconds a process gets between SIGTERM and SIGKILL

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED_CONF = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench", "conf"))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
SMALL_BODY = b"small response from the benchmark backend; exactly one hundred bytes long, no more, no less, thanks\n"
CACHED_HOST = "cached.test"
PLAIN_HOST = "plain.test"

APP = r'''
"""The aiohttp benchmark backend: a JSON listing built per request, cacheable for 60 s."""
import json, sys
from aiohttp import web

COUNT = 0

async def listing(request):
    global COUNT
    COUNT += 1
    items = [{"id": i, "name": f"item-{i:05d}", "active": i % 3 != 0, "tags": ["home", "proxy"][: 1 + i % 2],
              "score": round(i * 1.37 % 100, 2), "path": f"/api/v1/items/{i}"} for i in range(80)]
    body = json.dumps({"items": items, "total": len(items)}).encode()
    return web.Response(body=body, content_type="application/json",
                        headers={"Cache-Control": "max-age=60", "X-Req-Id": str(COUNT)})

async def count(request):
    return web.Response(text=str(COUNT))

async def small(request):
    return web.Response(body=SMALL, content_type="text/plain")

SMALL = b"small response from the benchmark backend; exactly one hundred bytes long, no more, no less, thanks\n"
app = web.Application()
app.router.add_get("/cached", listing)
app.router.add_get("/count", count)
app.router.add_get("/small", small)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''

CONFIG = """
[server]
listen = ["127.0.0.1"]
http_port = {port}

[logging]
access_log = false
level = "warning"

[cache]
max_bytes = "64MiB"

[[sites]]
name = "cached"
hosts = ["{cached}"]
upstreams = ["http://{backend}"]
cache = true

[[sites]]
name = "plain"
hosts = ["{plain}"]
upstreams = ["http://{backend}"]
"""


# --- backends and homeproxy --------------------------------------------------------------


def start_nginx(workdir: str, cpu: int) -> int:
    return procs.start_nginx(workdir, cpu, small_body=SMALL_BODY, conf_dir=SHARED_CONF)


def start_aiohttp(workdir: str, cpu: int, python: str) -> int:
    script = os.path.join(workdir, "app.py")
    with open(script, "w") as f:
        f.write(APP)
    port = free_port()
    p = spawn(
        "aiohttp backend",
        ["taskset", "-c", str(cpu), python, script, str(port)],
        stdout=subprocess.DEVNULL,
        log_to=os.path.join(workdir, "app.stderr.log"),
    )
    wait_ready(port, "/small", "x", p, "aiohttp backend", timeout=30, request_timeout=10)
    return port


def start_homeproxy(workdir: str, cpu: int, backend_port: int, label: str) -> int:
    d = os.path.join(workdir, f"homeproxy-{label}")
    os.makedirs(d)
    port = free_port()
    config = os.path.join(d, "homeproxy.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(port=port, backend=f"127.0.0.1:{backend_port}", cached=CACHED_HOST, plain=PLAIN_HOST))
    env = dict(os.environ, HOME=d, XDG_CONFIG_HOME=d, XDG_DATA_HOME=d, XDG_STATE_HOME=d, XDG_CACHE_HOME=d)
    exe = os.path.join(VENV_BIN, "homeproxy")
    if not os.path.exists(exe):
        exe = shutil.which("homeproxy") or exe
    p = spawn(
        f"homeproxy ({label})",
        ["taskset", "-c", str(cpu), exe, "serve", "--config", config],
        stdout=subprocess.DEVNULL,
        log_to=os.path.join(d, "stderr.log"),
        env=env,
    )
    wait_ready(port, "/cached", PLAIN_HOST, p, "homeproxy", timeout=30, request_timeout=10)
    return port


# --- wrk ---------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Row:
    backend: str
    target: str
    runs: list[Run] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(port: int, host: str, path: str, conns: int, duration: int, cpu: int) -> Run:
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout=5s"]
    argv += ["-H", f"Host: {host}", f"http://127.0.0.1:{port}{path}"]
    p = spawn("wrk", argv, stdout=subprocess.PIPE)
    try:
        out, _ = p.communicate(timeout=duration + 60)
    finally:
        stop("wrk", p, grace=GRACE)
    text = out.decode(errors="replace")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps is None:
        raise RuntimeError(f"wrk gave no result:\n{text}")
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    return Run(float(rps.group(1)), _ms(lat.get("50", "")), _ms(lat.get("99", "")), errors)


# --- main --------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("nginx", "aiohttp", "both"), default="both")
    ap.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (interleaved a b c a b c); medians shown")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--keep-tmp", action="store_true")
    a = ap.parse_args()
    for tool in ("wrk", "taskset") + (("nginx",) if a.backend != "aiohttp" else ()):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt-get install {tool})")
    atexit.register(cleanup, grace=GRACE)
    exit_on(signal.SIGTERM, signal.SIGINT)
    python = os.path.join(VENV_BIN, "python")
    if not os.path.exists(python):
        python = sys.executable
    t0 = time.monotonic()
    workdir = temp_dir("cachebench.", keep=a.keep_tmp)  # mode 0755: nginx workers read www/ as nobody

    rows: list[Row] = []
    backends = ["nginx", "aiohttp"] if a.backend == "both" else [a.backend]
    for kind in backends:
        if kind == "nginx":
            backend = start_nginx(workdir, a.server_cpu)
        else:
            backend = start_aiohttp(workdir, a.server_cpu, python)
        proxy = start_homeproxy(workdir, a.server_cpu, backend, kind)
        log(f"{kind} backend on :{backend}, homeproxy on :{proxy}")
        # Sanity: the second request is a HIT with the same backend answer; the plain site never is.
        _, h1, b1 = get(proxy, "/cached", CACHED_HOST, timeout=10)
        _, h2, b2 = get(proxy, "/cached", CACHED_HOST, timeout=10)
        _, h3, _ = get(proxy, "/cached", PLAIN_HOST, timeout=10)
        same = h1.get("x-req-id") == h2.get("x-req-id") and b1 == b2
        if h2.get("x-cache") != "HIT" or not same or "x-cache" in h3:
            sys.exit(f"sanity check failed: {h1.get('x-cache')}/{h2.get('x-cache')}, same answer {same}, plain {h3}")
        targets = [
            (f"{kind}: direct", backend, "bench.test"),
            (f"{kind}: homeproxy cache hit", proxy, CACHED_HOST),
            (f"{kind}: homeproxy uncached", proxy, PLAIN_HOST),
        ]
        for _, port, host in targets:  # warm-up, not recorded
            wrk(port, host, "/cached", a.conns, 1, a.client_cpu)
        kind_rows = [Row(kind, name) for name, _, _ in targets]
        for _ in range(a.rounds):
            for row, (_, port, host) in zip(kind_rows, targets, strict=True):
                row.runs.append(wrk(port, host, "/cached", a.conns, a.duration, a.client_cpu))
                log(f"  {row.target}: {row.runs[-1].rps:,.0f} req/s")
        if kind == "aiohttp":
            _, _, count = get(backend, "/count", "x", timeout=10)
            log(f"  aiohttp backend answered {int(count):,} requests in all")
        rows += kind_rows
        for label, p in list(PROCS):
            stop(label, p, grace=GRACE)

    print(
        f"\nCache benchmark, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: wrk -t1 -c{a.conns}, "
        f"{a.rounds} x {a.duration} s per target (interleaved, medians), wrk on CPU {a.client_cpu}, "
        f"homeproxy and backend on CPU {a.server_cpu}; run took {time.monotonic() - t0:.0f} s.\n"
    )
    print("| backend | target | req/s | x direct | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for kind in backends:
        group = [r for r in rows if r.backend == kind]
        direct = group[0].rps
        for r in group:
            p50 = statistics.median(x.p50_ms for x in r.runs)
            p99 = statistics.median(x.p99_ms for x in r.runs)
            errors = sum(x.errors for x in r.runs)
            target = r.target.split(": ", 1)[1]
            print(f"| {kind} | {target} | {r.rps:,.0f} | {r.rps / direct:.2f} | {p50:.2f} | {p99:.2f} | {errors} |")


if __name__ == "__main__":
    main()
