"""A real pebble ACME server (with pebble-challtestsrv as its DNS) and a real HTTP-01 responder, on loopback.

TESTING.md's recipe: pebble's own TLS certificate is made here with cryptography (Debian ships
none); pebble-challtestsrv answers every name with 127.0.0.1, so pebble fetches
`http://<name>:<httpPort>/.well-known/acme-challenge/<token>` from `Responder`, which serves
whichever `ChallengeStore` the test gives it. No PEBBLE_VA_ALWAYS_VALID: validation is real.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from homeproxy.certs.challenges import ChallengeStore
from tests.conftest import free_port

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


class Responder:
    """HTTP-01 on a real socket: GET /.well-known/acme-challenge/<token> from `store`, else 404."""

    def __init__(self) -> None:
        self.store = ChallengeStore()
        self.requests: list[str] = []
        self.hang: threading.Event | None = None
        """When set to an event: every request waits for it (at most 20 s) and then gets no answer."""
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                responder.requests.append(f"{self.headers.get('Host')}{self.path}")
                if responder.hang is not None:
                    responder.hang.wait(20)
                    self.close_connection = True
                    return
                token = self.path.removeprefix(CHALLENGE_PREFIX) if self.path.startswith(CHALLENGE_PREFIX) else ""
                keyauth = responder.store.get(token) if token else None
                body = (keyauth or "not found").encode()
                self.send_response(200 if keyauth else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="http01-responder", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class Pebble:
    """A running pebble: its directory URL, the CA bundle for its API, and its management URL."""

    directory: str
    ca_bundle: Path
    management: str
    process: subprocess.Popen[bytes]
    log: Path
    _root: bytes = field(default=b"", repr=False)

    def get(self, path: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(self.management + path, context=ctx, timeout=10) as r:
            data: bytes = r.read()
            return data

    def root_pem(self) -> bytes:
        """The root that signs this pebble's certificates (new at every pebble start)."""
        if not self._root:
            self._root = self.get("/roots/0")
        return self._root


def _api_cert(directory: Path) -> Path:
    """A CA and a 127.0.0.1/localhost certificate for pebble's own HTTPS API; returns the CA bundle."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homeproxy test pebble API CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "api.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "api.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    bundle = directory / "api-ca.pem"
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return bundle


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r} did not listen on {port} within {timeout}s:\n{log.read_text()}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # by pid: only what we started
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class PebbleLab:
    """One challtestsrv (the DNS) and one responder for the session; pebbles started on demand."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.responder = Responder()
        self.dns_port = free_port()
        mgmt = free_port()
        self.dns_log = work / "challtestsrv.log"
        with self.dns_log.open("wb") as out:
            self.dns = subprocess.Popen(
                [CHALLTESTSRV, "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
                 "-tlsalpn01", "", "-management", f"127.0.0.1:{mgmt}", "-defaultIPv4", "127.0.0.1",
                 "-defaultIPv6", ""],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.pebbles: list[Pebble] = []
        _wait_port(mgmt, self.dns, self.dns_log)

    def start_pebble(self, *, http_port: int | None = None, **env: str) -> Pebble:
        """A new pebble (new roots, no accounts) validating against the shared responder, or
        against whatever listens on 127.0.0.1:`http_port` (a real homeproxy engine)."""
        n = len(self.pebbles)
        directory = self.work / f"pebble{n}"
        directory.mkdir()
        bundle = _api_cert(directory)
        api, mgmt = free_port(), free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{api}",
                "managementListenAddress": f"127.0.0.1:{mgmt}",
                "certificate": str(directory / "api.crt"),
                "privateKey": str(directory / "api.key"),
                "httpPort": http_port or self.responder.port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (directory / "config.json").write_text(json.dumps(config))
        log = directory / "pebble.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [PEBBLE, "-config", str(directory / "config.json"), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", **env},
            )
        pebble = Pebble(f"https://127.0.0.1:{api}/dir", bundle, f"https://127.0.0.1:{mgmt}", process, log)
        self.pebbles.append(pebble)
        _wait_port(api, process, log)
        _wait_port(mgmt, process, log)
        return pebble

    def close(self) -> None:
        for pebble in self.pebbles:
            _stop(pebble.process)
        _stop(self.dns)
        self.responder.close()


@pytest.fixture(scope="session")
def pebble_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleLab]:
    if not (os.access(PEBBLE, os.X_OK) and shutil.which(CHALLTESTSRV)):
        pytest.skip("pebble is not installed (apt-get install pebble)")
    lab = PebbleLab(tmp_path_factory.mktemp("pebble"))
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="session")
def pebble(pebble_lab: PebbleLab) -> Pebble:
    """The session's pebble, with its default 5% of nonces rejected (the client must retry badNonce)."""
    return pebble_lab.start_pebble()
