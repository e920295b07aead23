#!/usr/bin/env python3
"""TLS benchmark: HTTPS vs plain HTTP through `homeproxy serve`, keep-alive and one request per connection.

    .venv/bin/python bench/tls_bench.py            # ~80 s, Markdown on stdout
    .venv/bin/python bench/tls_bench.py --dur 1 --rounds 1   # smoke test (~15 s)

Run it with the project's venv Python: it starts `homeproxy` from the same venv.

One run, side by side, interleaved by round (A B C D A B C D ...), after one 1 s
warm-up per variant: an nginx backend answers `/hello` with a fixed 6-byte body;
one `homeproxy serve` proxies it for one site, `bench.home.arpa`, with `tls = true`
and `redirect_to_https = false`, so the same site answers on the HTTP port and on
the HTTPS one. homeproxy makes its local CA and the site's leaf at start (in the
temp dir's XDG_DATA_HOME). wrk -t1 asks `/hello` with `Host: bench.home.arpa`:

- http keep-alive: plain HTTP, wrk's connections reused;
- https keep-alive: HTTPS, connections (and so TLS sessions) reused: the cost of
  encrypting and decrypting the requests and answers;
- http close, https close: `Connection: close`, so every request is a new TCP
  connection, and for HTTPS a new TLS handshake.

SNI. wrk sends as SNI the host of its URL (ssl_connect() sets the URL's host with
SSL_set_tlsext_host_name), and homeproxy refuses a handshake whose SNI names no TLS
site (unrecognized_name): with https://127.0.0.1:PORT/ every connection fails (wrk
counts connect errors, whatever the Host header). So the HTTPS URL is
https://bench.home.arpa:PORT/hello, and the wrk script replaces `wrk.resolve` (the
Lua hook wrk calls once to turn the URL's host into addresses; wrk's own would fail,
as the name is in no DNS) with a lookup of 127.0.0.1: SNI and Host say
bench.home.arpa, the connections go to 127.0.0.1, and nothing asks DNS or /etc/hosts
about the name. The site needs no extra host (`localhost`, which the local CA would
accept, may resolve to ::1 first).

Session resumption. wrk never calls SSL_set_session, but it reuses one SSL object
per connection slot (SSL_shutdown + SSL_clear between connections), and SSL_clear
keeps the last session after a clean shutdown, so OpenSSL offers it on the next
handshake. homeproxy keeps stateful sessions (OP_NO_TICKET, one ticket per TLS 1.3
connection) and accepts them. So in `https close` nearly every handshake is a TLS
1.3 resumption (PSK with a fresh ECDHE key share, no certificate, no signature),
the cost of a returning client, not a first visit's full handshake. Seen with
strace on wrk 4.1.0-3 / OpenSSL 3.0 (-c1, Connection: close, 1 s): 537 of 538
ClientHellos carried a pre_shared_key extension, all with SNI bench.home.arpa, and
537 ServerHellos accepted it, each with a key_share.

Reported per variant: req/s, latency, the proxy's CPU time per request and wrk's
errors; each HTTPS variant also over the HTTP one with the same connection mode.

Checks before timing (exit non-zero if one fails): a verified HTTPS GET (Python's
ssl, the run's root.crt as the only CA, hostname checked, SNI bench.home.arpa)
answers 200 with the body, plain HTTP with the Host header too, and every wrk
warm-up gets answers with no errors.

Pinning as in ../shared/bench/run.py: wrk alone on CPU 0, proxy and backend on
CPU 1 (taskset). Everything started here is tracked by pid (each in its own
process group) and stopped at exit, also on Ctrl-C and SIGTERM; every file is
in one mktemp directory, removed at the end (`--keep-tmp` keeps it), XDG dirs
included. Traffic goes to 127.0.0.1 only, on ports found free at start.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

GRACE = 10.0  # seconds a process gets between SIGTERM and SIGKILL
WRK = "/usr/bin/wrk"
HOST = "bench.home.arpa"
PATH = "/hello"
BODY = b"hello\n"

#: (name, scheme, Connection: close?).
VARIANTS: tuple[tuple[str, str, bool], ...] = (
    ("http keep-alive", "http", False),
    ("https keep-alive", "https", False),
    ("http close", "http", True),
    ("https close", "https", True),
)

LUA = """
-- Connect to 127.0.0.1 whatever the URL's host: the HTTPS URL names bench.home.arpa
-- so that wrk sends it as SNI, and it must not be looked up.
wrk.resolve = function(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"errors":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"p50_us":%.0f,"p99_us":%.0f}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    e.connect, e.read, e.write, e.status, e.timeout,
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
    tcp_nodelay on;
    gzip off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {dir}/tmp_body;
    proxy_temp_path {dir}/tmp_proxy;
    fastcgi_temp_path {dir}/tmp_fastcgi;
    uwsgi_temp_path {dir}/tmp_uwsgi;
    scgi_temp_path {dir}/tmp_scgi;
    server {{
        listen 127.0.0.1:{port} default_server backlog=4096;
        location = {path} {{ default_type text/plain; return 200 "{body}"; }}
        location / {{ return 404; }}
    }}
}}
"""

HOMEPROXY_CONF = """
[server]
listen = ["127.0.0.1"]
http_port = {http_port}
https_port = {https_port}

