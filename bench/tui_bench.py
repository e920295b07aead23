#!/usr/bin/env python3
"""TUI benchmark: proxy requests/s with the Traffic screen open and following,
beside `homeproxy serve` headless, in one run (issue 4's target: at least 0.85×).

    .venv/bin/python bench/tui_bench.py                  # 3 rounds, ~2 minutes
    .venv/bin/python bench/tui_bench.py --rounds 1 --duration 5

Both modes run the real `homeproxy` console script from this project's .venv
with the same config (one site in front of a static nginx backend serving a
100-byte file; access log off). The TUI runs in its own tmux server (a private
socket, `tmux -L`), 120×40, switched to Traffic with the key `3`; its stderr is
the terminal, where Textual draws. `serve` logs to a file.

Pinned like ../shared/bench/run.py: wrk (`-t1 -c50`) on CPU 0, homeproxy and
nginx on CPU 1; tmux (the terminal, as a user's terminal emulator would be) and
this script on CPU 0. Rounds are interleaved (the order alternates), medians
reported. For each TUI run the script also reports the TUI process's CPU, and
whether the screen kept up: during the run it captures the pane twice and reads
the time of the newest row (it must advance and be less than 2 s old), and after
the run it sends one request with a unique path that must show as the newest
row. Traffic goes to 127.0.0.1 only. Everything started here (nginx, serve,
the tmux server, wrk) is tracked and stopped at exit, also on Ctrl-C / SIGTERM;
the temp directory is removed unless --keep-tmp.
Needs: wrk, taskset, tmux, nginx.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import procs
from procs import cleanup, exit_on, free_port, get, log, spawn, stop, temp_dir

GRACE = 5.0
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED_CONF = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench", "conf"))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
SMALL_BODY = b"small response from the benchmark backend; exactly one hundred bytes long, no more, no less, thanks\n"
HOST = "app.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TMUX_SOCKET = f"hp-tui-bench-{os.getpid()}"
"""The private tmux server's socket name (`tmux -L`): this run's own server, killed at exit."""
ROW_TIME = re.compile(r"^\s*(\d\d):(\d\d):(\d\d)\.(\d{3}) ")

CONFIG = """[server]
listen = ["127.0.0.1"]
http_port = {port}

[logging]
access_log = false
level = "warning"

