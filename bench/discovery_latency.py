#!/usr/bin/env python3
"""Discovery latency as a user sees it, through the real TUI (issue 5's closing-note figures).

    .venv/bin/python bench/discovery_latency.py              # 5 rounds, ~30 s
    .venv/bin/python bench/discovery_latency.py --rounds 10

It runs the installed `homeproxy` console script in a private tmux server
(120×40) on the Discovery screen, with mDNS on 127.0.0.1 only, and a peer
`AsyncZeroconf` on 127.0.0.1 in this script playing a device on the LAN.
Each round:

1. **Appear -> shown.** The peer announces `Bench NAS <n>` (`_http._tcp`,
   pointing at a small aiohttp backend). Measured from just before the
   announcement to the first tmux capture (polled every 10 ms) that shows the
   name in the Discovery table.
2. **Saved -> `.local` resolves.** Enter on the service opens the pre-filled
   editor; `ctrl+s` saves it. Measured from sending `ctrl+s` to the peer's
   `AddressResolver` getting an address for `bench-nas-<n>.local` (asked
   every 50 ms). Then one request with that Host through the proxy must reach
   the backend (the site really serves).
3. The peer says goodbye for the service, so the next round's is the only row.

Medians and ranges are printed. These are latencies of one machine's loopback
(no Wi-Fi, no sleeping phones): read them as the software's share.
Needs: tmux. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

from aiohttp import web
from zeroconf import AddressResolver, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SOCKET = f"hp-discovery-bench-{os.getpid()}"

CONFIG = """[server]
listen = ["127.0.0.1"]
http_port = {port}

[logging]
access_log = false

[discovery]
interfaces = ["127.0.0.1"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def homeproxy_exe() -> str:
    exe = os.path.join(ROOT, ".venv", "bin", "homeproxy")
    return exe if os.path.exists(exe) else (shutil.which("homeproxy") or exe)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], check=True, capture_output=True, text=True, timeout=10).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", "hp")


def wait_screen(predicate: Callable[[str], bool], what: str, timeout: float = 20.0, step: float = 0.05) -> float:
    """Poll the pane until `predicate` holds; the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = screen()
        if predicate(text):
            return time.monotonic()
        time.sleep(step)
    raise RuntimeError(f"timed out waiting for {what}; the screen:\n{text}")


async def resolves(zc: AsyncZeroconf, host: str, deadline: float) -> float:
    """Ask for `host` every 50 ms until it has an address; the monotonic time it did."""
    while time.monotonic() < deadline:
        resolver = AddressResolver(host)
        if await resolver.async_request(zc.zeroconf, 50) and resolver.parsed_addresses():
            return time.monotonic()
    raise RuntimeError(f"{host} did not resolve")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="hp-discovery-bench-")
    port = free_port()
    config = os.path.join(work, "config.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(port=port))

    async def hello(request: web.BaseRequest) -> web.Response:
        return web.Response(text=f"bench backend saw {request.host}\n")

    runner = web.ServerRunner(web.Server(hello), handle_signals=False)
    await runner.setup()
    backend = web.TCPSite(runner, "127.0.0.1", 0)
    await backend.start()

    env = {"HOME": work, "XDG_CONFIG_HOME": work, "XDG_DATA_HOME": work, "XDG_STATE_HOME": work}
    command = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), homeproxy_exe(), "--config", config])
    tmux("-f", "/dev/null", "new-session", "-d", "-s", "hp", "-x", "120", "-y", "40", command)
    peer = AsyncZeroconf(interfaces=["127.0.0.1"])
    shown: list[float] = []
    resolved: list[float] = []
    try:
        wait_screen(lambda t: "serving" in t, "the TUI to start", timeout=30)
        tmux("send-keys", "-t", "hp", "5")
        wait_screen(lambda t: "Browsing" in t, "the Discovery screen")
        for n in range(1, args.rounds + 1):
            name, slug = f"Bench NAS {n}", f"bench-nas-{n}"
            info = ServiceInfo(
                "_http._tcp.local.",
                f"{name}._http._tcp.local.",
                addresses=[socket.inet_aton("127.0.0.1")],
                port=backend.port,
                properties={"path": "/"},
                server=f"{slug}-device.local.",
            )
            t0 = time.monotonic()
            # The coroutine sends the first announcement and returns the task that repeats it.
            announcing = await peer.async_register_service(info, cooperating_responders=True)
            t1 = await asyncio.to_thread(wait_screen, lambda t, name=name: name in t, name, 20.0, 0.01)
            shown.append(t1 - t0)
            await announcing

            tmux("send-keys", "-t", "hp", "Enter")
            await asyncio.to_thread(wait_screen, lambda t: "filled in for you" in t and "Valid" in t, "the editor")
            t2 = time.monotonic()
            tmux("send-keys", "-t", "hp", "C-s")
            t3 = await resolves(peer, f"{slug}.local.", t2 + 20)
            resolved.append(t3 - t2)

            req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": f"{slug}.local"})
            body = await asyncio.to_thread(lambda req=req: urllib.request.urlopen(req, timeout=10).read())
            assert f"{slug}.local".encode() in body, body
            print(
                f"round {n}: appeared -> shown {1000 * (t1 - t0):7.1f} ms; saved -> {slug}.local resolves "
                f"{1000 * (t3 - t2):7.1f} ms; a request with that Host reached the backend",
                file=sys.stderr,
            )
            await peer.async_unregister_service(info)
            await asyncio.to_thread(wait_screen, lambda t, name=name: name not in t, f"{name} gone")
    finally:
        await peer.async_close()
        with_quit = subprocess.run(["tmux", "-L", SOCKET, "send-keys", "-t", "hp", "q"], capture_output=True)
        del with_quit
        time.sleep(1)
        subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True)
        await runner.cleanup()
        if not args.keep_tmp:
            shutil.rmtree(work, ignore_errors=True)

    def line(label: str, xs: list[float]) -> str:
        ms = [1000 * x for x in xs]
        return f"| {label} | {statistics.median(ms):.0f} | {min(ms):.0f}–{max(ms):.0f} | {len(ms)} |"

    print("| what | median ms | range ms | rounds |")
    print("|---|---|---|---|")
    print(line("service announced -> shown in the Discovery table (tmux capture)", shown))
    print(line("site saved (ctrl+s) -> its .local name resolves at a peer", resolved))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
