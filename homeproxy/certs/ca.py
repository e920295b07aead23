"""homeproxy's local certificate authority: its root and intermediate, the leaves it issues, the iOS profile.

Files (in `paths.data_dir() / "ca"`, mode 0700): `root.crt`, `root.key`, `intermediate.crt`,
`intermediate.key`; keys are written 0600, atomically. `LocalCA.open()` makes them on first
use and loads them afterwards. It never replaces an existing root on its own: every device that
trusts it would silently stop trusting homeproxy. A broken or half-missing root is a `CAError`
that says how to start over. The intermediate is another matter: nobody installs it, so `open()`
(and `issue()`) replace it when a third of its year is left, or when it is missing or broken.

Keys are ECDSA P-256 throughout (every TLS client homeproxy's users have speaks it). The root
lives ten years; the intermediate one year; leaves 30 days, far under Apple's 825-day rule, so
the root is the one thing a phone ever needs.

Name constraints, decided: the root is name-constrained (RFC 5280 4.2.1.10, critical) to the
private names and addresses of a home network: `home.arpa` (RFC 8375), `internal` (ICANN's
private TLD), `local` (mDNS), `lan`, `home`, `localdomain`, `localhost`, `test`, and the
private, loopback, link-local and CGNAT (Tailscale) address ranges. The reason is the blast
radius: this root's key sits on a home server, and every phone that trusts an unconstrained
root would accept a certificate for its owner's bank made with a stolen copy of that key. With
the constraints, the worst a thief can do is impersonate the home network's own names. Every
platform homeproxy's users have (iOS/macOS, Android 7+, Windows, Firefox, Chrome, OpenSSL)
enforces them.

The cost falls on a user who later adds a public name (`nas.example.org`) to a site on the
internal issuer. Such a leaf would be rejected by every client, so it is refused before anyone
sees it: the config loader reports the host (`names_outside`), and `issue()` raises
`NameNotAllowed`. A public name should use `issuer = "acme"` (trusted everywhere, also by guests
who never installed the root) or the user's own `cert`/`key` (certbot with a DNS challenge for a
name that is only on the LAN). Widening the constraints later would mean a new root on every
device, which is exactly the failure this module exists to avoid, so the list is generous from
the start. Single-label names (`nas`) cannot be expressed in a constraint and are refused too.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import plistlib
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homeproxy.certs.files import PUBLIC_FILE, locked, private_dir, write_atomic
from homeproxy.certs.status import IssuedCert

ROOT_LIFETIME = timedelta(days=3653)
INTERMEDIATE_LIFETIME = timedelta(days=365)
LEAF_LIFETIME = timedelta(days=30)
#: Leaves start an hour in the past, so a phone whose clock is a little behind still accepts them.
BACKDATE = timedelta(hours=1)

#: The DNS suffixes the root may vouch for (see the module docstring).
PERMITTED_SUFFIXES = ("home.arpa", "internal", "local", "lan", "home", "localdomain", "localhost", "test")
#: The address ranges the root may vouch for (RFC 1918, RFC 6598 CGNAT, loopback, link-local, ULA).
PERMITTED_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
)

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class CAError(Exception):
    """The CA's files cannot be used; the message says what to do."""


class CANotCreated(CAError):
    """`LocalCA.open(create=False)` found no CA (it is made when the first TLS site starts)."""