[logging]
access_log = false
level = "warning"

[[sites]]
name = "bench"
hosts = ["{host}"]
upstreams = ["http://127.0.0.1:{backend}"]
tls = true
redirect_to_https = false
"""

# --- helpers --------------------------------------------------------------------------------


def https_get(port: int, path: str, host: str, cafile: Path, *, timeout: float) -> tuple[int, bytes, str]:
    """A verified HTTPS GET to 127.0.0.1:`port` with SNI and Host `host`: status, body, TLS version.

    The context trusts only `cafile` and checks the certificate's name against `host`.
    """
    ctx = ssl.create_default_context(cafile=str(cafile))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        conn.sock = ctx.wrap_socket(raw, server_hostname=host)  # request() does not connect again
    except BaseException:
        raw.close()
        raise
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        version = conn.sock.version() or "?"
        return r.status, r.read(), version
    finally:
        conn.close()


def wait_https(port: int, cafile: Path, proc: subprocess.Popen[bytes], *, timeout: float) -> tuple[int, bytes, str]:
    """Poll the verified HTTPS GET until it answers (any status); SystemExit if it never does."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"check failed: homeproxy exited ({proc.returncode}) before HTTPS answered")
        if cafile.exists():
            try:
                return https_get(port, PATH, HOST, cafile, timeout=2.0)
            except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
        else:
            last = f"no {cafile}"
        time.sleep(0.2)
    sys.exit(f"check failed: no verified HTTPS answer from 127.0.0.1:{port} (SNI {HOST}) in {timeout:.0f} s: {last}")


# --- the run --------------------------------------------------------------------------------


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    errors: int = 0


def url(scheme: str, ports: dict[str, int]) -> str:
    # HTTPS names the site so that wrk sends it as SNI; the Lua script connects to 127.0.0.1.
    return f"http://127.0.0.1:{ports['http']}{PATH}" if scheme == "http" else f"https://{HOST}:{ports['https']}{PATH}"


