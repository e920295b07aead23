"""Tests for outside edits: `ConfigStore.watch()` (a polling thread) and `ConfigStore.reload()`.

A hand edit is validated like any other: a good one is applied and announced
as `ConfigChanged(source="file")`, a bad one as `ConfigRejected` (once), and
the last good config stays in force until the file is fixed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from homeproxy.config import Config, ConfigChanged, ConfigEvent, ConfigRejected, ConfigStore
from homeproxy.config.load import parse_config
from tests.waiting import wait_for_sync

SITE = """\
[[sites]]
name = "{name}"
hosts = ["{name}.home.arpa"]
upstreams = ["http://192.168.1.20:{port}"]
"""

GOOD = "# my sites\n[server]\nhttp_port = 8081\n\n" + SITE.format(name="plex", port=32400)
BETTER = GOOD + "\n" + SITE.format(name="ha", port=8123)
# Line 13 is the bad upstream.
BROKEN = BETTER.replace("http://192.168.1.20:8123", "ftp://192.168.1.20")


class Recorder:
    """A listener that keeps every event (it is called from the watch thread)."""

    def __init__(self) -> None:
        self.events: list[ConfigEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: ConfigEvent) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type[ConfigChanged] | type[ConfigRejected]) -> list[ConfigEvent]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(GOOD, encoding="utf-8")
    return path


@pytest.fixture
def watched(config_path: Path) -> Iterator[tuple[ConfigStore, Recorder]]:
    store = ConfigStore(config_path)
    store.load()
    recorder = Recorder()
    store.subscribe(recorder)
    store.watch(interval=0.1)
    yield store, recorder
    store.stop_watching()


def replace_file(path: Path, text: str) -> None:
    """Save as most editors do: write a temp file beside it, then rename it over."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_in_place(path: Path, text: str) -> None:
    """Save as `echo > file` does: truncate and write the same inode."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def stays(predicate: Callable[[], bool], seconds: float) -> bool:
    """True if `predicate` holds throughout `seconds` (checking that nothing *more* happens needs a window)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("save", [replace_file, write_in_place], ids=["rename", "in-place"])
def test_a_valid_hand_edit_is_applied(
    watched: tuple[ConfigStore, Recorder], config_path: Path, save: Callable[[Path, str], None]
) -> None:
    store, recorder = watched
    expected = parse_config(BETTER, str(config_path))
    save(config_path, BETTER)
    wait_for_sync(lambda: store.config == expected, timeout=2.0, description="the hand edit to apply")
    wait_for_sync(lambda: recorder.of(ConfigChanged), timeout=2.0, description="ConfigChanged")
    assert recorder.events[-1] == ConfigChanged(expected, "file")
    # The store's document follows the file, so an edit through the store keeps the hand edit.
    store.set_site_option("ha", "enabled", False)
    assert config_path.read_text(encoding="utf-8") == BETTER + "enabled = false\n"


def test_an_invalid_hand_edit_is_rejected_and_the_last_good_config_stays(
    watched: tuple[ConfigStore, Recorder], config_path: Path
) -> None:
    store, recorder = watched
    good = store.config
    replace_file(config_path, BROKEN)
    wait_for_sync(lambda: recorder.of(ConfigRejected), timeout=2.0, description="ConfigRejected")
    [event] = recorder.events
    assert isinstance(event, ConfigRejected)
    assert [(e.file, e.line, e.key) for e in event.errors] == [(str(config_path), 13, "sites[1].upstreams")]
    assert str(event.errors[0]).startswith(f"{config_path}:13: sites[1].upstreams: item 1: expected an http(s) URL")
    assert store.config is good
    assert store.last_errors == event.errors
    assert config_path.read_text(encoding="utf-8") == BROKEN  # the user's file is theirs: never reverted

    # Fixing the file applies it.
    replace_file(config_path, BETTER)
    expected = parse_config(BETTER, str(config_path))
    wait_for_sync(lambda: store.config == expected, timeout=2.0, description="the fixed file to apply")
    assert recorder.events[-1] == ConfigChanged(expected, "file")
    assert store.last_errors == ()


def test_malformed_toml_by_hand_is_rejected_with_its_line(
    watched: tuple[ConfigStore, Recorder], config_path: Path
) -> None:
    store, recorder = watched
    good = store.config
    write_in_place(config_path, GOOD + "\n[[sites]\n")
    wait_for_sync(lambda: recorder.of(ConfigRejected), timeout=2.0, description="ConfigRejected")
    event = recorder.of(ConfigRejected)[-1]
    assert isinstance(event, ConfigRejected)
    assert [(e.file, e.line) for e in event.errors] == [(str(config_path), 10)]
    assert event.errors[0].message.startswith("malformed TOML")
    assert store.config is good


