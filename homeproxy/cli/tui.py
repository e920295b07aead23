"""`homeproxy` and `homeproxy tui`: start the engine and open the TUI, or the repair screen for a broken config."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

from homeproxy import paths
from homeproxy.config import ConfigInvalid


def cmd_tui(path: Path) -> int:
    """Start the engine and open the TUI; quitting stops the engine."""
    from homeproxy.runtime import Runtime
    from homeproxy.tui.app import HomeproxyApp

    log_file = paths.log_dir() / "homeproxy.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # The screen belongs to the TUI: the process log goes to a file.
    logging.basicConfig(
        level=logging.INFO,
        filename=log_file,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    runtime = Runtime(path)
    while True:
        try:
            runtime.start()
            break
        except ConfigInvalid as e:
            # Open the file with its errors instead of leaving: homeproxy starts once it is fixed.
            from homeproxy.tui.repair import RepairApp

            if not RepairApp(path, e.errors).run():
                for err in e.errors:
                    print(err, file=sys.stderr)
                print(f"\nhomeproxy did not start: fix {path} (`homeproxy check --config {path}`).", file=sys.stderr)
                return 1
            runtime = Runtime(path)
        except OSError as e:
            print(f"cannot read or create {path}: {e.strerror or e}", file=sys.stderr)
            return 1
    # Everything made while starting lives as long as the process: keep it out of the
    # collector's way, and collect less often (the request buffer holds many small objects;
    # full collections over it pause the UI, and with it the proxy's share of the GIL).
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        HomeproxyApp(runtime).run()
    finally:
        runtime.stop()
    if runtime.store.created:
        print(f"homeproxy wrote a commented default config to {path}")
    return 0