def run_wrk(lua: Path, target: str, close: bool, a: argparse.Namespace, dur: int) -> dict[str, Any]:
    argv = ["taskset", "-c", str(a.client_cpu), WRK, "-t1", f"-c{a.conns}", f"-d{dur}s", "--timeout=5s"]
    argv += ["--latency", "-s", str(lua), "-H", f"Host: {HOST}"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(target)
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


def error_kinds(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} {r[k]}" for k in ("connect", "read", "write", "status", "timeout") if r[k]) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dur", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all variants, interleaved (default 3)")
    ap.add_argument("--conns", type=int, default=50, help="wrk connections (default 50)")
    ap.add_argument("--client-cpu", type=int, default=0, help="CPU for wrk (default 0)")
    ap.add_argument("--server-cpu", type=int, default=1, help="CPU for the proxy and the backend (default 1)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs, the CA)")
    a = ap.parse_args()
    homeproxy = Path(sys.executable).parent / "homeproxy"
    for tool in (WRK, shutil.which("nginx"), shutil.which("taskset"), str(homeproxy)):
        if not tool or not os.access(tool, os.X_OK):
            sys.exit(f"missing {tool or 'nginx/taskset'}: apt-get install wrk nginx; run with the venv's python")
    t_start = time.monotonic()

    workdir = Path(temp_dir("hp-tls-bench.", keep=a.keep_tmp))  # 0755: nginx workers may run as nobody
    for d in ("tmp_body", "tmp_proxy", "tmp_fastcgi", "tmp_uwsgi", "tmp_scgi"):
        (workdir / d).mkdir()
    lua = workdir / "report.lua"
    lua.write_text(LUA)
    pin = ["taskset", "-c", str(a.server_cpu)]

    backend_port, http_port, https_port = free_port(), free_port(), free_port()
    if len({backend_port, http_port, https_port}) < 3:
        sys.exit("free_port() gave the same port twice; run again")
    ports = {"http": http_port, "https": https_port}
    nginx_conf = workdir / "nginx.conf"
    body_lit = BODY.decode().replace("\n", "\\n")
    nginx_conf.write_text(NGINX_CONF.format(dir=workdir, port=backend_port, path=PATH, body=body_lit))
    backend = spawn(
        "backend",
        [*pin, "nginx", "-p", str(workdir), "-c", str(nginx_conf), "-e", str(workdir / "error.log")],
        stdout=subprocess.DEVNULL,
        log_to=workdir / "nginx.stderr",
    )
    wait_ready(backend_port, PATH, HOST, backend, "nginx", timeout=20.0, request_timeout=2)

    config = workdir / "homeproxy.toml"
    config.write_text(
        HOMEPROXY_CONF.format(http_port=http_port, https_port=https_port, host=HOST, backend=backend_port)
    )
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[var] = str(workdir / "xdg" / var.lower())  # never the user's own dirs
    root_crt = workdir / "xdg" / "xdg_data_home" / "homeproxy" / "ca" / "root.crt"
    proxy = spawn(
        "homeproxy",
        [*pin, str(homeproxy), "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        log_to=workdir / "homeproxy.stderr",
        env=env,
    )
    wait_ready(http_port, PATH, HOST, proxy, "homeproxy", timeout=30.0, request_timeout=2)
    log(
        f"nginx pid {backend.pid} :{backend_port}, homeproxy pid {proxy.pid} http :{http_port} "
        f"https :{https_port} (CPU {a.server_cpu})"
    )

    # Checks (not timed): verified HTTPS and plain HTTP both answer 200 with the body.
    status, body, tls_version = wait_https(https_port, root_crt, proxy, timeout=30.0)
    if status != 200 or body != BODY:
        sys.exit(f"check failed for https: status {status}, body {body[:80]!r} (expected 200, {BODY!r})")
    status, _, body = get(http_port, PATH, HOST, timeout=5.0)
    if status != 200 or body != BODY:
        sys.exit(f"check failed for http: status {status}, body {body[:80]!r} (expected 200, {BODY!r})")
    log(f"checks ok: https 200 ({tls_version}, verified against {root_crt.name}, SNI {HOST}), http 200")

    for name, scheme, close in VARIANTS:  # warm-up, not recorded; it must work without errors
        r = run_wrk(lua, url(scheme, ports), close, a, 1)
        if r["requests"] <= 0 or r["errors"]:
            sys.exit(
                f"check failed: wrk warm-up for {name} got {r['requests']} answers, errors: {error_kinds(r)} "
                f"(homeproxy log: {workdir / 'homeproxy.stderr'}; --keep-tmp keeps it)"
            )

    results = {name: Result() for name, _, _ in VARIANTS}
    ours = {os.getpid(), proxy.pid, backend.pid} | {int(x) for x in os.listdir(f"/proc/{backend.pid}/task")}
    ours |= {int(x) for x in Path(f"/proc/{backend.pid}/task/{backend.pid}/children").read_text().split()}
    for rnd in range(a.rounds):
        for name, scheme, close in VARIANTS:
            c0 = cpu_seconds(proxy.pid)
            t0 = all_cpu_ticks()
            r = run_wrk(lua, url(scheme, ports), close, a, a.dur)
            t1 = all_cpu_ticks()
            cpu = cpu_seconds(proxy.pid) - c0
            secs = r["duration_us"] / 1e6
            res = results[name]
            res.rps.append(r["requests"] / secs)
            res.p50_ms.append(r["p50_us"] / 1000)
            res.p99_ms.append(r["p99_us"] / 1000)
            res.cpu_us.append(cpu * 1e6 / max(r["requests"], 1))
            res.errors += int(r["errors"])
            res.others.append(others_cores(t0, t1, ours, secs))
            log(
                f"round {rnd + 1} {name:16s} {res.rps[-1]:8.0f} req/s  p50 {res.p50_ms[-1]:6.2f} ms"
                f"  p99 {res.p99_ms[-1]:6.2f} ms  proxy CPU {res.cpu_us[-1]:5.0f} us/req"
                + f"  other CPU {res.others[-1]:.2f} core"
                + (f"  errors: {error_kinds(r)}" if r["errors"] else "")
            )
            time.sleep(0.3)
    alive = proxy.poll() is None
    elapsed = time.monotonic() - t_start
    print(report(a, tls_version, results, alive, elapsed))


def report(a: argparse.Namespace, tls_version: str, results: dict[str, Result], alive: bool, elapsed: float) -> str:
    med = statistics.median
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in cpuinfo if x.startswith("model name")), "?")
    base = med(results["http keep-alive"].rps)
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} x {cpu}: {a.rounds} rounds interleaved, "
        f"medians; wrk -t1 -c{a.conns} {a.dur} s per run on CPU {a.client_cpu}, homeproxy serve and the nginx "
        f"backend on CPU {a.server_cpu}; GET {PATH}, {len(BODY)}-byte body; HTTPS with {tls_version} "
        f"(local CA, SNI {HOST}); run took {elapsed:.0f} s.",
        "",
        "| variant | req/s | spread | x http keep-alive | https/http | p50 ms | p99 ms | proxy CPU us/req "
        "| other CPU | errors |",
        "|---" * 10 + "|",
    ]
    for name, scheme, close in VARIANTS:
        r = results[name]
        rps = med(r.rps)
        plain = next(n for n, s, c in VARIANTS if s == "http" and c == close)
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{rps:,.0f}",
                    f"{100 * (max(r.rps) - min(r.rps)) / rps:.0f}%" if rps else "-",
                    f"{rps / base:.2f}" if base else "-",
                    f"{rps / med(results[plain].rps):.2f}" if scheme == "https" and med(results[plain].rps) else "-",
                    f"{med(r.p50_ms):.2f}",
                    f"{med(r.p99_ms):.2f}",
                    f"{med(r.cpu_us):,.0f}",
                    "/".join(f"{o:.2f}" for o in r.others),
                    str(r.errors),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "spread: (max - min) / median of req/s over the rounds. https/http: the HTTPS variant's req/s over "
        "the HTTP one's with the same connection mode. proxy CPU: CPU time of homeproxy per request "
        "(user + system, from /proc). other CPU: cores used in each round by processes that are not this "
        "benchmark's (near 0 for a clean run).",
        "keep-alive: wrk reuses its connections; close: `Connection: close`, a new TCP connection per "
        "request, and for HTTPS a new handshake (wrk offers its last session, homeproxy resumes it: "
        "TLS 1.3 PSK + ECDHE, no certificate). "
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
