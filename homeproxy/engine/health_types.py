"""What the engine tells about its upstreams' health: the event and the snapshot.

`UpstreamHealthChanged` is published on the `EventBus` each time an upstream goes down or
comes back; `Engine.upstream_health()` gives an `UpstreamStatus` per upstream of every
enabled site (its routes' included), for the TUI's upstream detail and `/metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UpstreamHealthChanged:
    """An upstream of a site went down or came back."""

    time: float
    """Wall-clock time of the change (seconds since the epoch)."""
    site: str
    upstream: str
    """The upstream's URL as configured (`http://10.0.0.5:8123`, `mdns://...`)."""
    up: bool
    reason: str
    """Why, in words: "3 failed checks in a row: connection refused", "2 passing checks",
    "3 failures in 30 s: upstream unreachable", "cool-down over"."""


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """One upstream of one site (or of one of its routes), now."""

    site: str
    upstream: str
    """The upstream's URL as configured."""
    route: str
    """The route's path prefix, or "" for the site's own upstreams."""
    backup: bool
    weight: int
    max_conns: int
    up: bool
    """Takes traffic (before the first check an upstream counts as up)."""
    state: str
    """"up", "down" (failed its active checks), "cooling" (taken out by failed requests
    until `until`), or "unchecked" (up, no active check has run yet)."""
    reason: str
    """Why it is in this state ("" while up and nothing happened)."""
    since: float
    """Wall-clock time of the last change of `up` (the engine's start if none)."""
    until: float
    """With state "cooling": the wall-clock time it gets traffic again; else 0."""
    checked: float
    """Wall-clock time of the last active check (0: none yet, or active checks off)."""
    check_ok: bool
    check_detail: str
    """The last check's outcome: "200 in 3 ms", "connection refused", "status 500 (expected 200-399)"."""
    check_latency: float
    """Seconds the last check took."""
    failures: int
    """Failed requests (and checks) counted in the passive window now."""
    in_flight: int
    """This site's requests to it in flight now (what `max_conns` counts)."""
