"""Your own certificate files for real: PEM chains and keys made with LocalCA or cryptography in tmp_path.

`load_pair` must accept what certbot, acme.sh and openssl write, and refuse the rest with our own
sentence naming the file to fix (`PairError.key` is the config key to blame). `covers` must agree
with a real TLS client's host name check.
"""

from __future__ import annotations

import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homeproxy.certs.ca import LocalCA
from homeproxy.certs.pairs import MAX_FILE_BYTES, PairError, cert_names, covers, load_pair, uncovered_hosts
from tests.certs import handshake, write_pair

PEM = serialization.Encoding.PEM
#: The parameters block `openssl ecparam -genkey -name prime256v1` writes before the key.
EC_PARAMETERS = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA.open(tmp_path / "ca")


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed(
    key: CertificateIssuerPrivateKeyTypes,
    names: list[x509.GeneralName],
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> x509.Certificate:
    """A self-signed server certificate, as `openssl req -x509` makes one."""
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(hours=1))
        .not_valid_after(not_after or now + timedelta(days=10))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(PEM, fmt, serialization.NoEncryption())


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def refused(cert: Path, key: Path) -> PairError:
    with pytest.raises(PairError) as info:
        load_pair(cert, key)
    return info.value


# --- pairs that load --------------------------------------------------------------------------


def test_a_chain_and_its_key_load_and_serve_tls(ca: LocalCA, tmp_path: Path) -> None:
    issued = ca.issue(["ha.home.arpa", "10.0.0.5"])
    crt, key = write_pair(issued, tmp_path / "files")
    pair = load_pair(crt, key)
    assert pair.names == ("ha.home.arpa", "10.0.0.5")
    leaf, inter = x509.load_pem_x509_certificates(pair.chain_pem)
    assert inter == ca.intermediate
    assert pair.not_before == leaf.not_valid_before_utc == issued.not_before
    assert pair.not_after == leaf.not_valid_after_utc == issued.not_after
    assert pair.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    # what load_pair returns is what the engine serves: a real client verifies it against the root
    assert handshake(pair, ca.root_pem(), "ha.home.arpa", tmp_path) == leaf


def test_text_around_the_pem_blocks_is_dropped(ca: LocalCA, tmp_path: Path) -> None:
    """openssl and some tools write `Bag Attributes` or the decoded certificate above each block."""
    issued = ca.issue(["ha.home.arpa"])
    crt = write(tmp_path / "noisy.crt", b"subject=CN = ha.home.arpa\nissuer=homeproxy\n" + issued.chain_pem + b"\n\n")
    key = write(tmp_path / "noisy.key", b"Bag Attributes\n    localKeyID: 01\n" + issued.key_pem)
    pair = load_pair(crt, key)
    assert pair.chain_pem == issued.chain_pem
    assert b"subject=" not in pair.chain_pem and b"Bag" not in pair.key_pem


def test_home_directory_paths_are_expanded(ca: LocalCA) -> None:
    write_pair(ca.issue(["ha.home.arpa"]), Path.home() / "certs")
    assert load_pair("~/certs/site.crt", "~/certs/site.key").names == ("ha.home.arpa",)


def test_an_unknown_home_directory_is_a_pair_error(tmp_path: Path) -> None:
    error = refused(Path("~no-such-user-homeproxy/site.crt"), tmp_path / "site.key")
    assert error.key == "cert" and error.file == "~no-such-user-homeproxy/site.crt"
    assert "no-such-user-homeproxy" in error.message


def test_rsa_pkcs1_key_and_self_signed_certificate(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    cert = self_signed(rsa_key, [x509.DNSName("nas.example.org")])
    crt = write(tmp_path / "rsa.crt", cert.public_bytes(PEM))
    key = write(tmp_path / "rsa.key", key_pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL))
    assert key.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    pair = load_pair(crt, key)
    assert pair.names == ("nas.example.org",)
    assert pair.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # re-encoded as PKCS#8
    loaded = serialization.load_pem_private_key(pair.key_pem, None)
    assert isinstance(loaded, rsa.RSAPrivateKey) and loaded.private_numbers() == rsa_key.private_numbers()
    assert handshake(pair, cert.public_bytes(PEM), "nas.example.org", tmp_path) == cert