class NameNotAllowed(CAError):
    """The local CA may not issue for these names (its root is name-constrained)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        listed = ", ".join(self.names)
        super().__init__(
            f"homeproxy's local CA cannot issue a certificate for {listed}: its root only vouches for "
            f"names under {', '.join('.' + s for s in PERMITTED_SUFFIXES)} and private addresses. "
            'Use issuer = "acme" for a public name, or your own cert and key.'
        )


def default_directory() -> Path:
    """Where the CA lives unless told otherwise: `paths.data_dir() / "ca"`."""
    from homeproxy import paths

    return paths.data_dir() / "ca"


def normalize_name(name: str) -> str:
    """A host as it goes into a certificate: trimmed, lower case, no trailing dot, IDNA A-labels."""
    out = name.strip().rstrip(".").lower()
    if not out:
        raise ValueError("an empty name cannot be in a certificate")
    if not out.isascii():
        out = out.encode("idna").decode("ascii")
    return out


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def _allowed(name: str, suffixes: Sequence[str], networks: Sequence[_Net]) -> bool:
    """RFC 5280 4.2.1.10: a permitted list of a type constrains only names of that type."""
    ip = _ip(name)
    if ip is not None:
        return not networks or any(ip.version == n.version and ip in n for n in networks)
    if not suffixes:
        return True
    return any(name == s or name.endswith("." + s) for s in suffixes)


def names_outside(names: Sequence[str]) -> list[str]:
    """The names a new homeproxy root (`PERMITTED_SUFFIXES` and `PERMITTED_NETWORKS`) cannot vouch for."""
    nets = [ipaddress.ip_network(n) for n in PERMITTED_NETWORKS]
    return [n for n in names if not _allowed(normalize_name(n), PERMITTED_SUFFIXES, nets)]


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


class LocalCA:
    """homeproxy's own root + intermediate; issues leaves."""

    def __init__(
        self,
        directory: Path,
        root: x509.Certificate,
        root_key: ec.EllipticCurvePrivateKey | None,
        intermediate: x509.Certificate,
        intermediate_key: ec.EllipticCurvePrivateKey | None,
        clock: Callable[[], float],
    ) -> None:
        self.directory = directory
        self.root = root
        self.intermediate = intermediate
        self._root_key = root_key
        self._intermediate_key = intermediate_key
        self._clock = clock
        self._lock = threading.Lock()
        self._suffixes, self._networks = _constraints_of(root)

    # --- opening ---

    @classmethod
    def open(cls, directory: Path, *, create: bool = True, clock: Callable[[], float] = time.time) -> LocalCA:
        """Load the CA in `directory`, making it (root, then intermediate) on first use.

        With `create=False` nothing is written: no CA is `CANotCreated`, and an intermediate
        that is due is loaded as it is (for readers such as `homeproxy ca info` and the TUI).
        """
        if not create:
            if not (directory / "root.crt").exists() or not (directory / "intermediate.crt").exists():
                raise CANotCreated(f"no local CA in {directory} yet")
            root = _load_cert(directory / "root.crt")
            return cls(directory, root, None, _load_cert(directory / "intermediate.crt"), None, clock)
        private_dir(directory)
        with locked(directory):
            root, root_key = _load_or_make_root(directory, _now(clock))
            ca = cls(directory, root, root_key, root, None, clock)
            ca._load_or_renew_intermediate()
        return ca

    def _load_or_renew_intermediate(self) -> None:
        """Under the directory lock: keep a good intermediate, else make and write a new one."""
        assert self._root_key is not None
        now = _now(self._clock)
        crt, key = self.directory / "intermediate.crt", self.directory / "intermediate.key"
        try:
            cert, pkey = _load_cert(crt), _load_key(key)
            good = (
                _same_key(cert, pkey)
                and cert.issuer == self.root.subject
                and _issued_by(cert, self.root)
                and not _due(cert, now)
            )
        except (OSError, CAError):
            good = False
        if not good:
            cert, pkey = _make_intermediate(self.root, self._root_key, now)
            write_atomic(key, _key_pem(pkey))
            write_atomic(crt, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_FILE)
        self.intermediate, self._intermediate_key = cert, pkey

    def refresh(self) -> bool:
        """Replace the intermediate if a third of its life is left; True if it was replaced."""
        with self._lock:
            if self._root_key is None:
                raise CAError("this CA was opened read-only (create=False)")
            if not _due(self.intermediate, _now(self._clock)):
                return False
            old = self.intermediate
            with locked(self.directory):
                self._load_or_renew_intermediate()
            return self.intermediate is not old

    # --- issuing ---

    @property
    def permitted_suffixes(self) -> tuple[str, ...]:
        """The DNS suffixes the root's name constraints allow (empty: the root is unconstrained)."""
        return self._suffixes

    def names_outside(self, names: Sequence[str]) -> list[str]:
        """The names this CA's root may not vouch for (its own name constraints)."""
        return [n for n in names if not _allowed(normalize_name(n), self._suffixes, self._networks)]

    def issue(self, names: Sequence[str], *, lifetime: timedelta = LEAF_LIFETIME) -> IssuedCert:
        """A new ECDSA P-256 leaf for `names` (DNS names, wildcards, IP addresses), chain = leaf + intermediate.

        CPU and, when the intermediate is due, a small file write: run it in a thread.
        Raises `NameNotAllowed` for names outside the root's constraints.
        """
        wanted = list(dict.fromkeys(normalize_name(n) for n in names))
        if not wanted:
            raise ValueError("a certificate needs at least one name")
        outside = self.names_outside(wanted)
        if outside:
            raise NameNotAllowed(outside)
        self.refresh()
        with self._lock:
            intermediate, signer = self.intermediate, self._intermediate_key
        assert signer is not None
        sans: list[x509.GeneralName] = []
        for n in wanted:
            ip = _ip(n)
            sans.append(x509.IPAddress(ip) if ip is not None else x509.DNSName(n))
        now = _now(self._clock)
        key = ec.generate_private_key(ec.SECP256R1())
        # CN: the first DNS name of at most 64 characters (RFC 5280 ub-common-name); clients use the
        # SANs anyway. Never an IP address: OpenSSL checks a CN that looks like a host name against
        # the root's DNS name constraints when the leaf has no DNS SAN, and "192.168.1.5" fails them.
        cn = next((n for n in wanted if len(n) <= 64 and _ip(n) is None), None)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
        not_after = min(now + lifetime, intermediate.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(intermediate.subject)
            .public_key(key.public_key())
            .serial_number(_serial())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            # With an empty subject the SAN extension must be critical (RFC 5280 4.2.1.6).
            .add_extension(x509.SubjectAlternativeName(sans), critical=cn is None)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
            .sign(signer, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        return IssuedCert(
            chain_pem=cert.public_bytes(pem) + intermediate.public_bytes(pem),
            key_pem=_key_pem(key),
            names=tuple(wanted),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    # --- the public root ---

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    def fingerprint(self) -> str:
        """SHA-256 of the root's DER, as "AB:CD:..." (what a phone shows in the certificate's details)."""
        return fingerprint(self.root_der())

    @property
    def files(self) -> dict[str, Path]:
        """What `homeproxy ca info` lists, by role."""
        d = self.directory
        return {
            "root certificate": d / "root.crt",
            "root key": d / "root.key",
            "intermediate certificate": d / "intermediate.crt",
            "intermediate key": d / "intermediate.key",
        }


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as upper-case hex pairs joined by colons."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _constraints_of(root: x509.Certificate) -> tuple[tuple[str, ...], tuple[_Net, ...]]:
    try:
        ext = root.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return (), ()
    permitted = ext.permitted_subtrees or []
    suffixes = tuple(g.value.lstrip(".").lower() for g in permitted if isinstance(g, x509.DNSName))
    nets = tuple(g.value for g in permitted if isinstance(g, x509.IPAddress) and not isinstance(g.value, str))
    return suffixes, tuple(n for n in nets if isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network))


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


def mobileconfig(root_der: bytes, *, name: str = "homeproxy local CA") -> bytes:
    """An iOS/macOS configuration profile (unsigned XML plist) holding only the root certificate.

    UUIDs and identifiers come from the root's fingerprint, so the same root always gives the
    same profile and installing a new one replaces it.
    """
    digest = hashlib.sha256(root_der).hexdigest()
    ns = uuid.UUID("8d7b6f0e-2f4a-5c1e-9b8a-6f686f6d6570")
    payload = {
        "PayloadCertificateFileName": "homeproxy-root.cer",
        "PayloadContent": root_der,
        "PayloadDescription": "Adds homeproxy's root certificate, so this device trusts the home sites it serves.",
        "PayloadDisplayName": name,
        "PayloadIdentifier": f"org.homeproxy.root.{digest[:16]}.cert",
        "PayloadType": "com.apple.security.root",
        "PayloadUUID": str(uuid.uuid5(ns, "cert:" + digest)).upper(),
        "PayloadVersion": 1,
    }
    profile = {
        "PayloadContent": [payload],
        "PayloadDescription": f"Installs the root certificate of {name} (SHA-256 {fingerprint(root_der)}). "
        "After installing, turn on full trust in Settings > General > About > Certificate Trust Settings.",
        "PayloadDisplayName": name,
        "PayloadIdentifier": f"org.homeproxy.root.{digest[:16]}",
        "PayloadOrganization": "homeproxy",
        "PayloadRemovalDisallowed": False,
        "PayloadType": "Configuration",
        "PayloadUUID": str(uuid.uuid5(ns, "profile:" + digest)).upper(),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