[[sites]]
name = "app"
hosts = ["{host}"]
upstreams = ["http://127.0.0.1:{backend}"]
"""


# --- processes -----------------------------------------------------------------------------


def start_nginx(workdir: str, cpu: int) -> int:
    return procs.start_nginx(workdir, cpu, small_body=SMALL_BODY, conf_dir=SHARED_CONF)


def homeproxy_exe() -> str:
    exe = os.path.join(VENV_BIN, "homeproxy")
    return exe if os.path.exists(exe) else (shutil.which("homeproxy") or exe)


def private_env(d: str) -> dict[str, str]:
    """Every platformdirs location inside the run's temp directory."""
    return {"HOME": d, "XDG_CONFIG_HOME": d, "XDG_DATA_HOME": d, "XDG_STATE_HOME": d, "XDG_CACHE_HOME": d}


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def wait_port(port: int, alive: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll GET /small through the proxy until it answers 200."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not alive():
            break
        try:
            status, _, _ = get(port, "/small", HOST, timeout=5)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready on port {port} ({last})")


class Tui:
    """`homeproxy` (the TUI) in a private tmux server, 120×40."""

    def __init__(self, workdir: str, config: str, port: int, cpu: int, tmux_cpu: int) -> None:
        self.socket = TMUX_SOCKET
        self.session = "tui"
        self.port = port
        env = private_env(os.path.dirname(config))
        command = shlex.join(
            ["exec", "taskset", "-c", str(cpu), "env", *(f"{k}={v}" for k, v in env.items())]
            + [homeproxy_exe(), "--config", config]
        )
        # The tmux server (the terminal) starts from this command and stays on tmux_cpu.
        self._server = spawn(
            "tmux server",
            ["taskset", "-c", str(tmux_cpu), *self._tmux("-f", "/dev/null", "new-session", "-d")]
            + ["-s", self.session, "-x", "120", "-y", "40", command],
            log_to=os.path.join(workdir, "tmux.log"),
        )
        self._server.wait(timeout=10)
        self.pid = int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").strip())
        wait_port(port, self.alive, "homeproxy (TUI)")
        self.wait_screen(lambda text: "Dashboard" in text or "homeproxy" in text, "the TUI to draw")
        self.tmux("send-keys", "-t", self.session, "3")
        self.wait_screen(lambda text: "HOST+PATH" in text, "the Traffic screen")

    def _tmux(self, *args: str) -> list[str]:
        return ["tmux", "-L", self.socket, *args]

    def tmux(self, *args: str) -> str:
        return subprocess.run(self._tmux(*args), check=True, capture_output=True, text=True, timeout=10).stdout

    def alive(self) -> bool:
        return os.path.exists(f"/proc/{self.pid}")

    def capture(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def wait_screen(self, predicate: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.capture()
            if predicate(text):
                return text
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}; the screen:\n{text}")

    def newest_row(self, text: str) -> str:
        rows = [line for line in text.splitlines() if ROW_TIME.match(line)]
        return rows[-1] if rows else ""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.alive():
                self.tmux("send-keys", "-t", self.session, "q")
                deadline = time.monotonic() + 10
                while self.alive() and time.monotonic() < deadline:
                    time.sleep(0.1)
        kill_tmux_server()
        if self.alive():  # our own child of our own tmux server
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        stop("tmux server", self._server, grace=GRACE)


def kill_tmux_server() -> None:
    """Stop this run's own tmux server (and the TUI in it), if it is still there."""
    with contextlib.suppress(Exception):
        subprocess.run(["tmux", "-L", TMUX_SOCKET, "kill-server"], capture_output=True, timeout=10)


def row_age(row: str) -> float | None:
    """Seconds between a row's HH:MM:SS.mmm (local time) and now."""
    m = ROW_TIME.match(row)
    if not m:
        return None
    h, mi, s, ms = (int(g) for g in m.groups())
    lt = time.localtime()
    now = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + (time.time() % 1)
    return (now - (h * 3600 + mi * 60 + s + ms / 1000)) % 86400


# --- wrk -----------------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu: float
    """Cores used by the homeproxy process during the measurement."""
    screen: str = ""
    """TUI only: what the screen showed (newest row's age at two captures, the end marker)."""
    kept_up: bool | None = None


@dataclass
class Mode:
    name: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(port: int, seconds: float, cpu: int) -> tuple[subprocess.Popen[bytes], float]:
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", "-c50", f"-d{round(seconds)}s", "--latency", "--timeout", "5s"]
    argv += ["-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/small"]
    return spawn("wrk", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), time.monotonic()


def wrk_result(p: subprocess.Popen[bytes], seconds: float) -> tuple[float, float, float, int]:
    out, _ = p.communicate(timeout=seconds + 30)
    stop("wrk", p, grace=GRACE)
    text = out.decode(errors="replace")
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise RuntimeError(f"wrk gave no result:\n{text}")
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non2xx.group(1)) if non2xx else 0
    return float(m.group(1)), _ms(p50.group(1)) if p50 else 0.0, _ms(p99.group(1)) if p99 else 0.0, errors


def measure(port: int, pid: int, args: argparse.Namespace, tui: Tui | None, label: str) -> Run:
    # Warm up (connections, the TUI's first screens of rows), then measure.
    p, _ = wrk(port, args.warmup, args.client_cpu)
    wrk_result(p, args.warmup)
    ticks0, t0 = cpu_ticks(pid), time.monotonic()
    p, started = wrk(port, args.duration, args.client_cpu)
    ages: list[float | None] = []
    rows: list[str] = []
    if tui is not None:
        for at in (0.5, 0.9):
            time.sleep(max(0.0, started + args.duration * at - time.monotonic()))
            row = tui.newest_row(tui.capture())
            rows.append(row)
            ages.append(row_age(row))
    rps, p50, p99, errors = wrk_result(p, args.duration)
    cpu = (cpu_ticks(pid) - ticks0) / CLK_TCK / (time.monotonic() - t0)
    run = Run(rps, p50, p99, errors, cpu)
    if tui is not None:
        marker = f"/tui-bench-end-{label}"
        get(port, marker, HOST, timeout=5)
        try:
            tui.wait_screen(lambda text: marker in tui.newest_row(text), "the end marker", timeout=3)
            shown = True
        except RuntimeError:
            shown = False
        advanced = len(rows) == 2 and rows[0] != rows[1]
        fresh = all(a is not None and a < 2.0 for a in ages)
        run.kept_up = shown and advanced and fresh
        run.screen = (
            "newest row "
            + " / ".join(f"{a:.2f} s old" if a is not None else "missing" for a in ages)
            + f", end marker {'shown' if shown else 'NOT shown'}"
        )
    return run


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    for tool in ("wrk", "taskset", "tmux", "nginx"):
        if not shutil.which(tool):
            print(f"needs {tool}", file=sys.stderr)
            return 2
    exit_on(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    atexit.register(cleanup, grace=GRACE)
    atexit.register(kill_tmux_server)
    # This script (capture-pane, parsing) stays off the proxy's CPU.
    os.sched_setaffinity(0, {args.client_cpu})
    began = time.monotonic()
    workdir = temp_dir("hp-tui-bench-", keep=args.keep_tmp)
    modes = {"serve": Mode("homeproxy serve (headless)"), "tui": Mode("homeproxy TUI, Traffic following")}
    try:
        backend = start_nginx(workdir, args.server_cpu)
        for r in range(1, args.rounds + 1):
            order = ("tui", "serve") if r % 2 else ("serve", "tui")
            for mode in order:
                d = os.path.join(workdir, f"{mode}-{r}")
                os.makedirs(d)
                port = free_port()
                config = os.path.join(d, "homeproxy.toml")
                with open(config, "w") as f:
                    f.write(CONFIG.format(port=port, host=HOST, backend=backend))
                if mode == "tui":
                    tui = Tui(workdir, config, port, args.server_cpu, args.client_cpu)
                    try:
                        run = measure(port, tui.pid, args, tui, str(r))
                    finally:
                        tui.close()
                else:
                    p = spawn(
                        "homeproxy serve",
                        ["taskset", "-c", str(args.server_cpu), homeproxy_exe(), "serve", "--config", config],
                        stdout=subprocess.DEVNULL,
                        log_to=os.path.join(d, "stderr.log"),
                        env=dict(os.environ, **private_env(d)),
                    )
                    try:
                        wait_port(port, lambda p=p: p.poll() is None, "homeproxy serve")
                        run = measure(port, p.pid, args, None, str(r))
                    finally:
                        stop("homeproxy serve", p, grace=GRACE)
                modes[mode].runs.append(run)
                extra = f", {run.screen}" if run.screen else ""
                log(
                    f"round {r} {mode:5}: {run.rps:8,.0f} req/s  p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms  "
                    f"errors {run.errors}  CPU {run.cpu:.2f} cores{extra}"
                )
    finally:
        cleanup(grace=GRACE)
    report(modes, args, time.monotonic() - began)
    return 0


def report(modes: dict[str, Mode], args: argparse.Namespace, took: float) -> None:
    serve, tui = modes["serve"], modes["tui"]
    base = serve.median("rps")
    print(
        f"wrk -t1 -c50 on CPU {args.client_cpu}; homeproxy and nginx on CPU {args.server_cpu}; "
        f"{args.rounds} round(s) interleaved, {args.duration:g} s each after {args.warmup:g} s warm-up; "
        f"medians; run took {took:.0f} s.\n"
    )
    print("| mode | req/s (median) | ×serve | runs | p50 ms | p99 ms | errors | CPU (cores) | screen kept up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in (serve, tui):
        runs = ", ".join(f"{r.rps:,.0f}" for r in mode.runs)
        kept = "–" if mode is serve else ("yes" if all(r.kept_up for r in mode.runs) else "NO")
        print(
            f"| {mode.name} | {mode.median('rps'):,.0f} | {mode.median('rps') / base:.2f} | {runs} | "
            f"{mode.median('p50_ms'):.2f} | {mode.median('p99_ms'):.2f} | {sum(r.errors for r in mode.runs)} | "
            f"{mode.median('cpu'):.2f} | {kept} |"
        )
    print()
    for i, r in enumerate(tui.runs, 1):
        print(f"- TUI round {i}: {r.screen}")
    ratio = tui.median("rps") / base
    # Each round's TUI and serve runs are next to each other in time, so their ratio is the
    # least sensitive to a machine whose speed drifts during the run.
    paired = [t.rps / h.rps for t, h in zip(tui.runs, serve.runs, strict=True)]
    print(f"\nPer-round TUI/serve: {', '.join(f'{r:.2f}' for r in paired)} (median {statistics.median(paired):.2f})")
    print(f"TUI / headless (medians): {ratio:.2f}× (target: at least 0.85×): {'met' if ratio >= 0.85 else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
