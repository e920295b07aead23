"""`ConfigStore`: owns the config file, its tomlkit document and the last good `Config`.

Every change is a transaction: the store builds a new document, validates it,
hands the new `Config` to the applier (the engine), and only then writes the
file atomically (temp file in the same directory, fsync, rename, fsync of the
directory), keeping the previous file as a timestamped backup. If any step
fails, nothing changes: not the file, not the engine, not `store.config`.

Edits made to the file by hand are noticed by `watch()` (a polling thread:
portable, no inotify dependency) and go through the same validation; an
invalid file is reported to the listeners and the last good config stays.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.toml_document import TOMLDocument

from homeproxy.config.load import ConfigError, ConfigInvalid, decode_config, parse_config
from homeproxy.config.model import Config, Site
from homeproxy.config.store_document import _find_site, _model_site, _remove_table, _set_key
from homeproxy.config.store_files import ConfigSaveError, atomic_write, default_config_text
from homeproxy.config.store_toml import route_table, site_table
from homeproxy.paths import backups_dir

log = logging.getLogger(__name__)

Applier = Callable[[Config], None]


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """A new config is in force; `source` is "edit" (through the store) or "file" (outside edit)."""

    config: Config
    source: str


@dataclass(frozen=True, slots=True)
class ConfigRejected:
    """The file on disk changed but is invalid (or could not be applied); the last good config stays."""

    errors: tuple[ConfigError, ...]


ConfigEvent = ConfigChanged | ConfigRejected


SETTLE = 0.15
"""Seconds the config file must stay unchanged before the watcher reads it."""


class ConfigStore:
    """The config file, its document (comments kept) and the config in force."""

    def __init__(self, path: Path | str, *, keep_backups: int = 10, applier: Applier | None = None) -> None:
        self.path = Path(path)
        self.keep_backups = keep_backups
        self.applier = applier
        self._lock = threading.RLock()
        self._listeners: list[Callable[[ConfigEvent], None]] = []
        self._document: TOMLDocument | None = None
        self._config: Config | None = None
        self._fingerprint: bytes | None = None
        self._watcher: threading.Thread | None = None
        self._stop_watch = threading.Event()
        self.last_errors: tuple[ConfigError, ...] = ()
        self.created = False

    # --- loading -----------------------------------------------------------------------

    def load(self, *, create: bool = True) -> Config:
        """Read and validate the file (writing the commented default first if it is missing).

        Raises `ConfigInvalid` (the store keeps no config) or `OSError`.
        """
        with self._lock:
            if not self.path.exists() and create:
                atomic_write(self.path, default_config_text())
                self.created = True
            data = self.path.read_bytes()
            text = decode_config(data, str(self.path))
            config = parse_config(text, str(self.path))
            self._document = tomlkit.parse(text)
            self._config = config
            self._fingerprint = hashlib.sha256(data).digest()
            return config

    @property
    def config(self) -> Config:
        """The config in force (the last good one)."""
        if self._config is None:
            raise RuntimeError("ConfigStore.load() has not succeeded yet")
        return self._config

    @property
    def document(self) -> TOMLDocument:
        """A copy of the current document (edit it and pass it to `save_document`)."""
        with self._lock:
            if self._document is None:
                raise RuntimeError("ConfigStore.load() has not succeeded yet")
            return copy.deepcopy(self._document)

    def subscribe(self, listener: Callable[[ConfigEvent], None]) -> None:
        """Call `listener` (from whichever thread made the change) for every change or rejection."""
        self._listeners.append(listener)

    def _publish(self, event: ConfigEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("config listener %r failed", listener)

    # --- transactions ------------------------------------------------------------------

    @contextlib.contextmanager
    def edit(self) -> Iterator[TOMLDocument]:
        """`with store.edit() as doc:` change `doc`; on exit it is validated, applied and saved.

        An exception inside the block, an invalid result, a failing applier or a
        failing write leaves everything as it was (and propagates).
        """
        with self._lock:
            doc = self.document
            yield doc
            self.save_document(doc)

    def save_document(self, doc: TOMLDocument) -> Config:
        """Validate `doc`, apply it, write it atomically with a backup. All or nothing."""
        with self._lock:
            text = tomlkit.dumps(doc)
            config = parse_config(text, str(self.path))  # raises ConfigInvalid: nothing touched
            old = self._config
            if self.applier is not None:
                self.applier(config)
            try:
                self._backup()
                atomic_write(self.path, text)
            except BaseException as e:
                if self.applier is not None and old is not None:
                    self.applier(old)
                if isinstance(e, OSError) and not isinstance(e, ConfigSaveError):
                    why = e.strerror or str(e)
                    raise ConfigSaveError(f"could not save {self.path}: {why}; the file is unchanged") from e
                raise
            self._document = tomlkit.parse(text)
            self._config = config
            self._fingerprint = hashlib.sha256(text.encode("utf-8")).digest()
            self.last_errors = ()
        self._publish(ConfigChanged(config, "edit"))
        return config

    def add_site(self, site: Site) -> Config:
        """Append a `[[sites]]` table for `site`."""
        with self.edit() as doc:
            sites = doc.get("sites")
            if sites is None:
                doc.append("sites", tomlkit.aot())
                sites = doc["sites"]
            sites.append(site_table(site))
        return self.config

    def update_site(self, name: str, site: Site) -> Config:
        """Replace the site called `name` with `site`, touching only the keys that changed."""
        old = _model_site(self.config, name)
        with self.edit() as doc:
            table = _find_site(doc, name)
            for f in fields(Site):
                new_value = getattr(site, f.name)
                if new_value != getattr(old, f.name):
                    _set_key(table, f.name, new_value)
        return self.config

    def remove_site(self, name: str) -> Config:
        """Delete the site called `name`."""
        with self.edit() as doc:
            sites = doc.get("sites", [])
            index = next((i for i, t in enumerate(sites) if t.get("name") == name), None)
            if index is None:
                raise KeyError(f'no site named "{name}"')
            _remove_table(doc, sites, index)
        return self.config

    def set_site_option(self, name: str, key: str, value: Any) -> Config:
        """Set one key of a site (`store.set_site_option("plex", "websockets", False)`)."""
        with self.edit() as doc:
            _set_key(_find_site(doc, name), key, value)
        return self.config

    def set_option(self, table: str, key: str, value: Any) -> Config:
        """Set one key of a top-level table (`store.set_option("server", "http_port", 8081)`),
        creating the table if the file has none."""
        with self.edit() as doc:
            if table not in doc:
                doc.append(table, tomlkit.table())
            _set_key(doc[table], key, value)
        return self.config

    def restore(self, backup: Path) -> Config:
        """Make a backup the config again (validated and applied; the current file is backed up first)."""
        text = decode_config(Path(backup).read_bytes(), str(backup))
        parse_config(text, str(backup))  # refuse an invalid backup before anything changes
        return self.save_document(tomlkit.parse(text))

    # --- backups -----------------------------------------------------------------------

    def backups(self) -> list[Path]:
        """Backups of the config, oldest first."""
        d = backups_dir(self.path)
        return sorted(d.glob(f"{self.path.stem}-*{self.path.suffix}")) if d.is_dir() else []

    def _backup(self) -> None:
        if not self.path.exists():
            return
        d = backups_dir(self.path)
        d.mkdir(parents=True, exist_ok=True)
        # Microseconds keep names unique and make name order the time order.
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target = d / f"{self.path.stem}-{stamp}{self.path.suffix}"
        atomic_write(target, self.path.read_text(encoding="utf-8"), mode=self.path.stat().st_mode & 0o777)
        for old in self.backups()[: -self.keep_backups or None]:
            old.unlink(missing_ok=True)

    # --- outside edits -----------------------------------------------------------------

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the file if its content changed; apply it if valid. True if a new config is in force.

        `force` retries content that was already seen and rejected (SIGHUP, the TUI's reload key):
        a config refused because its port was busy may apply now.
        """
        with self._lock:
            try:
                data = self.path.read_bytes()
            except OSError as e:
                return self._reject([ConfigError(str(self.path), None, "", f"cannot read the file: {e}")], None)
            digest = hashlib.sha256(data).digest()
            unchanged = digest == self._fingerprint
            if unchanged and not (force and self.last_errors):
                return False
            if not data.strip() and self._config is not None and self._config.sites:
                # An editor that truncated the file and has not written it yet, or a slip: an
                # empty file would drop every site. Keep serving; the user's next save wins.
                why = "the file is empty; still serving the last good config (write it again to apply)"
                return self._reject([ConfigError(str(self.path), None, "", why)], digest)
            try:
                text = decode_config(data, str(self.path))
                config = parse_config(text, str(self.path))
                if self.applier is not None:
                    self.applier(config)
            except ConfigInvalid as e:
                return self._reject(list(e.errors), digest)
            except Exception as e:  # the applier refused (e.g. a port could not be bound)
                return self._reject([ConfigError(str(self.path), None, "", f"could not apply: {e}")], digest)
            self._document = tomlkit.parse(text)
            self._config = config
            self._fingerprint = digest
            self.last_errors = ()
        log.info("config reloaded from %s", self.path)
        self._publish(ConfigChanged(config, "file"))
        return True

    def _reject(self, errors: list[ConfigError], digest: bytes | None) -> bool:
        # Remember the bad content so the same broken file is reported once, not every poll.
        if digest is not None:
            self._fingerprint = digest
        self.last_errors = tuple(errors)
        for e in errors:
            log.error("%s", e)
        self._publish(ConfigRejected(tuple(errors)))
        return False

    def watch(self, interval: float = 0.5) -> None:
        """Poll the file for outside edits in a daemon thread until `stop_watching()`."""
        if self._watcher is not None:
            return
        self._stop_watch.clear()

        def loop() -> None:
            last = None
            while not self._stop_watch.wait(interval):
                try:
                    st = self.path.stat()
                    sig = (st.st_mtime_ns, st.st_size, st.st_ino)
                except OSError:
                    continue  # mid-rename by an editor; look again next time
                if sig != last:
                    # A writer may be half way (truncated, then written): act once the file has
                    # stayed the same for a moment, so a half-written file is never applied.
                    if self._stop_watch.wait(SETTLE):
                        return
                    try:
                        st = self.path.stat()
                    except OSError:
                        continue
                    if (st.st_mtime_ns, st.st_size, st.st_ino) != sig:
                        continue  # still being written: look again next time
                    last = sig
                    self.reload()

        self._watcher = threading.Thread(target=loop, name="homeproxy-config-watch", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        """Stop the watch thread (waits for it)."""
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None


__all__ = [
    "ConfigChanged",
    "ConfigEvent",
    "ConfigRejected",
    "ConfigSaveError",
    "ConfigStore",
    "atomic_write",
    "default_config_text",
    "route_table",
    "site_table",
]
