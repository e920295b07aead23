"""`homeproxy check`: validate a config file, print every error, exit 0 or 1."""

from __future__ import annotations

import sys
from pathlib import Path

from homeproxy.config import ConfigInvalid
from homeproxy.config.load import ConfigError, decode_config, parse_config


def cmd_check(path: Path) -> int:
    """Validate `path`; print every error. 0 if valid."""
    try:
        data = path.read_bytes()
    except OSError as e:
        print(f"{path}: cannot read: {e.strerror or e}", file=sys.stderr)
        return 1
    warnings: list[ConfigError] = []
    try:
        config = parse_config(decode_config(data, str(path)), str(path), warnings)
    except ConfigInvalid as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        n = len(e.errors)
        print(f"{path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{path}: ok, {len(config.sites)} site{'s' if len(config.sites) != 1 else ''}")
    return 0
