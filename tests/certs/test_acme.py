"""AcmeIssuer against a real pebble on loopback, with real HTTP-01 validation of a real responder."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from homeproxy.certs.acme import AcmeFailed, AcmeIssuer, ChallengeStore, renewal_due
from homeproxy.certs.status import IssuedCert
from homeproxy.config.model import TlsSettings
from tests.certs import handshake
from tests.certs.conftest import Pebble, PebbleLab
from tests.conftest import free_port

NAMES = ("nas.homeproxy.test", "media.homeproxy.test")


def settings(pebble: Pebble | None, *, email: str = "", directory: str = "", bundle: str | None = None) -> TlsSettings:
    return TlsSettings(
        issuer="acme",
        acme_email=email,
        acme_directory=directory or (pebble.directory if pebble else ""),
        acme_ca_bundle=bundle if bundle is not None else str(pebble.ca_bundle if pebble else ""),
    )


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def leaf(cert: IssuedCert) -> x509.Certificate:
    return x509.load_pem_x509_certificates(cert.chain_pem)[0]


def sans(cert: IssuedCert) -> set[str]:
    return set(leaf(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ))  # fmt: skip


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in self.records)


@dataclass
class Issued:
    cert: IssuedCert
    steps: list[str]
    account_dir: Path
    store: ChallengeStore
    seconds: float
    log: Captured


@pytest.fixture(scope="module")
def issued(pebble: Pebble, pebble_lab: PebbleLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issued]:
    """The first issuance of a fresh account, every log line (library debug included) captured."""
    store = ChallengeStore()
    pebble_lab.responder.store = store
    account_dir = tmp_path_factory.mktemp("account") / "acme"
    captured, root = Captured(), logging.getLogger()
    level = root.level
    root.addHandler(captured)
    root.setLevel(logging.DEBUG)
    steps: list[str] = []
    started = time.monotonic()
    try:
        issuer = AcmeIssuer(settings(pebble, email="admin@homeproxy.test"), account_dir, store)
        cert = issuer.issue(NAMES, steps.append)
    finally:
        root.removeHandler(captured)
        root.setLevel(level)
    yield Issued(cert, steps, account_dir, store, time.monotonic() - started, captured)


# --- issuance --------------------------------------------------------------------------------


def test_issues_a_certificate_for_two_names(
    issued: Issued, pebble: Pebble, pebble_lab: PebbleLab, tmp_path: Path
) -> None:
    cert = issued.cert
    assert issued.steps == ["account", "order", *(f"challenge {n}" for n in NAMES), "finalize", "download"]
    assert cert.names == NAMES and sans(cert) == set(NAMES)
    # The chain verifies against pebble's root with the real ssl module, hostname check on, for each name.
    root = pebble.root_pem()
    for name in NAMES:
        assert handshake(cert, root, name, tmp_path / name).serial_number == leaf(cert).serial_number
    key = serialization.load_pem_private_key(cert.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == leaf(cert).public_key()
    assert cert.not_before.tzinfo is not None and cert.not_before == leaf(cert).not_valid_before_utc
    assert cert.not_after == leaf(cert).not_valid_after_utc
    assert len(x509.load_pem_x509_certificates(cert.chain_pem)) >= 2  # leaf first, then the intermediate(s)
    # Real HTTP-01: pebble fetched each name's token from the responder; the tokens are gone afterwards.
    for name in NAMES:
        assert any(r.startswith(f"{name}:{pebble_lab.responder.port}/.well-known/acme-challenge/")
                   for r in pebble_lab.responder.requests)  # fmt: skip
    assert len(issued.store) == 0
    assert issued.seconds < 20


def test_steps_are_logged_and_no_private_key_is(issued: Issued) -> None:
    ours = [r.getMessage() for r in issued.log.records if r.name == "homeproxy.certs" and r.levelno == logging.INFO]
    for step in issued.steps:
        assert f"ACME: {step}" in ours
    text = issued.log.text()
    assert "PRIVATE KEY" not in text
    key_body = b"".join(issued.cert.key_pem.splitlines()[1:-1]).decode()
    account_body = b"".join(next(issued.account_dir.glob("*.key")).read_bytes().splitlines()[1:-1]).decode()
    assert key_body[:40] not in text and account_body[:40] not in text


def test_account_key_is_private_p256_and_named_by_directory(issued: Issued, pebble: Pebble) -> None:
    assert mode(issued.account_dir) == 0o700
    keys = list(issued.account_dir.glob("account-*.key"))
    assert len(keys) == 1 and mode(keys[0]) == 0o600
    key = serialization.load_pem_private_key(keys[0].read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert keys[0].with_suffix(".url").read_text().strip() == pebble.directory


def test_renewal_reuses_the_account_with_a_new_key_and_serial(
    issued: Issued, pebble: Pebble, pebble_lab: PebbleLab, tmp_path: Path
) -> None:
    pebble_lab.responder.store = issued.store
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in issued.account_dir.iterdir()}
    steps: list[str] = []
    again = AcmeIssuer(settings(pebble, email="admin@homeproxy.test"), issued.account_dir, issued.store).issue(
        NAMES, steps.append
    )
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in issued.account_dir.iterdir()} == files
    assert leaf(again).serial_number != leaf(issued.cert).serial_number
    assert again.key_pem != issued.cert.key_pem
    assert steps[:2] == ["account", "order"] and steps[-2:] == ["finalize", "download"]
    assert handshake(again, pebble.root_pem(), NAMES[1], tmp_path).serial_number == leaf(again).serial_number
    assert len(issued.store) == 0


def test_many_rejected_nonces_still_issue(pebble_lab: PebbleLab, tmp_path: Path) -> None:
    """RFC 8555 6.5 badNonce: a pebble rejecting 30% of nonces (the library alone retries only once)."""
    noisy = pebble_lab.start_pebble(PEBBLE_WFE_NONCEREJECT="30")
    store = ChallengeStore()
    pebble_lab.responder.store = store
    cert = AcmeIssuer(settings(noisy), tmp_path / "acme", store).issue(["nonce.homeproxy.test"])
    assert handshake(cert, noisy.root_pem(), "nonce.homeproxy.test", tmp_path).subject == leaf(cert).subject


# --- failures --------------------------------------------------------------------------------


def test_a_challenge_that_fails_says_so_and_cleans_up(pebble: Pebble, pebble_lab: PebbleLab, tmp_path: Path) -> None:
    pebble_lab.responder.store = ChallengeStore()  # the responder answers 404: it never got our token
    ours = ChallengeStore()
    steps: list[str] = []
    with pytest.raises(AcmeFailed) as caught:
        AcmeIssuer(settings(pebble), tmp_path / "acme", ours).issue(["broken.homeproxy.test"], steps.append)
    err = caught.value
    assert err.step == "challenge broken.homeproxy.test" and steps[-1] == err.step
    assert err.message.startswith(
        "the ACME server could not fetch http://broken.homeproxy.test/.well-known/acme-challenge/"
    )
    assert "(port 80 must reach homeproxy's http_port" in err.message
    assert str(err).startswith("challenge broken.homeproxy.test: the ACME server could not fetch")
    assert len(ours) == 0


def test_a_responder_that_never_answers_hits_the_deadline(
    pebble: Pebble, pebble_lab: PebbleLab, tmp_path: Path
) -> None:
    store = ChallengeStore()
    pebble_lab.responder.store = store
    pebble_lab.responder.hang = threading.Event()
    started = time.monotonic()
    try:
        with pytest.raises(AcmeFailed) as caught:
            AcmeIssuer(settings(pebble), tmp_path / "acme", store, deadline=3.0).issue(["stuck.homeproxy.test"])
    finally:
        pebble_lab.responder.hang.set()
        pebble_lab.responder.hang = None
    assert time.monotonic() - started < 8
    assert caught.value.step == "challenge stuck.homeproxy.test"
    assert caught.value.message.startswith("the ACME server did not finish validating stuck.homeproxy.test within 3 s")
    assert len(store) == 0


def test_the_server_being_down_fails_promptly(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    url = f"https://127.0.0.1:{port}/dir"
    started = time.monotonic()
    with pytest.raises(AcmeFailed) as caught:
        AcmeIssuer(settings(None, directory=url), tmp_path / "acme", ChallengeStore()).issue(["nas.homeproxy.test"])
    assert time.monotonic() - started < 5
    assert caught.value.step == "account"
    assert caught.value.message.startswith(f"cannot reach the ACME server at {url}: connection refused")


def test_an_untrusted_server_certificate_is_named(pebble: Pebble, tmp_path: Path) -> None:
    with pytest.raises(AcmeFailed) as caught:
        AcmeIssuer(settings(pebble, bundle=""), tmp_path / "acme", ChallengeStore()).issue(["nas.homeproxy.test"])
    assert caught.value.step == "account"
    assert caught.value.message.startswith(f"cannot reach the ACME server at {pebble.directory}: its TLS certificate")
    assert "acme_ca_bundle" in caught.value.message


def test_a_wildcard_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{free_port()}/dir"  # would fail differently if it were contacted
    steps: list[str] = []
    with pytest.raises(AcmeFailed) as caught:
        AcmeIssuer(settings(None, directory=url), tmp_path / "acme", ChallengeStore()).issue(
            ["homeproxy.test", "*.homeproxy.test"], steps.append
        )
    assert caught.value.step == "order" and steps == []
    assert caught.value.message.startswith(
        "*.homeproxy.test is a wildcard, and a wildcard certificate needs the DNS-01"
    )
    assert "certbot" in caught.value.message
    assert not (tmp_path / "acme").exists()


# --- renewal time ----------------------------------------------------------------------------


def test_renewal_is_due_when_a_third_is_left(issued: Issued) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    cert = IssuedCert(b"", b"", ("a.test",), start, start + timedelta(days=90))
    assert renewal_due(cert) == start + timedelta(days=60)
    got = issued.cert
    assert renewal_due(got) == got.not_after - (got.not_after - got.not_before) / 3
    assert got.not_before < renewal_due(got) < got.not_after
