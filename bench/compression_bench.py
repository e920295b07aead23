#!/usr/bin/env python3
"""Compression benchmark: JSON through `homeproxy serve`, uncompressed vs gzip vs brotli vs zstd.

    .venv/bin/python bench/compression_bench.py            # ~75 s, Markdown on stdout
    .venv/bin/python bench/compression_bench.py --dur 1 --rounds 1   # smoke test (~20 s)

Run it with the project's venv Python: it starts `homeproxy` from the same venv,
and decodes the checks with the same `brotli` and `zstandard` packages.

One run, side by side, interleaved by round (A B C D E A B C D E ...): an nginx
backend serves one realistic JSON document (Home Assistant-like `/api/states`,
~48 KB, random ids, so it compresses like real API answers rather than like
repeated text); one `homeproxy serve` proxies it for two hosts, one site with
`compression = true`, one without. wrk asks with the matching Accept-Encoding:

- off: the site without compression (no Accept-Encoding);
- identity: the compressing site, client accepts nothing (the feature's cost when idle);
- gzip, br, zstd: the compressing site, `Accept-Encoding: <coding>`.

Reported per variant: req/s, MB/s of *uncompressed* JSON delivered (req/s x the
document's size: what the client ends up with), wire MB/s, the compressed size
over the original (ratio), latency, and the proxy's CPU time per request.

Pinning as in ../shared/bench/run.py: wrk alone on CPU 0, proxy and backend on
CPU 1 (taskset). Everything started here is tracked by pid (each in its own
process group) and stopped at exit, also on Ctrl-C and SIGTERM; every file is
in one mktemp directory, removed at the end (`--keep-tmp` keeps it). Traffic
goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brotli  # type: ignore[import-untyped]
import zstandard
from procs import (
    all_cpu_ticks,
    cleanup,
    cpu_seconds,
    exit_on,
    free_port,
    get,
    log,
    others_cores,
    spawn,
    stop,
    temp_dir,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
GRACE = 10.0  # seconds a process gets between SIGTERM and SIGKILL
WRK = "/usr/bin/wrk"
ON_HOST = "json.bench.test"
OFF_HOST = "plain.bench.test"

#: (name, Host, Accept-Encoding or None).
VARIANTS: tuple[tuple[str, str, str | None], ...] = (
    ("off", OFF_HOST, None),
    ("identity", ON_HOST, None),
    ("gzip", ON_HOST, "gzip"),
    ("br", ON_HOST, "br"),
    ("zstd", ON_HOST, "zstd"),
)

LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"errors":%.0f,' ..
    '"p50_us":%.0f,"p99_us":%.0f}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    gzip off;
    etag on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    open_file_cache max=8 inactive=600s;
    client_body_temp_path {dir}/tmp_body;
    proxy_temp_path {dir}/tmp_proxy;
    fastcgi_temp_path {dir}/tmp_fastcgi;
    uwsgi_temp_path {dir}/tmp_uwsgi;
    scgi_temp_path {dir}/tmp_scgi;
    server {{
        listen 127.0.0.1:{port} default_server backlog=4096;
        root {dir}/www;
        location = /api/states {{ default_type application/json; try_files /states.json =404; }}
        location / {{ return 404; }}
    }}
}}
"""

HOMEPROXY_CONF = """
[server]
listen = ["127.0.0.1"]
http_port = {port}

[logging]
access_log = false
level = "warning"

[[sites]]
name = "json"
hosts = ["{on_host}"]
upstreams = ["http://127.0.0.1:{backend}"]
compression = true

[[sites]]
name = "plain"
hosts = ["{off_host}"]
upstreams = ["http://127.0.0.1:{backend}"]
"""

# --- helpers --------------------------------------------------------------------------------


def decode(coding: str | None, data: bytes) -> bytes:
    if coding is None:
        return data
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        out: bytes = brotli.decompress(data)
        return out
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise ValueError(coding)


def states_json(target: int) -> bytes:
    """A Home Assistant-like `/api/states` answer of about `target` bytes (deterministic)."""
    rng = random.Random(42)
    rooms = ("kitchen", "living_room", "bedroom", "office", "garage", "hall", "garden", "bathroom")
    kinds = (
        ("sensor", "temperature", "°C"),
        ("sensor", "humidity", "%"),
        ("sensor", "power", "W"),
        ("binary_sensor", "door", None),
        ("light", None, None),
        ("switch", None, None),
    )
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    states: list[dict[str, Any]] = []
    size = 2
    while size < target:
        domain, device_class, unit = rng.choice(kinds)
        room = rng.choice(rooms)
        name = f"{room}_{device_class or domain}_{len(states)}"
        stamp = f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:" + (
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}+00:00"
        )
        attributes: dict[str, Any] = {"friendly_name": name.replace("_", " ").title()}
        if unit:
            attributes |= {"unit_of_measurement": unit, "device_class": device_class, "state_class": "measurement"}
            state = f"{rng.uniform(0, 100):.1f}"
        elif domain == "binary_sensor":
            attributes["device_class"] = device_class
            state = rng.choice(("on", "off"))
        else:
            state = rng.choice(("on", "off", "unavailable"))
        entry = {
            "entity_id": f"{domain}.{name}",
            "state": state,
            "attributes": attributes,
            "last_changed": stamp,
            "last_updated": stamp,
            "context": {"id": "".join(rng.choice(alphabet) for _ in range(26)), "parent_id": None, "user_id": None},
        }
        states.append(entry)
        size += len(json.dumps(entry)) + 2
    return json.dumps(states).encode()


