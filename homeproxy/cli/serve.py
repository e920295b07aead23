"""`homeproxy serve`: the proxy headless, logging to stderr; SIGTERM/SIGINT drain and exit, SIGHUP reloads."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from homeproxy import __version__
from homeproxy.config import ConfigChanged, ConfigEvent, ConfigInvalid, ConfigRejected, ConfigStore

log = logging.getLogger("homeproxy")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def cmd_serve(path: Path, level: str | None) -> int:
    """Run headless until SIGTERM/SIGINT; SIGHUP reloads."""
    from homeproxy.runtime import Runtime

    _setup_logging(level or _peek_level(path))
    runtime = Runtime(path, log_level=level)
    try:
        runtime.start()
    except ConfigInvalid as e:
        for err in e.errors:
            log.error("%s", err)
        log.error("not starting: fix the config (`homeproxy check --config %s`)", path)
        return 1
    except OSError as e:
        log.error("cannot read or create %s: %s", path, e.strerror or e)
        return 1
    assert runtime.engine is not None
    if runtime.store.created:
        log.info("no config file found: wrote a commented default to %s", path)
    if runtime.engine.listen_errors:
        for reason in runtime.engine.listen_errors:
            log.error("%s", reason)
        runtime.stop()
        return 1
    config = runtime.store.config
    log.info("homeproxy %s serving %d site(s) from %s", __version__, len(config.sites), path)

    def on_config(event: ConfigEvent) -> None:
        if isinstance(event, ConfigChanged):
            log.info("config applied (%s): %d site(s)", event.source, len(event.config.sites))
        elif isinstance(event, ConfigRejected):
            log.error("config file rejected; still serving the last good config")

    runtime.store.subscribe(on_config)
    stop = threading.Event()
    reload = threading.Event()

    def on_stop(signum: int, _frame: object) -> None:
        log.info("%s: draining in-flight requests, then exiting", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: object) -> None:
        reload.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    while not stop.wait(0.2):
        if reload.is_set():
            reload.clear()
            log.info("SIGHUP: re-reading %s", path)
            if not runtime.store.reload(force=True) and not runtime.store.last_errors:
                log.info("config unchanged")
    runtime.stop()
    log.info("stopped")
    return 0


def _peek_level(path: Path) -> str:
    try:
        return ConfigStore(path).load(create=False).logging.level
    except (OSError, ConfigInvalid):
        return "info"
