"""`Services`: what the screens use of the running proxy, handed to each screen when it is built.

The app builds one `Services` around its `Runtime` and gives it to every screen, so a screen
never reaches for the app class (and can be built and tested alone): the config store, the
engine (an operation's target, never a config change's), the stats, the bounded request buffer,
the upstream health book and discovery's directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from homeproxy.config import ConfigStore
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.engine import Engine, Stats
from homeproxy.tui.bridge import RequestBuffer
from homeproxy.tui.health import HealthBook

if TYPE_CHECKING:
    from homeproxy.discovery.runner import Discovery
    from homeproxy.runtime import Runtime


@dataclass(frozen=True, slots=True, eq=False)
class Services:
    """The running proxy as the screens see it."""

    runtime: Runtime = field(repr=False)
    """Where the engine and discovery come from (they start after the app is built)."""
    requests: RequestBuffer
    """The bounded buffer of recent requests the Traffic screen shows."""
    health: HealthBook
    """Each site upstream's health, as the engine tells it."""
    unsaved: dict[str, str] = field(default_factory=dict)
    """What has unsaved work (e.g. an open editor), and a description of it; quitting asks first."""

    @property
    def store(self) -> ConfigStore:
        """The config, and the one way to change it."""
        return self.runtime.store

    @property
    def engine(self) -> Engine | None:
        """The engine (None until the runtime has started it)."""
        return self.runtime.engine

    @property
    def stats(self) -> Stats:
        return self.runtime.stats

    @property
    def directory(self) -> ServiceDirectory:
        """The services discovery has found on the LAN."""
        return self.runtime.directory

    @property
    def discovery(self) -> Discovery | None:
        """mDNS discovery (None when it is off)."""
        return self.runtime.discovery

    @property
    def config_path(self) -> Path:
        return self.runtime.config_path

    @property
    def data_dir(self) -> Path:
        return self.runtime.data_dir

    @property
    def clock(self) -> Callable[[], float]:
        return self.runtime.clock

    def upstream_state(self, site: str, url: str) -> str:
        """The health of `site`'s upstream `url`: "up", "down", "cooling", "unchecked", or "" if unknown."""
        return self.health.state(site, url)

    def refresh_health(self) -> None:
        """Bring the health book up to date with the engine's upstreams."""
        self.health.refresh(self.runtime.engine)
