"""Tests for `homeproxy.config.store.ConfigStore`: loading, edits as transactions, backups, atomic saves.

The file is the user's: edits must keep their comments and layout, a refused
edit must leave the file byte-identical, and a crash mid-save must leave the
old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from homeproxy import paths
from homeproxy.config import Config, ConfigChanged, ConfigEvent, ConfigInvalid, ConfigStore, Route, Site
from homeproxy.config.load import parse_config
from homeproxy.config.model import Upstream
from homeproxy.config.store import atomic_write, default_config_text
from homeproxy.paths import backups_dir

USER_CONFIG = """\
# homeproxy at home
# (hand-written; keep the order)

[server]
http_port = 8081            # not 80: runs as me
listen = ["127.0.0.1"]

[logging]
level = "debug"   # chatty while I set things up

[[sites]]
# Plex needs websockets; keep it first
name = "plex"
upstreams = ["http://192.168.1.20:32400"]   # the NAS
hosts = ["plex.home.arpa"]
read_timeout = "5m"

[[sites]]
# Home Assistant
name = "ha"
hosts = [
  "ha.home.arpa",  # the main name
  "ha.local",
]
upstreams = ["http://192.168.1.10:8123"]

  [[sites.routes]]
  # the API goes to a separate worker
  path = "/api/"
  upstreams = ["http://192.168.1.10:8124"]
"""

PLEX_BLOCK = """
[[sites]]
# Plex needs websockets; keep it first
name = "plex"
upstreams = ["http://192.168.1.20:32400"]   # the NAS
hosts = ["plex.home.arpa"]
read_timeout = "5m"
"""

HA_BLOCK = USER_CONFIG[USER_CONFIG.index("[[sites]]\n# Home Assistant") :]

# Comments *between* tables: tomlkit files them under the table above them.
SECTIONED_CONFIG = """\
[server]
http_port = 8081

# --- media ---
[[sites]]
name = "plex"
hosts = ["plex.home.arpa"]
upstreams = ["http://192.168.1.20:32400"]

# --- home automation ---
[[sites]]
name = "ha"
hosts = ["ha.home.arpa"]
upstreams = ["http://192.168.1.10:8123"]

