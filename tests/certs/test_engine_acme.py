"""ACME through the whole of homeproxy: a Runtime whose own HTTP listener answers pebble's
HTTP-01 challenges, a stand-in while the order runs, then the real certificate on the HTTPS
port, and `homeproxy certs renew` talking to that Runtime over its control socket."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from homeproxy import cli
from homeproxy.runtime import Runtime
from tests.certs.conftest import Pebble, PebbleLab
from tests.conftest import free_port
from tests.waiting import wait_for

NAME = "nas.homeproxy.test"


def served_leaf(port: int, root_pem: bytes) -> x509.Certificate:
    """The leaf the HTTPS port serves for NAME, verified against `root_pem` (hostname checked)."""
    ctx = ssl.create_default_context(cadata=root_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture
async def acme_runtime(pebble_lab: PebbleLab, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Pebble]]:
    http_port = free_port()
    pebble = pebble_lab.start_pebble(http_port=http_port)  # validates against the engine itself
    config = tmp_path / "config.toml"
    config.write_text(
        f"""[server]
listen = ["127.0.0.1"]
http_port = {http_port}
https_port = 0

[tls]
issuer = "acme"
acme_email = "admin@homeproxy.test"
acme_directory = "{pebble.directory}"
acme_ca_bundle = "{pebble.ca_bundle}"

[[sites]]
name = "nas"
hosts = ["{NAME}"]
upstreams = ["http://127.0.0.1:9"]
tls = true
"""
    )
    runtime = Runtime(config, log_dir=tmp_path / "log", discovery=False)
    await asyncio.to_thread(runtime.start)
    try:
        yield runtime, pebble
    finally:
        await asyncio.to_thread(runtime.stop)


async def test_acme_issues_through_the_engine_and_certs_renew_prints_the_steps(
    acme_runtime: tuple[Runtime, Pebble], capsys: pytest.CaptureFixture[str]
) -> None:
    runtime, pebble = acme_runtime
    engine = runtime.engine
    assert engine is not None
    port = engine.https_addresses[0][1]

    def status() -> str:
        [s] = engine.certificates()
        return s.state

    await wait_for(lambda: status() == "ok", timeout=60, description="the ACME certificate")
    first = await asyncio.to_thread(served_leaf, port, pebble.root_pem())  # pebble's chain, verified
    capsys.readouterr()

    rc = await asyncio.to_thread(cli.main, ["certs", "renew", "nas", "--config", str(runtime.config_path)])

    out = capsys.readouterr()
    assert rc == 0, out.err
    steps = [line.strip().removeprefix("… ") for line in out.out.splitlines() if line.startswith("  … ")]
    assert steps[0] == "account" or steps[0] == "order"
    assert any(s.startswith("challenge") for s in steps) and "finalize" in steps
    assert "✓ nas: renewed" in out.out
    second = await asyncio.to_thread(served_leaf, port, pebble.root_pem())
    assert second.serial_number != first.serial_number  # the next handshake gets the new one
    [s] = engine.certificates()
    assert s.fingerprint.replace(":", "").lower() in out.out.replace(":", "").lower()

    rc = await asyncio.to_thread(cli.main, ["certs", "--config", str(runtime.config_path)])
    listing = capsys.readouterr().out
    assert rc == 0 and "the running homeproxy serves" in listing
    assert any(line.split()[:3] == ["nas", "acme", "ok"] for line in listing.splitlines())
