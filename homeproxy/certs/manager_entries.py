"""A site's certificate as `CertManager` holds it (`_Entry`), what `prepare()` hands `commit()` (`Prepared`),
the served root (`RootDownload`) and `CertError`."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from homeproxy.certs.status import IssuedCert
from homeproxy.config.model import TlsSettings


class CertError(Exception):
    """A site's certificate could not be loaded or issued; the message names the site and the file."""


@dataclass(frozen=True, slots=True)
class RootDownload:
    """The local CA's public root, as served on plain HTTP (never anything else of the CA)."""

    pem: bytes
    der: bytes
    mobileconfig: bytes
    fingerprint: str


@dataclass(frozen=True, slots=True)
class _Entry:
    site: str
    hosts: tuple[str, ...]
    issuer: str
    cert: IssuedCert | None
    context: ssl.SSLContext | None
    state: str
    files: tuple[str, str] = ("", "")
    signature: tuple[float, ...] = ()
    last_error: str = ""
    failures: int = 0
    retry_at: float = 0.0
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class Prepared:
    """What `prepare()` made, for `commit()`."""

    entries: dict[str, _Entry]
    tls: TlsSettings
    root: RootDownload | None
    base: dict[str, _Entry]
    """The entries in force when `prepare()` ran (an unchanged site's entry is the same object)."""


def _leaf_fingerprint(cert: IssuedCert) -> str:
    der = x509.load_pem_x509_certificate(cert.chain_pem).public_bytes(serialization.Encoding.DER)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _signature(paths: tuple[str, str]) -> tuple[float, ...]:
    out: list[float] = []
    for p in paths:
        st = Path(p).expanduser().stat()
        out += [st.st_mtime_ns, st.st_size, st.st_ino]
    return tuple(out)
