"""LocalCA for real: files and modes, the root and intermediate, leaves verified by `ssl` over loopback TLS."""

from __future__ import annotations

import hashlib
import plistlib
import re
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homeproxy import paths
from homeproxy.certs.ca import (
    CAError,
    CANotCreated,
    LocalCA,
    NameNotAllowed,
    default_directory,
    mobileconfig,
    names_outside,
)
from homeproxy.certs.status import IssuedCert
from tests.certs import handshake

DAY = 86400.0


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def chain(cert: IssuedCert) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(cert.chain_pem)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ca"


@pytest.fixture
def ca(ca_dir: Path) -> LocalCA:
    return LocalCA.open(ca_dir)


# --- files ---------------------------------------------------------------------------------


def test_default_directory_is_the_data_dir() -> None:
    assert default_directory() == paths.data_dir() / "ca"


def test_first_open_creates_private_files(ca: LocalCA, ca_dir: Path) -> None:
    assert mode(ca_dir) == 0o700
    names = ("root.crt", "root.key", "intermediate.crt", "intermediate.key")
    assert set(ca.files.values()) == {ca_dir / n for n in names}
    for path in ca.files.values():
        assert path.is_file()
    assert mode(ca_dir / "root.key") == 0o600
    assert mode(ca_dir / "intermediate.key") == 0o600
    assert not [p for p in ca_dir.iterdir() if p.name.endswith(".tmp")]


def test_directory_is_0700_even_with_a_loose_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o000)
    try:
        ca = LocalCA.open(tmp_path / "loose" / "ca")
    finally:
        os.umask(old)
    assert mode(ca.directory) == 0o700
    assert mode(ca.directory / "root.key") == 0o600


def test_reopening_loads_rather_than_recreates(ca: LocalCA, ca_dir: Path) -> None:
    before = {p: p.read_bytes() for p in ca.files.values()}
    again = LocalCA.open(ca_dir)
    assert again.fingerprint() == ca.fingerprint()
    assert again.intermediate.serial_number == ca.intermediate.serial_number
    assert {p: p.read_bytes() for p in again.files.values()} == before


def test_open_without_create_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(CANotCreated):
        LocalCA.open(tmp_path / "none", create=False)
    assert not (tmp_path / "none").exists()


def test_open_without_create_reads_an_existing_ca(ca: LocalCA, ca_dir: Path) -> None:
    reader = LocalCA.open(ca_dir, create=False)
    assert reader.fingerprint() == ca.fingerprint()
    with pytest.raises(CAError):
        reader.issue(["a.home.arpa"])  # no keys loaded: read-only


