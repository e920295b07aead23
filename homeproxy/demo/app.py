"""The TUI around a running demo (`DemoApp`, with its welcome toast) and `run_demo`, the CLI's `homeproxy demo`."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from rich.text import Text

from homeproxy.demo.config import PASSWORD, USER
from homeproxy.demo.lifecycle import Demo
from homeproxy.demo.traffic import DEFAULT_RATE
from homeproxy.tui.app import HomeproxyApp


def welcome(demo: Demo) -> Text:
    """What the demo says first (printed, and in the TUI's first toast)."""
    text = Text.assemble(("homeproxy demo", "bold"), f": the proxy listens on {demo.proxy_url} (loopback only).\n")
    for site, url in demo.site_urls().items():
        text.append(f"  {site:<14} {url}")
        if site == "grafana":
            text.append(f"  (user {USER}, password {PASSWORD})", style="bold")
        text.append("\n")
    text.append("Sample backends and a traffic generator run until you quit; then everything is removed.")
    return text


class DemoApp(HomeproxyApp):
    """The TUI around a running `Demo`, with a welcome toast that has the demo password."""

    TITLE = "homeproxy demo"
    # Textual finds CSS_PATH beside the module of the class that uses it: point at the app's own.
    CSS_PATH = str(Path(inspect.getfile(HomeproxyApp)).with_name("app.tcss"))

    def __init__(self, demo: Demo) -> None:
        if demo.runtime is None:
            raise RuntimeError("start the demo first")
        super().__init__(demo.runtime)
        self.demo = demo

    def on_mount(self) -> None:
        # HomeproxyApp's own on_mount runs too (Textual calls the handler of every class).
        self.notify(welcome(self.demo).markup, title="Welcome to the demo", timeout=30)


def run_demo(rate: float = DEFAULT_RATE) -> int:
    """`homeproxy demo`: start the demo, open the TUI, stop and clean up on quit."""
    with Demo(rate=rate) as demo:
        assert demo.directory is not None
        # The screen belongs to the TUI: the process log goes to the demo's directory.
        handler = logging.FileHandler(demo.directory / "homeproxy.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            print(welcome(demo).plain)
            DemoApp(demo).run()
        finally:
            root.removeHandler(handler)
            handler.close()
    print("homeproxy demo: stopped, and its temporary files are removed.")
    return 0
