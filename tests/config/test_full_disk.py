"""A config save on a full disk (issue 14): the file on disk and the config in force stay as
they were, and the error says why in homeproxy's words. The disk is a real 64 KiB tmpfs
(mounting one needs root, as `.ci/run` has; elsewhere the test is skipped and says so)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from homeproxy.config import ConfigStore
from homeproxy.config.store import ConfigSaveError

SITE = '[[sites]]\nname = "app"\nhosts = ["app.lan"]\nupstreams = ["http://10.0.0.1:80"]\n'


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (run as root, as .ci/run does)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Take every free block of `disk`."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass


def test_a_save_on_a_full_disk_keeps_the_file_and_the_config(small_disk: Path) -> None:
    path = small_disk / "config.toml"
    path.write_text("# mine\n" + SITE)
    store = ConfigStore(path, keep_backups=1)
    before = store.load()
    # Room for the backup of the small file, none for the large new one: the save itself fails.
    (small_disk / "reserve").write_bytes(b"r" * 4096)
    fill(small_disk)
    (small_disk / "reserve").unlink()
    site = replace(before.sites[0], hosts=tuple(f"host{i}.lan" for i in range(400)))
    with pytest.raises(ConfigSaveError) as caught:
        store.update_site("app", site)
    assert str(caught.value).startswith(f"could not save {path}: ")
    assert str(caught.value).endswith("; the file is unchanged")
    assert path.read_text() == "# mine\n" + SITE
    assert store.config is before
    assert not [p for p in small_disk.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind
    # With room again, the same save goes through.
    (small_disk / "filler").unlink()
    store.update_site("app", site)
    assert ConfigStore(path).load().sites[0].hosts == site.hosts
