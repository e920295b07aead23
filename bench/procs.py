"""Process bookkeeping shared by the benchmark scripts in bench/ (standard library only).

This module owns what cache_bench.py and compression_bench.py used to carry a copy
each of:

- the registry of the processes a benchmark starts (`PROCS`): spawn() starts each in
  its own process group and tracks it by pid; stop() ends the group (SIGTERM, then
  SIGKILL after a grace period) and forgets it;
- the end of a run: cleanup() stops whatever is still tracked, newest first, and
  removes the run's temp directory made by temp_dir() (unless it is to be kept);
  exit_on() turns signals such as SIGINT and SIGTERM into SystemExit, so that
  cleanup runs from atexit or a `finally` on Ctrl-C and kill too;
- the small helpers for the servers under test: log() (progress on stderr),
  free_port() on 127.0.0.1, get() (one HTTP GET to 127.0.0.1) and wait_ready();
- CPU accounting from /proc: cpu_seconds() of one process, and all_cpu_ticks() /
  others_cores() for the CPU that other work on the machine used during a run.

The values that differ between the scripts (grace periods, timeouts) are
parameters without defaults, given at each call site. The scripts run as
`python bench/<script>.py`, which puts bench/ first on sys.path, so they import
this module as plain `procs`.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

#: The processes started by spawn() and not stopped yet: (label, process), oldest first.
PROCS: list[tuple[str, subprocess.Popen[bytes]]] = []

_workdir: str | None = None
_keep_tmp = False
_cleaned = False


def log(msg: str) -> None:
    """Print a progress line on stderr (stdout is for the results)."""
    print(msg, file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------


def spawn(
    label: str, argv: list[str], *, log_to: str | os.PathLike[str] | None = None, **kw: Any
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group, stdin from /dev/null, and track it as `label`.

    Its stderr goes to the file `log_to` (or to /dev/null) unless `stderr` is one of `kw`;
    the other keyword arguments go to subprocess.Popen.
    """
    kw.setdefault("stdin", subprocess.DEVNULL)
    p: subprocess.Popen[bytes]
    if "stderr" in kw:
        if log_to is not None:
            raise TypeError("spawn() takes log_to or stderr, not both")
        p = subprocess.Popen(argv, start_new_session=True, **kw)
    else:
        with open(log_to or os.devnull, "wb") as err:
            p = subprocess.Popen(argv, start_new_session=True, stderr=err, **kw)
    PROCS.append((label, p))
    return p


def _terminate(label: str, p: subprocess.Popen[bytes], grace: float) -> None:
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)  # its own group (start_new_session): it and its children
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"  {label} (pid {p.pid}) ignored SIGTERM; SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=5)


def stop(label: str, p: subprocess.Popen[bytes], *, grace: float) -> None:
    """Stop `p` and its process group (SIGTERM; SIGKILL after `grace` s), then stop tracking it."""
    _terminate(label, p, grace)
    with contextlib.suppress(ValueError):  # already forgotten
        PROCS.remove((label, p))


def temp_dir(prefix: str, *, keep: bool) -> str:
    """Make the run's temp directory; cleanup() removes it unless `keep`.

    Mode 0755: nginx workers, which may run as nobody, read files in it.
    """
    global _workdir, _keep_tmp
    _keep_tmp = keep
    _workdir = tempfile.mkdtemp(prefix=prefix)
    os.chmod(_workdir, 0o755)
    return _workdir


def cleanup(*, grace: float) -> None:
    """Stop every tracked process, newest first, and remove the temp directory. Only the first call acts."""
    global _cleaned
    if _cleaned:
        return
    _cleaned = True
    while PROCS:
        label, p = PROCS.pop()
        try:
            _terminate(label, p, grace)
        except Exception as e:  # keep going: stop the others
            log(f"  could not stop {label} (pid {p.pid}): {e}")
    if _workdir is not None and os.path.isdir(_workdir):
        if _keep_tmp:
            log(f"temp dir kept: {_workdir}")
        else:
            shutil.rmtree(_workdir, ignore_errors=True)


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_on(*signums: signal.Signals) -> None:
    """Make these signals raise SystemExit(128 + signum), so that atexit handlers and `finally` run."""
    for signum in signums:
        signal.signal(signum, _on_signal)


# --- the servers under test -----------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(
    port: int, path: str, host: str, *, timeout: float, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET http://127.0.0.1:`port``path` with this Host (and `headers`): status, headers (names lower-case), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def wait_ready(
    port: int,
    path: str,
    host: str,
    proc: subprocess.Popen[bytes],
    what: str,
    *,
    timeout: float,
    request_timeout: float,
) -> None:
    """Poll GET `path` until it answers 200; RuntimeError if `proc` exits or `timeout` s pass first."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            status, _, _ = get(port, path, host, timeout=request_timeout)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready on port {port} (exit={proc.poll()}, last={last})")


def start_nginx(workdir: str, cpu: int, *, small_body: bytes, conf_dir: str) -> int:
    """The harness's backend nginx (conf_dir/backend-nginx.conf) serving `/small`, pinned to `cpu`.
    Returns its port once `/small` answers."""
    d = os.path.join(workdir, "nginx")
    www = os.path.join(workdir, "www")
    os.makedirs(www, exist_ok=True)
    for sub in ("tmp_body", "tmp_proxy", "tmp_fastcgi", "tmp_uwsgi", "tmp_scgi"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(small_body)
    os.chmod(www, 0o755)
    os.chmod(os.path.join(www, "small"), 0o644)
    port = free_port()
    with open(os.path.join(conf_dir, "backend-nginx.conf")) as f:
        conf = f.read()
    for k, v in {"DIR": d, "PORT": port, "WWW": www}.items():
        conf = conf.replace(f"@@{k}@@", str(v))
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = spawn(
        "nginx",
        ["taskset", "-c", str(cpu), "nginx", "-p", d, "-c", path, "-e", os.path.join(d, "error.log")],
        stdout=subprocess.DEVNULL,
        log_to=os.path.join(d, "stderr.log"),
    )
    wait_ready(port, "/small", "x", p, "nginx backend", timeout=30, request_timeout=10)
    return port


# --- CPU accounting (from /proc) ----------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its threads."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def all_cpu_ticks() -> dict[int, int]:
    """CPU ticks (user + system) of every process now."""
    out: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                out[int(d)] = int(rest[11]) + int(rest[12])
            except (OSError, IndexError, ValueError):
                pass
    return out


def others_cores(before: dict[int, int], after: dict[int, int], ours: set[int], secs: float) -> float:
    """Cores used by processes that are not ours between two samples (other work on the machine)."""
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items() if pid not in ours)
    return ticks / CLK_TCK / secs
