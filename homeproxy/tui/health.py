"""`HealthBook`: what the TUI knows of each site upstream's health, for dots, toasts and the detail.

Seeded from `Engine.upstream_health()` and read again from it when health events arrive
and once a second while a screen shows it (the engine tells no event when an upstream
goes from "unchecked" to "up", or from "cooling" back to "up" on its own), so the
book always agrees with the engine. `record` applies events at once, so that a dot turns
red in the same frame as the toast, even before the next read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from homeproxy.engine import Engine, UpstreamHealthChanged, UpstreamStatus

Key = tuple[str, str]
"""(site name, upstream URL as configured)."""


class HealthBook:
    """Each (site, upstream) pair's state: "up", "down", "cooling" or "unchecked"."""

    def __init__(self) -> None:
        self.up: dict[Key, bool] = {}
        """Whether each upstream takes traffic."""
        self._states: dict[Key, str] = {}
        self._statuses: tuple[UpstreamStatus, ...] = ()

    def refresh(self, engine: Engine | None) -> None:
        """Read every upstream's health from the engine (nothing if it is not running)."""
        if engine is None or not engine.running:
            return
        self.seed(engine.upstream_health())

    def seed(self, statuses: Sequence[UpstreamStatus]) -> None:
        self._statuses = tuple(statuses)
        self.up = {(s.site, s.upstream): s.up for s in statuses}
        self._states = {(s.site, s.upstream): s.state for s in statuses}

    def record(self, events: Iterable[UpstreamHealthChanged]) -> None:
        """Apply health changes (the next `refresh` tells "down" from "cooling")."""
        for ev in events:
            key = (ev.site, ev.upstream)
            self.up[key] = ev.up
            self._states[key] = "up" if ev.up else "down"

    def state(self, site: str, upstream: str) -> str:
        """The upstream's state, or "" if the engine has not told (a disabled site, no engine)."""
        return self._states.get((site, upstream), "")

    def statuses(self, site: str) -> list[UpstreamStatus]:
        """The site's upstreams as the engine last told, its own first, then its routes'."""
        return [s for s in self._statuses if s.site == site]
