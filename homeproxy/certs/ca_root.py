"""The CA's keys, root and intermediate: making them, and loading them from its directory."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from homeproxy.certs.ca_names import PERMITTED_NETWORKS, PERMITTED_SUFFIXES
from homeproxy.certs.files import PUBLIC_FILE, write_atomic

ROOT_LIFETIME = timedelta(days=3653)
INTERMEDIATE_LIFETIME = timedelta(days=365)
LEAF_LIFETIME = timedelta(days=30)
#: Leaves start an hour in the past, so a phone whose clock is a little behind still accepts them.
BACKDATE = timedelta(hours=1)


class CAError(Exception):
    """The CA's files cannot be used; the message says what to do."""


class CANotCreated(CAError):
    """`LocalCA.open(create=False)` found no CA (it is made when the first TLS site starts)."""


def _now(clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(clock(), UTC).replace(microsecond=0)


def _serial() -> int:
    return secrets.randbits(159) | 1  # positive, at most 20 octets (RFC 5280 4.1.2.2)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


def _ca_name(role: str, now: datetime) -> x509.Name:
    host = socket.gethostname().split(".")[0][:24] or "homeproxy"
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "homeproxy"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"homeproxy {role} {host} {now.year}"),
        ]
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _make_root(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _ca_name("root CA", now)
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(s) for s in PERMITTED_SUFFIXES]
        + [x509.IPAddress(ipaddress.ip_network(n)) for n in PERMITTED_NETWORKS],
        excluded_subtrees=None,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(constraints, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_intermediate(
    root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_ca_name("intermediate CA", now))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + INTERMEDIATE_LIFETIME, root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return cert, key


def _due(cert: x509.Certificate, now: datetime) -> bool:
    """A third of the lifetime is left (the same rule as for leaves)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= end - (end - start) / 3


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise CAError(f"{path} is not a PEM certificate") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # tighten a key someone loosened
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CAError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{path} is not an ECDSA key")
    return key


def _load_or_make_root(directory: Path, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = directory / "root.crt", directory / "root.key"
    start_over = (
        f"Devices trust this root, so homeproxy will not replace it by itself. To start a new CA, move "
        f"{directory} aside; homeproxy then makes a new root, which every device must trust again."
    )
    if crt.exists():
        if not key.exists():
            raise CAError(f"{key} is missing (the root's private key). {start_over}")
        cert, pkey = _load_cert(crt), _load_key(key)
        if not _same_key(cert, pkey):
            raise CAError(f"{key} does not belong to {crt}. {start_over}")
        if cert.not_valid_after_utc <= now:
            raise CAError(f"the root in {crt} expired on {cert.not_valid_after_utc:%Y-%m-%d}. {start_over}")
        return cert, pkey
    # No root.crt: a first start, or a crash after root.key was written (its cert never left the
    # machine, so nobody trusts it yet): make a new root either way. The key is written first.
    cert, pkey = _make_root(now)
    write_atomic(key, _key_pem(pkey))
    write_atomic(crt, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_FILE)
    for stale in ("intermediate.crt", "intermediate.key"):
        if (directory / stale).exists():
            os.unlink(directory / stale)
    return cert, pkey
