"""Prometheus metrics: `RequestMetrics` (fed by the event bus) and `MetricsServer` (the admin listener).

Beside the engine, not inside it: the engine knows nothing of metrics; `Runtime`
subscribes `RequestMetrics.record` to the bus and binds the server.
"""

from homeproxy.metrics.collector import OTHER, RequestMetrics
from homeproxy.metrics.server import MetricsServer

__all__ = ["OTHER", "MetricsServer", "RequestMetrics"]