# --- the run --------------------------------------------------------------------------------


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    wire_mbps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    errors: int = 0


def run_wrk(lua: Path, port: int, host: str, ae: str | None, a: argparse.Namespace, dur: int) -> dict[str, Any]:
    argv = ["taskset", "-c", str(a.client_cpu), WRK, "-t1", f"-c{a.conns}", f"-d{dur}s", "--timeout=5s"]
    argv += ["--latency", "-s", str(lua), "-H", f"Host: {host}"]
    if ae is not None:
        argv += ["-H", f"Accept-Encoding: {ae}"]
    argv.append(f"http://127.0.0.1:{port}/api/states")
    p = spawn("wrk", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=dur + 30)
    finally:
        stop("wrk", p, grace=GRACE)
    text = out.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (rc={p.returncode}):\n{text}")
    result: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dur", type=int, default=4, help="seconds per wrk run (default 4)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all variants, interleaved (default 3)")
    ap.add_argument("--conns", type=int, default=50, help="wrk connections (default 50)")
    ap.add_argument("--size", type=int, default=48_000, help="JSON document size in bytes (default 48000)")
    ap.add_argument("--client-cpu", type=int, default=0, help="CPU for wrk (default 0)")
    ap.add_argument("--server-cpu", type=int, default=1, help="CPU for the proxy and the backend (default 1)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    a = ap.parse_args()
    homeproxy = Path(sys.executable).parent / "homeproxy"
    for tool in (WRK, shutil.which("nginx"), shutil.which("taskset"), str(homeproxy)):
        if not tool or not os.access(tool, os.X_OK):
            sys.exit(f"missing {tool or 'nginx/taskset'}: apt-get install wrk nginx; run with the venv's python")
    t_start = time.monotonic()

    workdir = Path(temp_dir("hp-compress-bench.", keep=a.keep_tmp))  # 0755: nginx workers may run as nobody
    www = workdir / "www"
    www.mkdir()
    doc = states_json(a.size)
    (www / "states.json").write_bytes(doc)
    (www / "states.json").chmod(0o644)
    for d in ("tmp_body", "tmp_proxy", "tmp_fastcgi", "tmp_uwsgi", "tmp_scgi"):
        (workdir / d).mkdir()
    lua = workdir / "report.lua"
    lua.write_text(LUA)
    pin = ["taskset", "-c", str(a.server_cpu)]

    backend_port, proxy_port = free_port(), free_port()
    nginx_conf = workdir / "nginx.conf"
    nginx_conf.write_text(NGINX_CONF.format(dir=workdir, port=backend_port))
    backend = spawn(
        "backend",
        [*pin, "nginx", "-p", str(workdir), "-c", str(nginx_conf), "-e", str(workdir / "error.log")],
        stdout=subprocess.DEVNULL,
        log_to=workdir / "nginx.stderr",
    )
    wait_ready(backend_port, "/api/states", ON_HOST, backend, "nginx", timeout=20.0, request_timeout=2)

    config = workdir / "homeproxy.toml"
    config.write_text(HOMEPROXY_CONF.format(port=proxy_port, backend=backend_port, on_host=ON_HOST, off_host=OFF_HOST))
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[var] = str(workdir / "xdg" / var.lower())  # never the user's own dirs
    proxy = spawn(
        "homeproxy",
        [*pin, str(homeproxy), "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        log_to=workdir / "homeproxy.stderr",
        env=env,
    )
    wait_ready(proxy_port, "/api/states", ON_HOST, proxy, "homeproxy", timeout=20.0, request_timeout=2)
    log(f"nginx pid {backend.pid} :{backend_port}, homeproxy pid {proxy.pid} :{proxy_port} (CPU {a.server_cpu})")

    # Checks (not timed): each variant answers with its coding and decodes to the document.
    wire: dict[str, int] = {}
    for name, host, ae in VARIANTS:
        accept = {} if ae is None else {"Accept-Encoding": ae}
        status, headers, body = get(proxy_port, "/api/states", host, headers=accept, timeout=5.0)
        coding = headers.get("content-encoding")
        if status != 200 or coding != ae or decode(coding, body) != doc:
            sys.exit(f"check failed for {name}: status {status}, Content-Encoding {coding!r}")
        wire[name] = len(body)
    log("checks ok: " + ", ".join(f"{n} {b:,} B" for n, b in wire.items()))

    for _, host, ae in VARIANTS:  # warm-up, not recorded
        run_wrk(lua, proxy_port, host, ae, a, 1)

    results = {name: Result() for name, _, _ in VARIANTS}
    ours = {os.getpid(), proxy.pid, backend.pid} | {int(x) for x in os.listdir(f"/proc/{backend.pid}/task")}
    ours |= {int(x) for x in Path(f"/proc/{backend.pid}/task/{backend.pid}/children").read_text().split()}
    for rnd in range(a.rounds):
        for name, host, ae in VARIANTS:
            c0 = cpu_seconds(proxy.pid)
            t0 = all_cpu_ticks()
            r = run_wrk(lua, proxy_port, host, ae, a, a.dur)
            t1 = all_cpu_ticks()
            cpu = cpu_seconds(proxy.pid) - c0
            secs = r["duration_us"] / 1e6
            res = results[name]
            res.rps.append(r["requests"] / secs)
            res.wire_mbps.append(r["bytes"] / secs / 1e6)
            res.p50_ms.append(r["p50_us"] / 1000)
            res.p99_ms.append(r["p99_us"] / 1000)
            res.cpu_us.append(cpu * 1e6 / max(r["requests"], 1))
            res.errors += int(r["errors"])
            res.others.append(others_cores(t0, t1, ours, secs))
            log(
                f"round {rnd + 1} {name:8s} {res.rps[-1]:8.0f} req/s  {res.rps[-1] * len(doc) / 1e6:7.1f} MB/s JSON"
                f"  {res.wire_mbps[-1]:7.1f} MB/s wire  p99 {res.p99_ms[-1]:6.1f} ms"
                + f"  other CPU {res.others[-1]:.2f} core"
                + (f"  errors {r['errors']}" if r["errors"] else "")
            )
            time.sleep(0.3)
    alive = proxy.poll() is None
    elapsed = time.monotonic() - t_start
    print(report(a, doc, wire, results, alive, elapsed))


def report(
    a: argparse.Namespace, doc: bytes, wire: dict[str, int], results: dict[str, Result], alive: bool, elapsed: float
) -> str:
    med = statistics.median
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in cpuinfo if x.startswith("model name")), "?")
    base = med(results["off"].rps)
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} x {cpu}: {a.rounds} rounds interleaved, "
        f"medians; wrk -t1 -c{a.conns} {a.dur} s per run on CPU {a.client_cpu}, homeproxy serve and the nginx "
        f"backend on CPU {a.server_cpu}; JSON document {len(doc):,} bytes; run took {elapsed:.0f} s.",
        "",
        "| variant | Accept-Encoding | body bytes | ratio | req/s | spread | x off | JSON MB/s | wire MB/s "
        "| p50 ms | p99 ms | proxy CPU us/req | other CPU | errors |",
        "|---" * 14 + "|",
    ]
    for name, _, ae in VARIANTS:
        r = results[name]
        rps = med(r.rps)
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    ae or "(none)",
                    f"{wire[name]:,}",
                    f"{wire[name] / len(doc):.3f}",
                    f"{rps:,.0f}",
                    f"{100 * (max(r.rps) - min(r.rps)) / rps:.0f}%",
                    f"{rps / base:.2f}",
                    f"{rps * len(doc) / 1e6:,.1f}",
                    f"{med(r.wire_mbps):,.1f}",
                    f"{med(r.p50_ms):.1f}",
                    f"{med(r.p99_ms):.1f}",
                    f"{med(r.cpu_us):,.0f}",
                    "/".join(f"{o:.2f}" for o in r.others),
                    str(r.errors),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "ratio: compressed body / JSON document. spread: (max - min) / median of req/s over the "
        "rounds. other CPU: cores used in each round by processes that are not this benchmark's "
        "(other work on the host; near 0 for a clean run). proxy CPU: CPU time of homeproxy per "
        "request. JSON MB/s: req/s x the document's size (the uncompressed "
        "JSON the client ends up with). wire MB/s: bytes wrk read, headers included. off: a site without "
        "compression; identity: the compressing site, client accepts no coding. "
        f"homeproxy alive at the end: {'yes' if alive else 'NO'}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    exit_on(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    atexit.register(cleanup, grace=GRACE)
    try:
        main()
    finally:
        cleanup(grace=GRACE)