# --- end of sites ---
"""

NEXTCLOUD = Site(
    name="nextcloud",
    hosts=("cloud.home.arpa",),
    upstreams=(Upstream("http://192.168.1.11"),),
    routes=(Route("/push/", (Upstream("http://192.168.1.11:7867"),), strip_prefix=True),),
    enabled=False,
    read_timeout=0.25,
)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "config.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def loaded(path: Path, text: str, **kwargs: Any) -> ConfigStore:
    store = ConfigStore(write(path, text), **kwargs)
    store.load()
    return store


def events_of(store: ConfigStore) -> list[ConfigEvent]:
    events: list[ConfigEvent] = []
    store.subscribe(events.append)
    return events


def snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


def stray_files(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# --- load ----------------------------------------------------------------------------


def test_load_writes_the_commented_default_and_its_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "config.toml"
    store = ConfigStore(path)
    assert not store.created
    config = store.load()
    assert store.created
    text = path.read_text(encoding="utf-8")
    assert text == default_config_text()
    assert text.startswith("# homeproxy configuration\n")
    assert "# [[sites]]\n" in text
    assert config == Config() == store.config
    assert stray_files(path.parent, {"config.toml"}) == []


def test_load_uses_the_xdg_config_home() -> None:
    store = ConfigStore(paths.default_config_path())
    store.load()
    assert store.path == Path(os.environ["XDG_CONFIG_HOME"]) / "homeproxy" / "config.toml"
    assert store.path.read_text(encoding="utf-8") == default_config_text()


def test_load_leaves_an_existing_file_alone(config_path: Path) -> None:
    write(config_path, USER_CONFIG)
    before = snapshot(config_path)
    store = ConfigStore(config_path)
    config = store.load()
    assert not store.created
    assert snapshot(config_path) == before
    assert [s.name for s in config.sites] == ["plex", "ha"]
    assert config.server.http_port == 8081


def test_load_without_create_does_not_write(config_path: Path) -> None:
    store = ConfigStore(config_path)
    with pytest.raises(FileNotFoundError):
        store.load(create=False)
    assert not config_path.exists()
    assert not config_path.parent.exists()


def test_load_of_an_invalid_file_keeps_no_config(config_path: Path) -> None:
    store = ConfigStore(write(config_path, "[server]\nhttp_port = 70000\n"))
    with pytest.raises(ConfigInvalid) as info:
        store.load()
    assert [(e.file, e.line, e.key) for e in info.value.errors] == [(str(config_path), 2, "server.http_port")]
    with pytest.raises(RuntimeError):
        store.config  # noqa: B018
    assert config_path.read_text(encoding="utf-8") == "[server]\nhttp_port = 70000\n"


# --- edits keep the user's file --------------------------------------------------------


def test_set_site_option_on_an_existing_key_changes_only_that_value(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    store.set_site_option("plex", "read_timeout", "10m")
    assert config_path.read_text(encoding="utf-8") == USER_CONFIG.replace('"5m"', '"10m"')
    assert store.config.sites[0].read_timeout == 600.0


def test_set_site_option_keeps_the_inline_comment_beside_the_value(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    store.set_site_option("plex", "upstreams", ["http://192.168.1.21:32400"])
    assert config_path.read_text(encoding="utf-8") == USER_CONFIG.replace("1.20:32400", "1.21:32400")
    assert 'upstreams = ["http://192.168.1.21:32400"]   # the NAS\n' in config_path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("site", "after"),
    [
        ("plex", 'read_timeout = "5m"\n'),
        ("ha", 'upstreams = ["http://192.168.1.10:8123"]\n'),
    ],
)
def test_set_site_option_adds_a_new_key_after_the_sites_last_key(config_path: Path, site: str, after: str) -> None:
    store = loaded(config_path, USER_CONFIG)
    store.set_site_option(site, "websockets", False)
    assert config_path.read_text(encoding="utf-8") == USER_CONFIG.replace(after, after + "websockets = false\n")
    assert store.config.site(site) is not None
    assert store.config.site(site).websockets is False  # type: ignore[union-attr]


def test_update_site_touches_only_the_changed_keys(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    ha = store.config.site("ha")
    assert ha is not None
    new = replace(ha, upstreams=(Upstream("http://192.168.1.10:8125"),), preserve_host=False, connect_timeout=0.5)
    store.update_site("ha", new)
    expected = USER_CONFIG.replace(
        'upstreams = ["http://192.168.1.10:8123"]\n',
        'upstreams = ["http://192.168.1.10:8125"]\npreserve_host = false\nconnect_timeout = "500ms"\n',
    )
    assert config_path.read_text(encoding="utf-8") == expected
    assert store.config.site("ha") == new
    assert parse_config(expected, str(config_path)) == store.config


def test_update_site_adds_routes_to_a_site_that_is_not_last(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    plex, ha = store.config.sites
    new = replace(plex, routes=(Route("/web/", (Upstream("http://192.168.1.20:8080"),), strip_prefix=True),))
    store.update_site("plex", new)
    assert store.config.sites == (new, ha)
    text = config_path.read_text(encoding="utf-8")
    assert parse_config(text, str(config_path)) == store.config
    comments = [line for line in USER_CONFIG.splitlines(keepends=True) if "#" in line]
    assert [line for line in text.splitlines(keepends=True) if "#" in line] == comments


@pytest.mark.parametrize("seconds", [1234.5678, 2_592_000.0])
def test_update_site_keeps_the_duration_it_was_given(config_path: Path, seconds: float) -> None:
    store = loaded(config_path, USER_CONFIG)
    plex = store.config.site("plex")
    assert plex is not None
    new = replace(plex, read_timeout=seconds)
    store.update_site("plex", new)
    assert store.config.site("plex") == new


@pytest.mark.parametrize(("seconds", "written"), [(0.25, '"250ms"'), (1.5, '"1.5s"'), (90.0, '"90s"')])
def test_update_site_writes_durations_readably(config_path: Path, seconds: float, written: str) -> None:
    store = loaded(config_path, USER_CONFIG)
    plex = store.config.site("plex")
    assert plex is not None
    store.update_site("plex", replace(plex, connect_timeout=seconds))
    anchor = 'read_timeout = "5m"\n'
    expected = USER_CONFIG.replace(anchor, f"{anchor}connect_timeout = {written}\n")
    assert config_path.read_text(encoding="utf-8") == expected
    assert store.config.sites[0].connect_timeout == seconds


def test_update_site_can_rename(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    plex = store.config.site("plex")
    assert plex is not None
    store.update_site("plex", replace(plex, name="tv"))
    assert config_path.read_text(encoding="utf-8") == USER_CONFIG.replace('name = "plex"', 'name = "tv"')
    assert [s.name for s in store.config.sites] == ["tv", "ha"]


def test_add_site_appends_and_keeps_everything_before(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    events = events_of(store)
    config = store.add_site(NEXTCLOUD)
    text = config_path.read_text(encoding="utf-8")
    assert text.startswith(USER_CONFIG)
    added = parse_config(text[len(USER_CONFIG) :], "added")
    assert added.sites == (NEXTCLOUD,)
    assert config.sites[-1] == NEXTCLOUD == store.config.sites[-1]
    assert config == parse_config(text, str(config_path))
    assert events == [ConfigChanged(config, "edit")]


def test_add_site_to_the_default_template_keeps_its_comments(config_path: Path) -> None:
    store = ConfigStore(config_path)
    store.load()
    store.add_site(NEXTCLOUD)
    text = config_path.read_text(encoding="utf-8")
    assert text.startswith(default_config_text())
    assert store.config.sites == (NEXTCLOUD,)


@pytest.mark.parametrize(("name", "block"), [("plex", PLEX_BLOCK), ("ha", HA_BLOCK)])
def test_remove_site_removes_exactly_its_table(config_path: Path, name: str, block: str) -> None:
    store = loaded(config_path, USER_CONFIG)
    store.remove_site(name)
    assert block in USER_CONFIG
    assert config_path.read_text(encoding="utf-8") == USER_CONFIG.replace(block, "")
    assert [s.name for s in store.config.sites] == [n for n in ("plex", "ha") if n != name]


def test_remove_site_keeps_the_heading_comment_of_the_next_site(config_path: Path) -> None:
    store = loaded(config_path, SECTIONED_CONFIG)
    store.remove_site("plex")
    text = config_path.read_text(encoding="utf-8")
    assert '# --- home automation ---\n[[sites]]\nname = "ha"\n' in text


def test_remove_last_site_keeps_the_comments_after_it(config_path: Path) -> None:
    store = loaded(config_path, SECTIONED_CONFIG)
    store.remove_site("ha")
    assert "# --- end of sites ---\n" in config_path.read_text(encoding="utf-8")


def test_a_new_key_is_not_written_under_the_next_sites_heading(config_path: Path) -> None:
    store = loaded(config_path, SECTIONED_CONFIG)
    store.set_site_option("plex", "websockets", False)
    anchor = 'upstreams = ["http://192.168.1.20:32400"]\n'
    assert config_path.read_text(encoding="utf-8") == SECTIONED_CONFIG.replace(anchor, anchor + "websockets = false\n")


def test_adding_a_host_keeps_comments_inside_the_hosts_array(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    ha = store.config.site("ha")
    assert ha is not None
    store.update_site("ha", replace(ha, hosts=(*ha.hosts, "hass.lan")))
    assert store.config.site("ha").hosts == ("ha.home.arpa", "ha.local", "hass.lan")  # type: ignore[union-attr]
    assert '  "ha.home.arpa",  # the main name\n' in config_path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.update_site("nope", NEXTCLOUD),
        lambda s: s.set_site_option("nope", "enabled", False),
    ],
    ids=["update_site", "set_site_option"],
)
def test_editing_an_unknown_site_is_a_key_error(config_path: Path, edit: Callable[[ConfigStore], object]) -> None:
    store = loaded(config_path, USER_CONFIG)
    before = snapshot(config_path)
    with pytest.raises(KeyError, match="nope"):
        edit(store)
    assert snapshot(config_path) == before


def test_removing_an_unknown_site_is_a_key_error(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    with pytest.raises(KeyError, match="nope"):
        store.remove_site("nope")


# --- refused edits change nothing --------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "line", "key", "message"),
    [
        (
            lambda s: s.add_site(Site(name="tv", hosts=("PLEX.home.arpa",), upstreams=(Upstream("http://x"),))),
            33,
            "sites[2].hosts",
            'host "plex.home.arpa" is already claimed by site "plex" (sites[0])',
        ),
        (
            lambda s: s.add_site(Site(name="ha", hosts=("hass.lan",), upstreams=(Upstream("http://x"),))),
            32,
            "sites[2].name",
            'site name "ha" is already used by sites[1]',
        ),
        (
            lambda s: s.set_site_option("plex", "upstreams", ["ftp://192.168.1.20"]),
            14,
            "sites[0].upstreams",
            'item 1: expected an http(s) URL such as "http://192.168.1.20:8123", got "ftp://192.168.1.20"',
        ),
        (
            lambda s: s.set_site_option("ha", "websocket", False),
            26,
            "sites[1].websocket",
            'unknown key "websocket"; did you mean "websockets"?',
        ),
        (
            lambda s: s.set_site_option("plex", "hosts", []),
            15,
            "sites[0].hosts",
            "a site needs at least one host name",
        ),
    ],
    ids=["duplicate-host", "duplicate-name", "bad-upstream", "unknown-key", "no-hosts"],
)
def test_an_invalid_save_changes_nothing(
    config_path: Path, edit: Callable[[ConfigStore], object], line: int, key: str, message: str
) -> None:
    applied: list[Config] = []
    store = loaded(config_path, USER_CONFIG, applier=applied.append)
    events = events_of(store)
    config_before, file_before = store.config, snapshot(config_path)
    with pytest.raises(ConfigInvalid) as info:
        edit(store)
    assert [(e.file, e.line, e.key, e.message) for e in info.value.errors] == [(str(config_path), line, key, message)]
    assert snapshot(config_path) == file_before
    assert store.config is config_before
    assert applied == []
    assert events == []
    assert store.backups() == []
    assert stray_files(config_path.parent, {"config.toml"}) == []


def test_an_exception_inside_edit_changes_nothing(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    config_before, file_before = store.config, snapshot(config_path)
    with pytest.raises(ZeroDivisionError), store.edit() as doc:
        doc["server"]["http_port"] = 9000
        1 / 0  # noqa: B018
    assert snapshot(config_path) == file_before
    assert store.config is config_before
    assert store.document["server"]["http_port"] == 8081


def test_an_applier_that_refuses_makes_the_edit_fail(config_path: Path) -> None:
    offered: list[Config] = []

    def applier(config: Config) -> None:
        offered.append(config)
        if config.server.http_port == 80:
            raise OSError(errno.EACCES, "port 80 needs CAP_NET_BIND_SERVICE")

    store = loaded(config_path, USER_CONFIG, applier=applier)
    events = events_of(store)
    config_before, file_before = store.config, snapshot(config_path)
    with pytest.raises(OSError, match="CAP_NET_BIND_SERVICE"), store.edit() as doc:
        doc["server"]["http_port"] = 80
    assert [c.server.http_port for c in offered] == [80]
    assert snapshot(config_path) == file_before
    assert store.config is config_before
    assert events == []
    assert store.backups() == []

    # The same store still takes a good edit, through the applier.
    with store.edit() as doc:
        doc["server"]["http_port"] = 8082
    assert [c.server.http_port for c in offered] == [80, 8082]
    assert store.config.server.http_port == 8082
    assert events == [ConfigChanged(store.config, "edit")]


# --- backups -----------------------------------------------------------------------------


def save_versions(store: ConfigStore, count: int) -> list[str]:
    """Make `count` edits; returns every version of the file, the original first."""
    versions = [store.path.read_text(encoding="utf-8")]
    for n in range(count):
        store.set_site_option("plex", "read_timeout", f"{n + 1}m")
        versions.append(store.path.read_text(encoding="utf-8"))
    return versions


def test_each_save_keeps_the_previous_file_as_a_backup(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG)
    versions = save_versions(store, 3)
    backups = store.backups()
    assert [b.parent for b in backups] == [backups_dir(config_path)] * 3
    assert backups_dir(config_path) == config_path.parent / "config.backups"
    assert all(re.fullmatch(r"config-\d{8}-\d{6}(-\d+)*\.toml", b.name) for b in backups), backups
    assert [b.read_text(encoding="utf-8") for b in backups] == versions[:3]
    assert config_path.read_text(encoding="utf-8") == versions[3]


def test_only_the_last_n_backups_are_kept(config_path: Path) -> None:
    """Saves in quick succession (many within one second) still keep the latest N, oldest first."""
    store = loaded(config_path, USER_CONFIG, keep_backups=3)
    versions = save_versions(store, 12)
    assert [b.read_text(encoding="utf-8") for b in store.backups()] == versions[9:12]
    assert len(list(backups_dir(config_path).iterdir())) == 3


def test_keep_backups_zero_keeps_none(config_path: Path) -> None:
    store = loaded(config_path, USER_CONFIG, keep_backups=0)
    save_versions(store, 2)
    assert store.backups() == []


# --- permissions -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_saves_keep_the_files_permission_bits(config_path: Path, mode: int) -> None:
    write(config_path, USER_CONFIG)
    config_path.chmod(mode)
    store = loaded(config_path, USER_CONFIG)
    config_path.chmod(mode)
    store.set_site_option("plex", "enabled", False)
    store.set_site_option("plex", "enabled", True)
    assert config_path.stat().st_mode & 0o777 == mode
    assert [b.stat().st_mode & 0o777 for b in store.backups()] == [mode, mode]


# --- atomic saves --------------------------------------------------------------------------


def big_config(port: int, sites: int) -> str:
    """A large valid config (about 60 kB): many sites and a long comment block."""
    head = "".join(f"# padding line {n:05d} {'-' * 100}\n" for n in range(300))
    body = "".join(
        textwrap.dedent(
            f"""
            [[sites]]
            # site {n}
            name = "site-{n}"
            hosts = ["site-{n}.home.arpa", "s{n}.lan"]
            upstreams = ["http://10.0.{n // 250}.{n % 250}:{port}"]
            """
        )
        for n in range(sites)
    )
    return head + "[server]\nhttp_port = 8080\n" + body


SAVER = """\
import sys
import tomlkit
from homeproxy.config.store import ConfigStore

