"""Tests for homeproxy/certs; `handshake` serves a chain on a real loopback TLS socket."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509

from homeproxy.certs.status import IssuedCert


def write_pair(cert: IssuedCert, directory: Path, stem: str = "site") -> tuple[Path, Path]:
    """The chain and key as files (key 0600), for `ssl.SSLContext.load_cert_chain` and `load_pair`."""
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    crt.write_bytes(cert.chain_pem)
    key.touch(mode=0o600)
    key.write_bytes(cert.key_pem)
    return crt, key


def handshake(cert: IssuedCert, root_pem: bytes, server_hostname: str, tmp: Path) -> x509.Certificate:
    """Serve `cert` on 127.0.0.1 and connect with a client that trusts only `root_pem`, verification on.

    Returns the leaf the client verified; raises `ssl.SSLCertVerificationError` (or another
    `ssl.SSLError`) when the client refuses it.
    """
    crt, key = write_pair(cert, tmp / "served")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    client_ctx = ssl.create_default_context(cadata=root_pem.decode("ascii"))
    assert client_ctx.verify_mode == ssl.CERT_REQUIRED and client_ctx.check_hostname
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.settimeout(10)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")
        except (OSError, ssl.SSLError):
            pass  # the client refused us: its side of the story is the test's
        finally:
            conn.close()

    thread = threading.Thread(target=serve, name="tls-test-server", daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            assert tls.recv(5) == b"hello"
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der)
    finally:
        listener.close()
        thread.join(10)