def test_ec_key_as_openssl_ecparam_writes_it(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(ec_key, [x509.DNSName("ha.home.arpa")])
    crt = write(tmp_path / "ec.crt", cert.public_bytes(PEM))
    key = write(tmp_path / "ec.key", EC_PARAMETERS + key_pem(ec_key, serialization.PrivateFormat.TraditionalOpenSSL))
    pair = load_pair(crt, key)
    assert pair.names == ("ha.home.arpa",)
    assert handshake(pair, cert.public_bytes(PEM), "ha.home.arpa", tmp_path) == cert


def test_one_file_holding_both_chain_and_key(ca: LocalCA, tmp_path: Path) -> None:
    """HAProxy-style combined PEM, named as both cert and key."""
    issued = ca.issue(["ha.home.arpa"])
    both = write(tmp_path / "both.pem", issued.chain_pem + issued.key_pem)
    pair = load_pair(both, both)
    assert pair.chain_pem == issued.chain_pem
    assert b"PRIVATE KEY" not in pair.chain_pem


def test_a_leaf_without_subject_alt_names_names_nothing(tmp_path: Path) -> None:
    """Clients ignore the CN (RFC 6125), so a CN-only certificate covers no host."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(ec_key, [])
    crt = write(tmp_path / "cn.crt", cert.public_bytes(PEM))
    key = write(tmp_path / "cn.key", key_pem(ec_key, serialization.PrivateFormat.PKCS8))
    pair = load_pair(crt, key)
    assert pair.names == () == cert_names(cert)
    assert uncovered_hosts(pair, ["test"]) == ["test"]


# --- pairs that do not -----------------------------------------------------------------------


def test_the_key_of_another_certificate(ca: LocalCA, tmp_path: Path) -> None:
    crt, _ = write_pair(ca.issue(["ha.home.arpa"]), tmp_path, "ha")
    _, other_key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path, "other")
    error = refused(crt, other_key)
    assert error.key == "key"
    assert error.file == str(other_key)
    assert error.message == f"this key does not belong to the certificate in {crt}"
    assert str(error) == f"{other_key}: {error.message}"


def test_the_leaf_must_come_first(ca: LocalCA, tmp_path: Path) -> None:
    issued = ca.issue(["ha.home.arpa"])
    leaf, inter = x509.load_pem_x509_certificates(issued.chain_pem)
    crt = write(tmp_path / "reversed.crt", inter.public_bytes(PEM) + leaf.public_bytes(PEM))
    key = write(tmp_path / "site.key", issued.key_pem)
    error = refused(crt, key)
    assert error.key == "cert" and error.file == str(crt)
    assert "number 2 in the file" in error.message
    assert "first" in error.message and "fullchain.pem" in error.message


def test_an_expired_leaf(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ended = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    cert = self_signed(ec_key, [x509.DNSName("ha.home.arpa")], not_before=ended - timedelta(days=90), not_after=ended)
    crt = write(tmp_path / "old.crt", cert.public_bytes(PEM))
    key = write(tmp_path / "old.key", key_pem(ec_key, serialization.PrivateFormat.PKCS8))
    error = refused(crt, key)
    assert error.key == "cert" and error.file == str(crt)
    assert error.message == "the certificate expired on 2024-03-01 12:30 UTC"


def test_expiry_is_judged_at_now(ca: LocalCA, tmp_path: Path) -> None:
    issued = ca.issue(["ha.home.arpa"])
    crt, key = write_pair(issued, tmp_path)
    assert load_pair(crt, key, now=issued.not_after - timedelta(seconds=1)).not_after == issued.not_after
    with pytest.raises(PairError, match="expired on"):
        load_pair(crt, key, now=issued.not_after + timedelta(seconds=1))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "no PEM certificate in it"),
        (b"hello, I am a text file\n", "no PEM certificate in it"),
        (b"-----BEGIN CERTIFICATE-----\nAAAAnot*base64!!\n-----END CERTIFICATE-----\n", "is damaged"),
    ],
    ids=["empty", "text", "damaged"],
)
def test_a_cert_file_that_is_not_a_pem_certificate(ca: LocalCA, tmp_path: Path, content: bytes, expected: str) -> None:
    _, key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    crt = write(tmp_path / "bad.crt", content)
    error = refused(crt, key)
    assert error.key == "cert" and error.file == str(crt)
    assert expected in error.message


def test_a_der_certificate_is_not_pem(ca: LocalCA, tmp_path: Path) -> None:
    issued = ca.issue(["ha.home.arpa"])
    leaf = x509.load_pem_x509_certificates(issued.chain_pem)[0]
    crt = write(tmp_path / "site.der", leaf.public_bytes(serialization.Encoding.DER))
    key = write(tmp_path / "site.key", issued.key_pem)
    error = refused(crt, key)
    assert error.key == "cert" and "expected -----BEGIN CERTIFICATE-----" in error.message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "no PEM private key in it"),
        (b"not a key\n", "no PEM private key in it"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "damaged"),
    ],
    ids=["empty", "text", "damaged"],
)
def test_a_key_file_that_is_not_a_pem_key(ca: LocalCA, tmp_path: Path, content: bytes, expected: str) -> None:
    crt, _ = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    key = write(tmp_path / "bad.key", content)
    error = refused(crt, key)
    assert error.key == "key" and error.file == str(key)
    assert expected in error.message


def test_cert_and_key_swapped(ca: LocalCA, tmp_path: Path) -> None:
    crt, key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    error = refused(key, crt)
    assert error.key == "cert" and error.file == str(key) and "swapped" in error.message
    chain_only = write(tmp_path / "chain.pem", crt.read_bytes())
    error = refused(crt, chain_only)
    assert error.key == "key" and error.file == str(chain_only) and "swapped" in error.message


def test_an_encrypted_key(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    crt = write(tmp_path / "site.crt", self_signed(ec_key, [x509.DNSName("ha.home.arpa")]).public_bytes(PEM))
    for i, fmt in enumerate((serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL)):
        data = ec_key.private_bytes(PEM, fmt, serialization.BestAvailableEncryption(b"secret"))
        key = write(tmp_path / f"enc-{i}.key", data)
        error = refused(crt, key)
        assert error.key == "key" and error.file == str(key)
        assert "encrypted" in error.message and "unencrypted" in error.message


def test_missing_files_and_directories(ca: LocalCA, tmp_path: Path) -> None:
    crt, key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    error = refused(tmp_path / "nope.crt", key)
    assert (error.key, error.file, error.message) == (
        "cert",
        str(tmp_path / "nope.crt"),
        "no such file (the certificate)",
    )
    error = refused(crt, tmp_path / "nope.key")
    assert (error.key, error.message) == ("key", "no such file (the private key)")
    error = refused(crt, tmp_path)
    assert (error.key, error.file) == ("key", str(tmp_path)) and "is a directory" in error.message


def test_a_huge_file_is_not_read_whole(ca: LocalCA, tmp_path: Path) -> None:
    issued = ca.issue(["ha.home.arpa"])
    crt = write(tmp_path / "big.crt", issued.chain_pem + b"#" * (MAX_FILE_BYTES + 1))
    key = write(tmp_path / "site.key", issued.key_pem)
    error = refused(crt, key)
    assert error.key == "cert" and "larger than 1024 KiB" in error.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_key(ca: LocalCA, tmp_path: Path) -> None:
    crt, key = write_pair(ca.issue(["ha.home.arpa"]), tmp_path)
    key.chmod(0o000)
    try:
        error = refused(crt, key)
    finally:
        key.chmod(0o600)
    assert error.key == "key" and error.file == str(key)
    assert "may not read it" in error.message


# --- which hosts a certificate covers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("ha.home.arpa", "ha.home.arpa", True),
        ("HA.Home.Arpa", "ha.home.arpa", True),
        ("ha.home.arpa.", "HA.HOME.ARPA", True),
        ("ha.home.arpa", "ha.home.arpa.", True),
        ("ha.home.arpa", "plex.home.arpa", False),
        ("*.home.arpa", "plex.home.arpa", True),
        ("*.home.arpa", "PLEX.home.arpa.", True),
        ("*.home.arpa", "a.b.home.arpa", False),
        ("*.home.arpa", "home.arpa", False),
        ("*.home.arpa", "*.home.arpa", True),
        ("*.home.arpa", "*.b.home.arpa", False),
        ("*.arpa", "home.arpa", False),
        ("a*.home.arpa", "ab.home.arpa", False),
        ("*.*.arpa", "a.home.arpa", False),
        ("10.0.0.5", "10.0.0.5", True),
        ("10.0.0.5", "10.0.0.6", False),
        ("::1", "[::1]", True),
        ("::1", "0:0:0:0:0:0:0:1", True),
        ("fd00::1", "FD00:0::1", True),
        ("*.0.0.5", "10.0.0.5", False),
        ("10.0.0.5", "10.0.0.5.home.arpa", False),
        ("xn--bcher-kva.home.arpa", "bücher.home.arpa", True),
        ("", "ha.home.arpa", False),
        ("ha.home.arpa", "", False),
    ],
)
def test_covers(pattern: str, host: str, expected: bool) -> None:
    assert covers(pattern, host) is expected


def test_uncovered_hosts_keeps_the_order_given(ca: LocalCA) -> None:
    pair = ca.issue(["*.home.arpa", "10.0.0.5", "ha.local"])
    hosts = ["a.home.arpa", "home.arpa", "A.HOME.ARPA.", "ha.local", "a.b.home.arpa", "10.0.0.5", "10.0.0.6"]
    assert uncovered_hosts(pair, hosts) == ["home.arpa", "a.b.home.arpa", "10.0.0.6"]
    assert uncovered_hosts(pair, []) == []


def test_covers_agrees_with_a_real_tls_client(ca: LocalCA, tmp_path: Path) -> None:
    """What the config check warns about is exactly what OpenSSL's host name check refuses."""
    pair = ca.issue(["*.home.arpa", "ha.local", "192.168.1.5"])
    for host in ("plex.home.arpa", "a.b.home.arpa", "home.arpa", "ha.local", "nas.local", "192.168.1.5", "10.0.0.1"):
        expected = not uncovered_hosts(pair, [host])
        try:
            handshake(pair, ca.root_pem(), host, tmp_path)
            verified = True
        except ssl.SSLCertVerificationError:
            verified = False
        assert verified is expected, host
