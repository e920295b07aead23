"""Where homeproxy keeps its files, as platformdirs says.

Pure functions: nothing here creates a directory; writers make the
directories they write into. `--config PATH` overrides the config location
(and its backups live beside it).
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "homeproxy"


def config_dir() -> Path:
    """The user config dir, e.g. `~/.config/homeproxy`."""
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def default_config_path() -> Path:
    """The config file used when no `--config` is given."""
    return config_dir() / "config.toml"


def data_dir() -> Path:
    """The user data dir (certificates and secrets, later), e.g. `~/.local/share/homeproxy`."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def log_dir() -> Path:
    """The user log dir, home of `access.log`, e.g. `~/.local/state/homeproxy/log`."""
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def backups_dir(config_path: Path) -> Path:
    """Timestamped backups of a config file live beside it: `config.backups/`."""
    return config_path.parent / f"{config_path.stem}.backups"
