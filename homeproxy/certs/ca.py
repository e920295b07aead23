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

import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homeproxy.certs.ca_names import PERMITTED_NETWORKS as PERMITTED_NETWORKS
from homeproxy.certs.ca_names import PERMITTED_SUFFIXES as PERMITTED_SUFFIXES
from homeproxy.certs.ca_names import _allowed, _constraints_of, _ip
from homeproxy.certs.ca_names import names_outside as names_outside
from homeproxy.certs.ca_names import normalize_name as normalize_name
from homeproxy.certs.ca_profile import fingerprint as fingerprint
from homeproxy.certs.ca_profile import mobileconfig as mobileconfig
from homeproxy.certs.ca_root import BACKDATE as BACKDATE
from homeproxy.certs.ca_root import INTERMEDIATE_LIFETIME as INTERMEDIATE_LIFETIME
from homeproxy.certs.ca_root import LEAF_LIFETIME as LEAF_LIFETIME
from homeproxy.certs.ca_root import ROOT_LIFETIME as ROOT_LIFETIME
from homeproxy.certs.ca_root import CAError as CAError
from homeproxy.certs.ca_root import CANotCreated as CANotCreated
from homeproxy.certs.ca_root import (
    _due,
    _issued_by,
    _key_pem,
    _load_cert,
    _load_key,
    _load_or_make_root,
    _make_intermediate,
    _now,
    _same_key,
    _serial,
)
from homeproxy.certs.files import PUBLIC_FILE, locked, private_dir, write_atomic
from homeproxy.certs.status import IssuedCert


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
