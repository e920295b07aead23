#!/usr/bin/env python3
"""Peak memory with 100 sites: `homeproxy serve` beside Caddy, each with the same 100 sites.

    .venv/bin/python bench/sites_rss.py               # ~40 s, Markdown on stdout
    .venv/bin/python bench/sites_rss.py --sites 500

Each proxy gets N sites (`site0.home.test` ... each with two host names, all to the same
nginx backend), is warmed with a request to every site, then loaded with wrk (c=50, on
CPU 0) spread over all the sites by a Lua script; peak RSS is VmHWM of the proxy's
processes afterwards. Caddy runs with GOMAXPROCS=1 and its admin API off, as in
../shared/bench/run.py; both proxies and the backend are pinned to CPU 1. Traffic stays
on 127.0.0.1. Needs: wrk, nginx, caddy, taskset.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from procs import cleanup, exit_on, free_port, get, log, spawn, start_nginx, stop, temp_dir, wait_ready

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT.parent / "shared" / "bench" / "conf"
GRACE = 10.0
WRK_LUA = """
local n = {n}
local i = 0
request = function()
  i = (i + 1) % n
  return wrk.format("GET", "/small", {{["Host"] = "site" .. i .. ".home.test"}})
end
"""


def vm_hwm_kib(pid: int) -> int:
    """Peak resident memory of `pid` and its children (VmHWM, KiB)."""
    total = 0
    pids = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def homeproxy_config(port: int, backend: int, n: int) -> str:
    lines = [
        "[server]",
        'listen = ["127.0.0.1"]',
        f"http_port = {port}",
        "[logging]",
        'access_log = "off"',
        'level = "warning"',
        "[discovery]",
        "browse = false",
    ]
    for i in range(n):
        lines += [
            "[[sites]]",
            f'name = "site{i}"',
            f'hosts = ["site{i}.home.test", "alias{i}.home.test"]',
            f'upstreams = ["http://127.0.0.1:{backend}"]',
        ]
    return "\n".join(lines) + "\n"


def caddyfile(port: int, backend: int, n: int) -> str:
    out = ["{", "\tadmin off", "\tauto_https off", "}"]
    for i in range(n):
        out += [
            f"http://site{i}.home.test:{port}, http://alias{i}.home.test:{port} {{",
            "\tbind 127.0.0.1",
            f"\treverse_proxy 127.0.0.1:{backend}",
            "}",
        ]
    return "\n".join(out) + "\n"


def load(port: int, n: int, workdir: str, seconds: int) -> float:
    script = os.path.join(workdir, f"spread{port}.lua")
    Path(script).write_text(WRK_LUA.format(n=n))
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", "-c50", f"-d{seconds}s", "-s", script, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    exit_on(signal.SIGINT, signal.SIGTERM)
    workdir = temp_dir("hp-sites-rss-", keep=args.keep_tmp)
    n = args.sites
    try:
        backend = start_nginx(workdir, 1, small_body=b"x" * 100, conf_dir=str(CONF))
        results = []
        hp_port, caddy_port = free_port(), free_port()
        Path(workdir, "hp.toml").write_text(homeproxy_config(hp_port, backend, n))
        Path(workdir, "Caddyfile").write_text(caddyfile(caddy_port, backend, n))
        targets = {
            "homeproxy": (
                ["taskset", "-c", "1", str(ROOT / ".venv/bin/homeproxy"), "serve", "--config", f"{workdir}/hp.toml"],
                hp_port,
                {},
            ),
            "caddy": (
                ["taskset", "-c", "1", "caddy", "run", "--config", f"{workdir}/Caddyfile", "--adapter", "caddyfile"],
                caddy_port,
                {"GOMAXPROCS": "1"},
            ),
        }
        for name, (argv, port, env) in targets.items():
            log(f"{name}: starting with {n} sites")
            p = spawn(
                name,
                argv,
                stdout=subprocess.DEVNULL,
                log_to=os.path.join(workdir, f"{name}.log"),
                env={**os.environ, **env, "HOME": workdir},
            )
            wait_ready(port, "/small", "site0.home.test", p, name, timeout=60, request_timeout=5)
            for i in range(n):  # every site compiled and used once
                status, _, _ = get(port, "/small", f"alias{i}.home.test", timeout=5)
                if status != 200:
                    raise RuntimeError(f"{name}: alias{i}.home.test answered {status}")
            idle = vm_hwm_kib(p.pid)
            rps = load(port, n, workdir, args.seconds)
            peak = vm_hwm_kib(p.pid)
            results.append((name, idle, peak, rps))
            stop(name, p, grace=GRACE)
        caddy_peak = next(peak for name, _, peak, _ in results if name == "caddy")
        print(f"Run {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: {n} sites, wrk -c50 for {args.seconds} s")
        print("over all of them; VmHWM of the proxy's processes.\n")
        print("| target | peak RSS after warm-up MiB | peak RSS after load MiB | ÷ Caddy | req/s (spread) |")
        print("|---|---|---|---|---|")
        for name, idle, peak, rps in results:
            print(f"| {name} | {idle / 1024:.1f} | {peak / 1024:.1f} | {peak / caddy_peak:.2f} | {rps:,.0f} |")
        return 0
    finally:
        cleanup(grace=GRACE)


if __name__ == "__main__":
    sys.exit(main())
