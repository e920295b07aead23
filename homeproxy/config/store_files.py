"""The config file on disk: the packaged default text, `atomic_write`, and `ConfigSaveError` for a failed save."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from importlib import resources
from pathlib import Path

# Named for store.py, where these lines lived until the split: the process log shows the same logger name.
log = logging.getLogger("homeproxy.config.store")


def default_config_text() -> str:
    """The commented default config (`assets/default-config.toml`)."""
    packaged = resources.files("homeproxy").joinpath("_assets/default-config.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # Running from a source checkout (editable install): the file is at the top level.
    return (Path(__file__).resolve().parents[2] / "assets" / "default-config.toml").read_text(encoding="utf-8")


class ConfigSaveError(OSError):
    """A save that could not be written (a full disk, a read-only folder): the file on disk
    and the config in force are both as they were; `str()` says so in homeproxy's words."""


def atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    """Write `text` to `path` so that a crash leaves either the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename is done: the new file is in place. Flushing the directory makes the
    # rename itself durable; if that fails the save still happened, so it is only logged.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        log.warning("could not flush directory %s after saving %s: %s", path.parent, path.name, e)
