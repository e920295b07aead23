#!/usr/bin/env python3
"""How many connections held open (slowloris-style) before other clients' p99 doubles.

    .venv/bin/python bench/held_connections.py        # ~2 min, Markdown on stdout

`homeproxy serve` (default limits, except `max_connections` raised to 20,000 so the held
connections are not refused) fronts the harness's nginx backend. A holder opens N
connections from many loopback addresses (127.0.1.x, so the per-address cap of 256 holds
each one below it) and sends each a request head that never ends, one header line every
few seconds (a slowloris); meanwhile wrk measures other clients: 20 connections, 8 s,
`--latency`. N grows until p99 is twice the p99 with none held, or until `--most`.
Pinned like the harness (wrk on CPU 0, homeproxy and nginx on CPU 1). Loopback only.
Needs wrk, nginx, taskset.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

from procs import cleanup, exit_on, free_port, log, spawn, start_nginx, temp_dir, wait_ready

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT.parent / "shared" / "bench" / "conf"
CONFIG = """
[server]
listen = ["127.0.0.1"]
http_port = {port}
max_connections = 20000

[logging]
access_log = false
level = "warning"

[[sites]]
name = "app"
hosts = ["app.test"]
upstreams = ["http://127.0.0.1:{backend}"]
"""


def p99_ms(port: int) -> tuple[float, float]:
    """(p99 in ms, requests/s) of 20 other clients over 8 s."""
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", "-c20", "-d8s", "--latency", "-H", "Host: app.test",
         f"http://127.0.0.1:{port}/small"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m and rps, out
    value = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return value, float(rps.group(1))


def rss_mib(pid: int) -> float:
    """RSS of `pid` and its children (taskset execs homeproxy in place: one process)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Holder:
    """Connections that send a request head, a line at a time, and never finish it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []
        self.refused = 0

    async def open(self, n: int) -> None:
        for i in range(len(self.writers), n):
            source = f"127.0.1.{1 + i // 200}"
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))
            except OSError:
                self.refused += 1
                continue
            w.write(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
            self.writers.append(w)

    async def trickle(self) -> None:
        """A header line every 5 s on every connection. homeproxy's head timeout counts from the
        first byte, so each is cut after 60 s anyway; `open()` opens new ones in their place."""
        while True:
            await asyncio.sleep(5)
            alive = []
            for w in self.writers:
                if w.is_closing():
                    continue
                w.write(b"X-a: b\r\n")
                alive.append(w)
            self.writers = alive


async def run(args: argparse.Namespace, work: str) -> None:
    backend = start_nginx(work, 1, small_body=b"x" * 100, conf_dir=str(CONF))
    port = free_port()
    config = Path(work) / "homeproxy.toml"
    config.write_text(CONFIG.format(port=port, backend=backend))
    hp = spawn("homeproxy", ["taskset", "-c", "1", str(ROOT / ".venv/bin/homeproxy"), "serve", "--config", str(config)])
    wait_ready(port, "/small", "app.test", hp, "homeproxy", timeout=20, request_timeout=2)
    base, base_rps = await asyncio.to_thread(p99_ms, port)
    rows = [(0, base, base_rps, rss_mib(hp.pid))]
    log(f"none held: p99 {base:.2f} ms")
    holder = Holder(port)
    trickle = asyncio.ensure_future(holder.trickle())
    n = args.step
    try:
        while n <= args.most:
            await holder.open(n)
            p99, rps = await asyncio.to_thread(p99_ms, port)
            held = sum(1 for w in holder.writers if not w.is_closing())
            rows.append((held, p99, rps, rss_mib(hp.pid)))
            log(f"{held} held: p99 {p99:.2f} ms, {rps:.0f} req/s")
            if p99 >= 2 * base:
                break
            n *= 2
    finally:
        trickle.cancel()
    print("## Held connections (slowloris heads) vs other clients' latency\n")
    print("| held open | others' p99 ms | others' req/s | homeproxy RSS MiB |")
    print("|---:|---:|---:|---:|")
    for held, p99, rps, rss in rows:
        print(f"| {held} | {p99:.2f} | {rps:.0f} | {rss:.1f} |")
    doubled = next((held for held, p99, _, _ in rows if p99 >= 2 * base), None)
    verdict = f"p99 doubled at {doubled} held" if doubled else f"p99 had not doubled at {rows[-1][0]} held"
    print(f"\n{verdict} (baseline {base:.2f} ms); {holder.refused} connection attempts refused.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step", type=int, default=500)
    parser.add_argument("--most", type=int, default=16000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    exit_on(signal.SIGINT, signal.SIGTERM)
    work = temp_dir("homeproxy-held-", keep=args.keep)
    try:
        asyncio.run(run(args, work))
    finally:
        cleanup(grace=5)


if __name__ == "__main__":
    sys.exit(main())
