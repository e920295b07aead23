"""`homeproxy demo`: live traffic in one command, on loopback only.

`Demo` (`lifecycle.py`) starts a few sample backends (`backends.py`: aiohttp
apps on 127.0.0.1, ephemeral ports) and writes a config for them into a
temporary directory (`config.py`): a Home-Assistant-like API with a WebSocket,
a Plex-like media server with a slow transcode endpoint, a Nextcloud-like site
with the cache and compression on, and a Grafana-like site behind Basic auth
(user `demo`, password `demo`). It starts a `Runtime` on that config (listening
on 127.0.0.1 only) and a gentle traffic generator (`traffic.py`) that talks to
the proxy on 127.0.0.1: a few requests a second, random-ish paths, now and then
a slow one, a 404, a 500, a WebSocket or a wrong password, so every screen has
something to show. The generator pretends to be a few LAN clients through
X-Forwarded-For, which the demo config trusts from 127.0.0.1 only.

The backends and the generator share one asyncio loop in one background
thread; `stop()` ends them, stops the runtime and removes the directory.
`DemoApp` (`app.py`) is the TUI around a demo (the CLI's `homeproxy demo`); the
demo itself runs without it (the tests do).
"""

from __future__ import annotations

from homeproxy.demo.app import DemoApp, run_demo, welcome
from homeproxy.demo.config import PASSWORD, SITES, USER, demo_config, host_of
from homeproxy.demo.lifecycle import Demo, free_port
from homeproxy.demo.traffic import CLIENTS, DEFAULT_RATE, Traffic
from homeproxy.tui.app import HomeproxyApp

__all__ = [
    "CLIENTS",
    "DEFAULT_RATE",
    "PASSWORD",
    "SITES",
    "USER",
    "Demo",
    "DemoApp",
    # The plain app, for a demo shown without the welcome toast (docs/screenshots.py).
    "HomeproxyApp",
    "Traffic",
    "demo_config",
    "free_port",
    "host_of",
    "run_demo",
    "welcome",
]
