"""Prometheus metrics: `RequestMetrics` (fed by the event bus, `collector.py`) and `MetricsServer`
(the admin listener, `server.py`).

Beside the engine, not inside it: the engine knows nothing of metrics; `Runtime`
subscribes `RequestMetrics.record` to the bus and binds the server. Nothing here is
imported until `[metrics] listen` asks for it (prometheus-client costs a few MiB of memory).
"""
