"""The engine facade: the only part of the engine that the TUI and the CLI import."""

from homeproxy.engine.accesslog import AccessLog
from homeproxy.engine.engine import Engine
from homeproxy.engine.events import Consumer, EventBus, ProblemReported, RequestCompleted, Subscription
from homeproxy.engine.health_types import UpstreamHealthChanged, UpstreamStatus
from homeproxy.engine.listeners import BindError
from homeproxy.engine.stats import TOTAL, SiteStats, Stats, UpstreamStats

__all__ = [
    "TOTAL",
    "AccessLog",
    "BindError",
    "Consumer",
    "Engine",
    "EventBus",
    "ProblemReported",
    "RequestCompleted",
    "SiteStats",
    "Stats",
    "Subscription",
    "UpstreamHealthChanged",
    "UpstreamStats",
    "UpstreamStatus",
]