def test_the_same_broken_content_is_reported_once(watched: tuple[ConfigStore, Recorder], config_path: Path) -> None:
    store, recorder = watched
    replace_file(config_path, BROKEN)
    wait_for_sync(lambda: recorder.of(ConfigRejected), timeout=2.0, description="ConfigRejected")
    # The same bytes again: a new inode, a new mtime, but nothing new to say.
    replace_file(config_path, BROKEN)
    os.utime(config_path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert stays(lambda: len(recorder.events) == 1, seconds=0.6), recorder.events  # six polls
    assert store.reload() is False
    assert len(recorder.events) == 1
    # A different mistake is news.
    replace_file(config_path, BROKEN.replace('name = "ha"', 'name = "plex"'))
    wait_for_sync(lambda: len(recorder.of(ConfigRejected)) == 2, timeout=2.0, description="a second ConfigRejected")
    keys = [e.key for e in recorder.events[-1].errors]  # type: ignore[union-attr]
    assert keys == ["sites[1].name", "sites[1].upstreams"]


def test_a_forced_reload_retries_rejected_content(config_path: Path) -> None:
    store = ConfigStore(config_path)
    store.load()
    recorder = Recorder()
    store.subscribe(recorder)
    replace_file(config_path, BROKEN)
    assert store.reload() is False
    assert store.reload() is False
    assert len(recorder.of(ConfigRejected)) == 1
    assert store.reload(force=True) is False
    assert len(recorder.of(ConfigRejected)) == 2  # SIGHUP asks again, and hears the answer again


def test_an_applier_that_refuses_a_hand_edit_rejects_it(config_path: Path) -> None:
    offered: list[Config] = []

    def applier(config: Config) -> None:
        offered.append(config)
        if config.site("ha") is not None:
            raise OSError("cannot listen on 0.0.0.0:80: permission denied")

    store = ConfigStore(config_path, applier=applier)
    store.load()
    recorder = Recorder()
    store.subscribe(recorder)
    store.watch(interval=0.1)
    try:
        good = store.config
        replace_file(config_path, BETTER)
        wait_for_sync(lambda: recorder.of(ConfigRejected), timeout=2.0, description="ConfigRejected")
        [event] = recorder.events
        assert isinstance(event, ConfigRejected)
        [error] = event.errors
        assert error.file == str(config_path)
        assert error.message == "could not apply: cannot listen on 0.0.0.0:80: permission denied"
        assert store.config is good
        assert [c.site("ha") is not None for c in offered] == [True]
        assert config_path.read_text(encoding="utf-8") == BETTER
    finally:
        store.stop_watching()


def test_reload_is_false_when_the_content_did_not_change(config_path: Path) -> None:
    store = ConfigStore(config_path)
    store.load()
    recorder = Recorder()
    store.subscribe(recorder)
    assert store.reload() is False
    os.utime(config_path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert store.reload() is False
    replace_file(config_path, GOOD)
    assert store.reload() is False
    assert recorder.events == []

    replace_file(config_path, BETTER)
    assert store.reload() is True
    assert recorder.events == [ConfigChanged(parse_config(BETTER, str(config_path)), "file")]
    assert store.reload() is False
    assert len(recorder.events) == 1


def test_reload_after_a_store_edit_sees_nothing_new(config_path: Path) -> None:
    store = ConfigStore(config_path)
    store.load()
    store.set_site_option("plex", "enabled", False)
    recorder = Recorder()
    store.subscribe(recorder)
    assert store.reload() is False
    assert recorder.events == []


def test_a_deleted_file_is_reported_and_the_config_stays(config_path: Path) -> None:
    store = ConfigStore(config_path)
    good = store.load()
    recorder = Recorder()
    store.subscribe(recorder)
    config_path.unlink()
    assert store.reload() is False
    [event] = recorder.events
    assert isinstance(event, ConfigRejected)
    assert event.errors[0].message.startswith("cannot read the file: ")
    assert store.config is good


def test_an_emptied_file_keeps_the_sites_and_says_why(watched: tuple[ConfigStore, Recorder], config_path: Path) -> None:
    store, recorder = watched
    good = store.config
    write_in_place(config_path, "\n  \n")
    wait_for_sync(lambda: recorder.of(ConfigRejected), timeout=2.0, description="ConfigRejected")
    [event] = recorder.of(ConfigRejected)
    assert isinstance(event, ConfigRejected)
    assert "the file is empty; still serving the last good config" in event.errors[0].message
    assert store.config is good
    write_in_place(config_path, BETTER)
    wait_for_sync(lambda: len(store.config.sites) == 2, timeout=2.0, description="the rewritten file to apply")


def test_a_file_being_written_is_read_only_once_it_settles(config_path: Path) -> None:
    """A writer that truncates, then writes in pieces, is never caught half way: a prefix of the
    file that happens to be valid TOML (fewer sites) is never applied."""
    store = ConfigStore(config_path)
    store.load()
    applied: list[int] = []
    store.subscribe(lambda e: applied.append(len(e.config.sites)) if isinstance(e, ConfigChanged) else None)
    store.watch(interval=0.02)
    try:
        whole = BETTER + "\n" + SITE.format(name="nas", port=5000)
        with open(config_path, "w", encoding="utf-8") as f:
            for piece in (whole[: len(GOOD)], whole[len(GOOD) : len(BETTER)], whole[len(BETTER) :]):
                f.write(piece)
                f.flush()
                time.sleep(0.06)  # well past the poll interval, inside the settle time
        wait_for_sync(lambda: len(store.config.sites) == 3, timeout=3.0, description="the whole file to apply")
        assert applied == [3]
    finally:
        store.stop_watching()
