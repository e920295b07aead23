"""`homeproxy discover`: real zeroconf peers on loopback, the CLI run as users run it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from homeproxy.cli import main
from tests.discovery.conftest import Peer, unique_name, unique_type


async def discover(*args: str) -> int:
    """`main` runs its own event loop: give it a thread, as the shell would give it a process."""
    return await asyncio.to_thread(main, ["discover", "--timeout", "0.5", *args])


@pytest.fixture
def no_config(tmp_path: Path) -> list[str]:
    return ["--config", str(tmp_path / "missing.toml")]


async def test_json_lists_what_answered(peer: Peer, no_config: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    type_ = unique_type()
    name = unique_name("Plex")
    await peer.register(peer.info(name, type_, port=32400, properties={"path": "/web"}))
    assert await discover("--json", "--type", type_.removesuffix(".local."), *no_config) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [(r["name"], r["type"], r["addresses"], r["port"], r["path"]) for r in rows] == [
        (name, type_, ["127.0.0.1"], 32400, "/web")
    ]
    assert rows[0]["url"] == "http://127.0.0.1:32400/web"
    assert rows[0]["upstream"] == f"mdns://{name}.{type_.removesuffix('.local.')}/web"
    assert "1 service in 0.5 s on lo (127.0.0.1)" in err


async def test_the_table_shows_hostile_names_as_text(
    peer: Peer, no_config: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    type_ = unique_type()
    peer.announce_raw(peer.info("[red]x[/] \x1b[2J ☃", type_, port=81, properties={b"path": b"ui"}))
    await peer.register(peer.info("Plain", type_, port=80))
    assert await discover("--type", type_, *no_config) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "ADDRESS", "PATH"]
    assert "\x1b" not in out
    assert any(line.startswith("Plain ") and "127.0.0.1:80 " in line and line.endswith(" /") for line in lines)
    assert any(line.startswith("[red]x[/] \\x1b[2J ☃") and line.endswith("  /ui") for line in lines)


async def test_nothing_found_is_not_an_error(no_config: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert await discover("--type", unique_type(), *no_config) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "no services found in 0.5 s on lo (127.0.0.1)" in err
    assert await discover("--json", "--type", unique_type(), *no_config) == 0
    assert json.loads(capsys.readouterr().out) == []


async def test_the_configs_discovery_table_is_used(
    peer: Peer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    type_ = unique_type()
    name = unique_name("Printer")
    path = tmp_path / "config.toml"
    path.write_text(
        f'[discovery]\nservice_types = ["{type_}"]\nbrowse_all_types = false\ninterfaces = ["127.0.0.1"]\n',
        encoding="utf-8",
    )
    await peer.register(peer.info(name, type_, port=631))
    assert await discover("--json", "--config", str(path)) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == [name]


async def test_interfaces_from_the_command_line(
    peer: Peer, no_config: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HOMEPROXY_MDNS_INTERFACES")
    assert await discover("--interface", "no-such-if0", *no_config) == 1
    assert 'no interface "no-such-if0"' in capsys.readouterr().err
    type_ = unique_type()
    await peer.register(peer.info("Box", type_))
    assert await discover("--json", "--interface", "127.0.0.1", "--type", type_, *no_config) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["Box"]


def test_a_bad_type_is_a_usage_error(no_config: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", "--type", "http", *no_config]) == 2
    assert 'expected a service type such as "_http._tcp"' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["discover", "--timeout", "0", *no_config])


def test_it_loads_neither_the_tui_nor_the_engine(tmp_path: Path) -> None:
    code = (
        "import sys; from homeproxy.cli import main; "
        "rc = main(['discover', '--timeout', '0.2', '--type', '_hpt-none._tcp', '--config', sys.argv[1]]); "
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich') "
        "or m.startswith(('homeproxy.engine', 'homeproxy.tui', 'homeproxy.runtime'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        env=os.environ.copy(),
        check=False,
    )
    assert done.stdout.strip() == "0 []", done.stderr
