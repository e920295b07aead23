"""`homeproxy certs` and `homeproxy certs renew SITE` for real: against a running Runtime over its
control socket, and with none running (the stored certificates; the engine started for a renewal)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from homeproxy import paths
from homeproxy.cli import main
from homeproxy.control import ControlServer, request, socket_path
from homeproxy.runtime import Runtime
from tests.conftest import free_port, serving

HOST = "ha.home.arpa"


def write_config(path: Path, upstream: int) -> Path:
    path.write_text(
        f"""[server]
listen = ["127.0.0.1"]
http_port = 0
https_port = 0

[[sites]]
name = "ha"
hosts = ["{HOST}"]
upstreams = ["http://127.0.0.1:{upstream}"]
tls = true
"""
    )
    return path


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async with serving(hello) as port:
        yield port


@pytest.fixture
async def running(tmp_path: Path, backend: int) -> AsyncIterator[Runtime]:
    rt = Runtime(write_config(tmp_path / "config.toml", backend), log_dir=tmp_path / "log", discovery=False)
    await asyncio.to_thread(rt.start)
    yield rt
    await asyncio.to_thread(rt.stop)


def leaf_serial(port: int) -> int:
    """A verified handshake (only homeproxy's root trusted) and the serial of the leaf served."""
    root = (paths.data_dir() / "ca" / "root.crt").read_text()
    ctx = ssl.create_default_context(cadata=root)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as t,
    ):
        der = t.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("ha ")}


async def test_certs_lists_what_the_running_homeproxy_serves(
    running: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["certs", "--config", str(running.config_path)]) == 0
    out = capsys.readouterr().out
    assert "the running homeproxy serves" in out
    assert rows(out)["ha"][1:3] == ["internal", "ok"] and rows(out)["ha"][-1] == HOST


async def test_certs_renew_prints_the_step_and_the_next_handshake_gets_the_new_leaf(
    running: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert running.engine is not None
    port = running.engine.https_addresses[0][1]
    before = await asyncio.to_thread(leaf_serial, port)
    [old] = running.engine.certificates()

    assert await asyncio.to_thread(main, ["certs", "renew", "ha", "--config", str(running.config_path)]) == 0

    out = capsys.readouterr().out
    assert "  … issuing from the local CA\n" in out and "✓ ha: renewed; ha.home.arpa" in out
    [new] = running.engine.certificates()
    assert new.fingerprint != old.fingerprint and new.fingerprint in out
    assert await asyncio.to_thread(leaf_serial, port) != before


async def test_renewing_a_site_without_tls_names_the_tls_sites(
    running: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["certs", "renew", "nope", "--config", str(running.config_path)]) == 1
    assert 'no TLS site named "nope" (TLS sites: ha)' in capsys.readouterr().err


def test_with_none_running_the_stored_certificates_are_listed_and_renew_runs_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.toml", free_port())
    assert main(["certs", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "homeproxy is not running" in out and rows(out)["ha"][1:3] == ["internal", "missing"]

    assert main(["certs", "renew", "ha", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "renewing in this process" in out and "✓ ha: renewed" in out

    assert main(["certs", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert rows(out)["ha"][1:3] == ["internal", "stored"]
    assert not socket_path(paths.data_dir()).exists()  # the engine started for the renewal is gone


async def test_the_socket_is_private_and_answers_bad_requests_with_our_errors(running: Runtime) -> None:
    path = running.control.path
    assert stat.S_ISSOCK(path.stat().st_mode) and path.stat().st_mode & 0o777 == 0o600

    def raw(line: bytes) -> dict[str, str]:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(line)
            reply: dict[str, str] = json.loads(s.makefile("rb").readline())
            return reply

    assert "not one JSON object" in (await asyncio.to_thread(raw, b"certs please\n"))["error"]
    assert "not one JSON object" in (await asyncio.to_thread(raw, b"[1, 2]\n"))["error"]
    [answer] = await asyncio.to_thread(lambda: list(request(path, {"cmd": "reboot"})))
    assert answer == {"error": "unknown command 'reboot' (known: certs, renew)"}


async def test_a_stale_socket_is_replaced_and_a_live_one_is_not_taken(running: Runtime, tmp_path: Path) -> None:
    # A second homeproxy on the same data dir leaves the first one's socket alone.
    other = ControlServer(lambda: None, running.control.path)
    assert not other.start()
    [answer] = await asyncio.to_thread(lambda: list(request(running.control.path, {"cmd": "certs"})))
    assert [c["site"] for c in answer["certs"]] == ["ha"]

    # A socket file nobody listens on (a homeproxy that was killed) is replaced.
    stale = tmp_path / "s" / "control.sock"
    stale.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    fresh = ControlServer(lambda: None, stale)
    assert fresh.start()
    try:
        [answer] = await asyncio.to_thread(lambda: list(request(stale, {"cmd": "certs"})))
        assert answer == {"error": "the engine is not running"}
    finally:
        fresh.stop()
    assert not stale.exists()


def test_a_data_dir_too_deep_for_a_unix_socket_gets_a_short_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = socket_path(deep)
    assert len(str(path)) < 100 and path != deep / "control.sock"
    assert socket_path(deep) == path  # the same data dir, the same socket
    assert socket_path(Path("/var/lib/homeproxy")) == Path("/var/lib/homeproxy/control.sock")
