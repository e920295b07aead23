"""TLS contexts: the one listener context and the per-site ones that SNI picks between.

This is the whole of TLS as the HTTP side sees it: `SniContexts.listener` is an ordinary
`ssl.SSLContext` handed to whatever accepts connections (today aiohttp's `TCPSite`), so the
HTTP layer can change without touching certificates. The listener context holds no certificate
of its own: a client that names no site, or a name homeproxy has no certificate for, gets a
handshake failure (`unrecognized_name`), never another site's certificate.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from homeproxy.certs.files import private_dir
from homeproxy.certs.status import IssuedCert

#: Forward secrecy and AEAD only for TLS 1.2 (TLS 1.3's suites are all modern, set by OpenSSL).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1:!SHA256:!SHA384"
ALPN = ["http/1.1"]


def _base() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.set_alpn_protocols(ALPN)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    # Stateful resumption: OpenSSL keeps sessions in the listener's in-memory cache (bounded, each
    # gone after its timeout) and a client's ticket (TLS 1.3) or session ID (TLS 1.2) only names
    # one. No ticket-encryption key exists, so there is none to rotate or to leak; Python's ssl
    # has no API to rotate stateless ticket keys.
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 1  # one cached session per TLS 1.3 connection, not OpenSSL's two
    return ctx


def site_context(cert: IssuedCert, scratch: Path) -> ssl.SSLContext:
    """A server context serving `cert`. `ssl` loads chains only from files: the PEM goes through a
    0600 file in the private directory `scratch`, removed at once. Blocking (file I/O)."""
    ctx = _base()
    private_dir(scratch)
    fd, tmp = tempfile.mkstemp(prefix=".pair.", suffix=".pem", dir=scratch)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.chain_pem + b"\n" + cert.key_pem)
        ctx.load_cert_chain(tmp)
    finally:
        os.unlink(tmp)
    return ctx


def host_of(name: str) -> str:
    """SNI names and site hosts compare lower-case, without a trailing dot."""
    return name.strip().rstrip(".").lower()


class SniContexts:
    """The listener context and the host -> site context map its SNI callback reads.

    `update()` swaps the whole map at once (from any thread); a handshake reads it once, so it
    sees the old map or the new one. Connections already open keep the certificate they got.
    """

    def __init__(self) -> None:
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wild: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self.listener = _base()
        self.listener.sni_callback = self._pick

    def update(self, by_host: Mapping[str, ssl.SSLContext]) -> None:
        """Serve these hosts ("*.home.arpa" matches exactly one more label) with these contexts."""
        exact: dict[str, ssl.SSLContext] = {}
        wild: dict[str, ssl.SSLContext] = {}
        for host, ctx in by_host.items():
            h = host_of(host)
            if h.startswith("*."):
                wild[h[2:]] = ctx
            else:
                exact[h] = ctx
        with self._lock:
            self._exact, self._wild = exact, wild

    def lookup(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for an SNI name: the exact host, else a wildcard one label up, else None."""
        if not server_name:
            return None
        name = host_of(server_name)
        exact, wild = self._exact, self._wild
        found = exact.get(name)
        if found is None and "." in name:
            found = wild.get(name.split(".", 1)[1])
        return found

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host served, wildcards as "*.x"."""
        return tuple(self._exact) + tuple(f"*.{w}" for w in self._wild)

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        found = self.lookup(server_name)
        if found is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        conn.context = found
        return None
