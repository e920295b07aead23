"""Regenerate the README's screenshots (assets/dashboard.svg, assets/traffic.svg).

    .venv/bin/python docs/screenshots.py

Runs `homeproxy demo` (sample backends and traffic on loopback, a temporary
config) for a while, then saves Textual's own SVG screenshots of the Dashboard
and Traffic screens at 120x36 with the welcome toast dismissed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from homeproxy.demo import Demo, HomeproxyApp

ASSETS = Path(__file__).resolve().parents[1] / "assets"


async def main() -> None:
    with Demo(rate=12, seed=7) as demo:
        assert demo.runtime is not None
        app = HomeproxyApp(demo.runtime)
        async with app.run_test(size=(120, 36)) as pilot:
            await asyncio.sleep(40)  # a few dozen requests, so the charts have a shape
            app.clear_notifications()
            await pilot.pause(1.5)
            app.save_screenshot(str(ASSETS / "dashboard.svg"))
            await pilot.press("3")
            await pilot.pause(1.5)
            app.save_screenshot(str(ASSETS / "traffic.svg"))


if __name__ == "__main__":
    asyncio.run(main())