path, a, b = sys.argv[1:4]
docs = [tomlkit.parse(open(p, encoding="utf-8").read()) for p in (a, b)]
store = ConfigStore(path, keep_backups=2)
store.load(create=False)
print("ready", flush=True)
for n in range(1_000_000):
    store.save_document(docs[n % 2])
    print("saved", flush=True)
"""


def test_a_kill_mid_save_leaves_the_old_or_the_new_file(tmp_path: Path, config_path: Path) -> None:
    """SIGKILL a process that saves big configs in a loop, at random moments: never a torn file."""
    versions = [big_config(8080, 120), big_config(9090, 125)]
    assert len(versions[0]) > 50_000
    for n, text in enumerate(versions):
        write(tmp_path / f"v{n}.toml", text)
    write(config_path, versions[0])
    expected = {v.encode("utf-8"): parse_config(v) for v in versions}
    script = write(tmp_path / "saver.py", SAVER)
    rng = random.Random(os.getpid())
    kills, saves = 6, 0
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(config_path), str(tmp_path / "v0.toml"), str(tmp_path / "v1.toml")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            assert proc.stdout.readline() == "saved\n"  # at least one save before the kill moment
            time.sleep(rng.uniform(0.0, 0.5))  # the random moment of the crash, not a wait for a condition
            proc.send_signal(signal.SIGKILL)
            saves += 1 + proc.stdout.read().count("saved\n")
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL

        data = config_path.read_bytes()
        assert data in expected, f"torn or empty config after a kill ({len(data)} bytes)"
        store = ConfigStore(config_path)
        assert store.load(create=False) == expected[data]
        for backup in store.backups():
            assert backup.read_bytes() in expected, f"torn backup {backup.name}"
        # Temp files a kill leaves behind are hidden and never look like the config or a backup.
        for leftover in stray_files(config_path.parent, {"config.toml", "config.backups"}):
            assert re.fullmatch(r"\.config\.toml\..+\.tmp", leftover), leftover
        for leftover in stray_files(backups_dir(config_path), {b.name for b in store.backups()}):
            assert re.fullmatch(r"\.config-.+\.toml\..+\.tmp", leftover), leftover
    assert saves > kills


@pytest.fixture
def failing_fsync(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[int], bool]], None]]:
    """Inject a disk fault: `os.fsync` raises EIO for the file descriptors `which(fd)` picks."""
    real = os.fsync

    def install(which: Callable[[int], bool]) -> None:
        def fsync(fd: int) -> None:
            if which(fd):
                raise OSError(errno.EIO, "Input/output error (injected)")
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    yield install


def fd_name(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def test_atomic_write_fsync_fault_keeps_the_old_file(
    config_path: Path, failing_fsync: Callable[[Callable[[int], bool]], None]
) -> None:
    write(config_path, USER_CONFIG)
    before = snapshot(config_path)
    failing_fsync(lambda fd: True)
    with pytest.raises(OSError, match="injected"):
        atomic_write(config_path, "[server]\nhttp_port = 1\n")
    assert snapshot(config_path) == before
    assert stray_files(config_path.parent, {"config.toml"}) == []


def test_atomic_write_creates_and_replaces(config_path: Path) -> None:
    atomic_write(config_path, "a = 1\n")
    assert config_path.read_text(encoding="utf-8") == "a = 1\n"
    assert config_path.stat().st_mode & 0o777 == 0o644
    config_path.chmod(0o600)
    atomic_write(config_path, "a = 2\r\n")
    assert config_path.read_bytes() == b"a = 2\r\n"  # written as given, no newline translation
    assert config_path.stat().st_mode & 0o777 == 0o600
    assert stray_files(config_path.parent, {"config.toml"}) == []


def test_a_save_that_fails_to_write_rolls_everything_back(
    config_path: Path, failing_fsync: Callable[[Callable[[int], bool]], None]
) -> None:
    applied: list[Config] = []
    store = loaded(config_path, USER_CONFIG, applier=applied.append)
    events = events_of(store)
    config_before, file_before = store.config, snapshot(config_path)
    failing_fsync(lambda fd: fd_name(fd).startswith(".config.toml."))
    with pytest.raises(OSError, match="injected"):
        store.set_site_option("plex", "enabled", False)
    assert snapshot(config_path) == file_before
    assert store.config is config_before
    # The engine was offered the new config, then given the old one back.
    assert [c.site("plex").enabled for c in applied] == [False, True]  # type: ignore[union-attr]
    assert applied[-1] == config_before
    assert events == []
    assert stray_files(config_path.parent, {"config.toml", "config.backups"}) == []
    assert store.reload() is False  # what is on disk is what is in force


def test_a_directory_fsync_fault_leaves_file_and_config_in_agreement(
    config_path: Path, failing_fsync: Callable[[Callable[[int], bool]], None]
) -> None:
    store = loaded(config_path, USER_CONFIG)
    directory = config_path.parent.stat().st_ino
    failing_fsync(lambda fd: os.fstat(fd).st_ino == directory)
    with contextlib.suppress(OSError):  # failing or succeeding are both fine; disagreeing is not
        store.set_site_option("plex", "enabled", False)
    assert parse_config(config_path.read_text(encoding="utf-8"), str(config_path)) == store.config