def test_two_opens_at_once_make_one_root(ca_dir: Path) -> None:
    found: list[str] = []
    threads = [threading.Thread(target=lambda: found.append(LocalCA.open(ca_dir).fingerprint())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(found) == 4 and len(set(found)) == 1
    assert LocalCA.open(ca_dir).fingerprint() == found[0]


def test_a_loosened_key_is_tightened(ca: LocalCA, ca_dir: Path) -> None:
    (ca_dir / "root.key").chmod(0o644)
    LocalCA.open(ca_dir)
    assert mode(ca_dir / "root.key") == 0o600


def test_a_root_without_its_key_is_an_error_not_a_new_root(ca: LocalCA, ca_dir: Path) -> None:
    root = (ca_dir / "root.crt").read_bytes()
    (ca_dir / "root.key").unlink()
    with pytest.raises(CAError, match=r"root\.key is missing") as e:
        LocalCA.open(ca_dir)
    assert "move" in str(e.value)
    assert (ca_dir / "root.crt").read_bytes() == root


def test_a_root_with_another_key_is_an_error(ca: LocalCA, ca_dir: Path, tmp_path: Path) -> None:
    other = LocalCA.open(tmp_path / "other")
    (ca_dir / "root.key").write_bytes((other.directory / "root.key").read_bytes())
    with pytest.raises(CAError, match="does not belong"):
        LocalCA.open(ca_dir)


def test_a_garbage_root_is_an_error(ca: LocalCA, ca_dir: Path) -> None:
    (ca_dir / "root.crt").write_bytes(b"not a certificate\n")
    with pytest.raises(CAError, match="not a PEM certificate"):
        LocalCA.open(ca_dir)


def test_a_key_left_by_a_crash_before_the_root_was_written_is_replaced(ca_dir: Path) -> None:
    ca_dir.mkdir(parents=True)
    (ca_dir / "root.key").write_bytes(b"half-made\n")
    ca = LocalCA.open(ca_dir)
    assert ca.root.subject == ca.root.issuer
    assert b"half-made" not in (ca_dir / "root.key").read_bytes()


def test_a_broken_intermediate_is_replaced_and_the_root_kept(ca: LocalCA, ca_dir: Path) -> None:
    (ca_dir / "intermediate.crt").write_bytes(b"garbage")
    again = LocalCA.open(ca_dir)
    assert again.fingerprint() == ca.fingerprint()
    assert again.intermediate.serial_number != ca.intermediate.serial_number
    again.intermediate.verify_directly_issued_by(again.root)


def test_an_expired_root_is_an_error(ca_dir: Path) -> None:
    LocalCA.open(ca_dir)
    with pytest.raises(CAError, match="expired"):
        LocalCA.open(ca_dir, clock=lambda: time.time() + 11 * 365 * DAY)


# --- the root and the intermediate ---------------------------------------------------------


def test_root_is_a_long_lived_name_constrained_p256_ca(ca: LocalCA) -> None:
    root = ca.root
    assert root.subject == root.issuer
    root.verify_directly_issued_by(root)
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    life = root.not_valid_after_utc - root.not_valid_before_utc
    assert timedelta(days=3650) <= life <= timedelta(days=3660)
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    nc = root.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    permitted = nc.value.permitted_subtrees or []
    assert x509.DNSName("home.arpa") in permitted and x509.DNSName("local") in permitted
    assert any(isinstance(g, x509.IPAddress) and str(g.value) == "192.168.0.0/16" for g in permitted)
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "homeproxy"


def test_intermediate_is_signed_by_the_root_for_a_year(ca: LocalCA) -> None:
    inter = ca.intermediate
    inter.verify_directly_issued_by(ca.root)
    bc = inter.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    life = inter.not_valid_after_utc - inter.not_valid_before_utc
    assert timedelta(days=364) <= life <= timedelta(days=366)


def test_fingerprint_is_sha256_of_the_root_der(ca: LocalCA) -> None:
    fp = ca.fingerprint()
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fp)
    assert fp.replace(":", "").lower() == hashlib.sha256(ca.root_der()).hexdigest()
    assert x509.load_pem_x509_certificate(ca.root_pem()) == ca.root
    assert b"PRIVATE" not in ca.root_pem()


def test_intermediate_is_renewed_when_a_third_is_left(ca_dir: Path) -> None:
    start = time.time()
    first = LocalCA.open(ca_dir, clock=lambda: start)
    at_200_days = LocalCA.open(ca_dir, clock=lambda: start + 200 * DAY)
    assert at_200_days.intermediate.serial_number == first.intermediate.serial_number
    at_250_days = LocalCA.open(ca_dir, clock=lambda: start + 250 * DAY)
    assert at_250_days.intermediate.serial_number != first.intermediate.serial_number
    assert at_250_days.fingerprint() == first.fingerprint()
    assert at_250_days.intermediate.not_valid_before_utc > first.intermediate.not_valid_after_utc - timedelta(days=122)


def test_a_long_lived_ca_renews_its_intermediate_when_issuing(ca_dir: Path, tmp_path: Path) -> None:
    now = [time.time()]
    ca = LocalCA.open(ca_dir, clock=lambda: now[0])
    old = ca.intermediate.serial_number
    assert ca.refresh() is False
    now[0] += 250 * DAY
    leaf = ca.issue(["a.home.arpa"])
    assert ca.intermediate.serial_number != old
    assert chain(leaf)[1].serial_number == ca.intermediate.serial_number
    # the file on disk is the new one too
    assert LocalCA.open(ca_dir, clock=lambda: now[0]).intermediate.serial_number == ca.intermediate.serial_number


# --- leaves, verified by a real TLS client -------------------------------------------------


def test_leaf_verifies_against_the_root_over_tls(ca: LocalCA, tmp_path: Path) -> None:
    leaf = ca.issue(["ha.home.arpa", "ha.local"])
    served = handshake(leaf, ca.root_pem(), "ha.home.arpa", tmp_path)
    assert served == chain(leaf)[0]
    handshake(leaf, ca.root_pem(), "ha.local", tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(leaf, ca.root_pem(), "plex.home.arpa", tmp_path)


def test_leaf_is_not_trusted_by_another_root(ca: LocalCA, tmp_path: Path) -> None:
    other = LocalCA.open(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ca.issue(["ha.home.arpa"]), other.root_pem(), "ha.home.arpa", tmp_path)


def test_leaf_extensions(ca: LocalCA) -> None:
    leaf = ca.issue(["HA.home.arpa.", "10.0.0.5", "ha.home.arpa"])
    assert leaf.names == ("ha.home.arpa", "10.0.0.5")
    cert, inter = chain(leaf)
    assert len(chain(leaf)) == 2 and inter == ca.intermediate  # leaf + intermediate, never the root
    cert.verify_directly_issued_by(ca.intermediate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ha.home.arpa"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ha.home.arpa"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert leaf.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    private = serialization.load_pem_private_key(leaf.key_pem, None)
    assert private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_leaf_lifetime_is_30_days_by_default(ca_dir: Path) -> None:
    now = time.time()
    ca = LocalCA.open(ca_dir, clock=lambda: now)
    leaf = ca.issue(["a.home.arpa"])
    issued = datetime.fromtimestamp(now, UTC).replace(microsecond=0)
    assert leaf.not_after - issued == timedelta(days=30)
    assert leaf.not_before < issued  # backdated a little, for phones with slow clocks
    assert chain(leaf)[0].not_valid_after_utc == leaf.not_after
    short = ca.issue(["a.home.arpa"], lifetime=timedelta(days=2))
    assert short.not_after - issued == timedelta(days=2)
    assert leaf.renew_at() < leaf.not_after - timedelta(days=9)


def test_leaf_never_outlives_the_intermediate(ca: LocalCA) -> None:
    leaf = ca.issue(["a.home.arpa"], lifetime=timedelta(days=5000))
    assert leaf.not_after == ca.intermediate.not_valid_after_utc


def test_wildcard_leaf_covers_exactly_one_label(ca: LocalCA, tmp_path: Path) -> None:
    leaf = ca.issue(["*.home.arpa"])
    assert handshake(leaf, ca.root_pem(), "a.home.arpa", tmp_path)
    assert handshake(leaf, ca.root_pem(), "plex.home.arpa", tmp_path)
    for host in ("a.b.home.arpa", "home.arpa"):
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(leaf, ca.root_pem(), host, tmp_path)


@pytest.mark.parametrize("address", ["192.168.1.5", "127.0.0.1", "::1"])
def test_ip_san_leaf_verifies(ca: LocalCA, tmp_path: Path, address: str) -> None:
    leaf = ca.issue([address])
    cert = chain(leaf)[0]
    assert not cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)  # a CN that looks like a host fails NC
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    handshake(leaf, ca.root_pem(), address, tmp_path)


def test_public_and_single_label_names_are_refused(ca: LocalCA) -> None:
    with pytest.raises(NameNotAllowed) as e:
        ca.issue(["ha.home.arpa", "nas.example.org", "nas", "8.8.8.8"])
    assert e.value.names == ("nas.example.org", "nas", "8.8.8.8")
    assert "nas.example.org" in str(e.value) and "acme" in str(e.value)
    assert names_outside(["a.home.arpa", "x.internal", "PRINTER.LOCAL", "10.1.2.3", "fd00::1", "a.example.com"]) == [
        "a.example.com"
    ]


def test_the_name_constraints_are_enforced_by_tls_clients(ca: LocalCA, tmp_path: Path) -> None:
    """A leaf for a public name signed with the CA's own key (as a thief would) is refused."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    signer = ca._intermediate_key
    assert signer is not None
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example.com")]), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    stolen = IssuedCert(
        chain_pem=forged.public_bytes(pem) + ca.intermediate.public_bytes(pem),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        names=("bank.example.com",),
        not_before=now,
        not_after=now,
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(stolen, ca.root_pem(), "bank.example.com", tmp_path)


def test_issue_needs_a_name(ca: LocalCA) -> None:
    with pytest.raises(ValueError):
        ca.issue([])
    with pytest.raises(ValueError):
        ca.issue([" "])


# --- the iOS profile -----------------------------------------------------------------------


def test_mobileconfig_holds_only_the_root(ca: LocalCA) -> None:
    data = mobileconfig(ca.root_der())
    profile = plistlib.loads(data)
    assert profile["PayloadType"] == "Configuration"
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    assert payload["PayloadContent"] == ca.root_der()
    assert ca.fingerprint() in profile["PayloadDescription"]
    assert b"PRIVATE" not in data
    for key_file in ("root.key", "intermediate.key"):
        pkey = serialization.load_pem_private_key((ca.directory / key_file).read_bytes(), None)
        der = pkey.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        assert der not in data
    assert ca.intermediate.public_bytes(serialization.Encoding.DER) not in data


def test_mobileconfig_is_deterministic_per_root(ca: LocalCA, tmp_path: Path) -> None:
    one, two = mobileconfig(ca.root_der()), mobileconfig(ca.root_der())
    assert one == two
    uuid_re = r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"
    profile = plistlib.loads(one)
    assert re.fullmatch(uuid_re, profile["PayloadUUID"])
    assert re.fullmatch(uuid_re, profile["PayloadContent"][0]["PayloadUUID"])
    other = plistlib.loads(mobileconfig(LocalCA.open(tmp_path / "other").root_der(), name="lab"))
    assert other["PayloadUUID"] != profile["PayloadUUID"]
    assert other["PayloadDisplayName"] == "lab"
