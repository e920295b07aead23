"""The upstream side of a site in the configuration model: each upstream, the health checks.

Part of the model (`config/model.py` re-exports every name): frozen dataclasses with a
docstring under each field, written up in `docs/configuration.md`.
"""

from __future__ import annotations

from dataclasses import dataclass

BALANCE_POLICIES = ("round_robin", "weighted", "least_conn", "ip_hash", "cookie", "first", "random_two")

#: The cookie that the `cookie` policy sets to keep a browser on one upstream.
STICKY_COOKIE = "homeproxy_upstream"


@dataclass(frozen=True, slots=True)
class Upstream:
    """One server behind a site or route: `"http://10.0.0.5:8123"`, or a table
    `{ url = "http://10.0.0.6:8123", backup = true }`."""

    url: str
    """`http://`, `https://` or `mdns://` URL of the server (a path is prefixed to every request)."""

    weight: int = 1
    """With `balance = "weighted"`: its share of the requests (an upstream with weight 3 gets
    three times the requests of one with weight 1). 1 to 1000."""

    backup: bool = False
    """Used only while every upstream that is not a backup is down (or refusing connections)."""

    max_conns: int = 0
    """At most this many requests in flight to it at once (0: no limit). Over it, a request
    waits briefly for a free slot, tries the next upstream, then gets 503 with Retry-After."""

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active health checks: homeproxy asks each upstream for `path` every `interval`
    (`health = true` for the defaults, or `health = { path = "/healthz", interval = "5s" }`)."""

    path: str = "/"
    """The path (and query) asked for, with the site's first host name as Host."""

    interval: float = 10.0
    """Seconds between two checks of one upstream."""

    timeout: float = 5.0
    """Seconds a check may take (connect and answer); longer counts as a failure."""

    status: tuple[int, int] = (200, 399)
    """The status codes that pass, as a range (`status = "200-399"`, or one code `status = 204`)."""

    body: str = ""
    """If set, the answer's body (its first 64 KiB) must contain this text to pass."""

    passes: int = 2
    """Consecutive passing checks that bring a down upstream back."""

    fails: int = 3
    """Consecutive failing checks that take an up upstream out."""


@dataclass(frozen=True, slots=True)
class PassiveHealth:
    """Passive health: real requests that fail count against their upstream, no probe needed
    (`passive_health = { fails = 3, window = "30s", cooldown = "30s" }`, or `false` to turn it off)."""

    enabled: bool = True

    fails: int = 3
    """Failures (connection refused or reset, a timeout, a 5xx answer when `status_5xx` is on)
    within `window` that take an upstream out."""

    window: float = 30.0
    """Seconds over which failures are counted."""

    cooldown: float = 30.0
    """Seconds an upstream stays out before it gets traffic again (with active checks on,
    a passing check brings it back sooner)."""

    status_5xx: bool = False
    """Count a 502, 503 or 504 answer from the upstream as a failure (other 5xx are the app's own errors)."""
