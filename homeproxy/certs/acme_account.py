"""The ACME account: its key file per directory, the signed client, registration, and our sentences for failures.

One account key per ACME directory URL, in `account_dir` (0700) as `account-<sha256(url)[:16]>.key`
(ECDSA P-256, PKCS#8 PEM, 0600) with a `.url` file beside it naming the directory for people who
look in the folder. The key is made on first use and reused: the CA identifies the account by it
(RFC 8555 7.3.1: registering an existing key returns the existing account), so nothing else is stored.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import errors as jose_errors
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from homeproxy import __version__
from homeproxy.certs.files import PUBLIC_FILE, locked, private_dir, write_atomic

log = logging.getLogger("homeproxy.certs")

BAD_NONCE_ROUNDS = 5
"""RFC 8555 6.5: a server may reject any nonce (pebble rejects 5% on purpose). Each round is the
library's attempt plus its own single retry, so a request gives up only after ten rejections."""

USER_AGENT = f"homeproxy/{__version__} acme-python"


class AcmeFailed(Exception):
    """An ACME issuance failed at `step` ("account", "order", "challenge <name>", "finalize", "download").

    `message` is our own sentence first; the server's `detail`, when there is one, follows it.
    """

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class Network(acme_client.ClientNetwork):
    """The library's JWS-signing HTTP client with ES256, our timeout, CA bundle and a patient badNonce retry."""

    def __init__(self, key: JWK, *, ca_bundle: str, timeout: int) -> None:
        super().__init__(key, alg=ES256, user_agent=USER_AGENT, timeout=timeout)
        if ca_bundle:
            # requests' `verify=` takes a CA bundle path as well as a bool, and the library hands
            # `verify_ssl` to it unchanged on every request (ClientNetwork._send_request).
            self.verify_ssl = ca_bundle  # type: ignore[assignment]

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for round_ in range(1, BAD_NONCE_ROUNDS + 1):
            try:
                return super().post(*args, **kwargs)
            except messages.Error as err:
                if err.code != "badNonce" or round_ == BAD_NONCE_ROUNDS:
                    raise
                log.debug("ACME: the server rejected two nonces in a row; trying again")
        raise AssertionError("unreachable")  # pragma: no cover

    def post_as_get(self, url: str, new_nonce_url: str) -> requests.Response:
        """RFC 8555 6.3: fetch a resource with an empty signed POST."""
        return self.post(url, None, new_nonce_url=new_nonce_url)


def account_key_path(account_dir: Path, directory_url: str) -> Path:
    """Where the account key for `directory_url` lives."""
    digest = hashlib.sha256(directory_url.encode("utf-8")).hexdigest()[:16]
    return account_dir / f"account-{digest}.key"


def load_account_key(account_dir: Path, directory_url: str) -> JWKEC:
    """The account key for `directory_url`, made (P-256, 0600) on first use. Raises AcmeFailed("account")."""
    private_dir(account_dir)
    path = account_key_path(account_dir, directory_url)
    with locked(account_dir):  # two issuers must not both make a key (one account would be lost)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            key = ec.generate_private_key(ec.SECP256R1())
            data = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_atomic(path, data)
            write_atomic(path.with_suffix(".url"), directory_url.encode("utf-8") + b"\n", PUBLIC_FILE)
            log.info("ACME: made a new account key for %s in %s", directory_url, path)
            return JWKEC(key=key)
        except OSError as err:
            raise AcmeFailed("account", f"cannot read the account key {path}: {err.strerror}") from None
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        loaded = None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(loaded.curve, ec.SECP256R1):
        raise AcmeFailed(
            "account",
            f"the account key {path} is not an ECDSA P-256 private key; move it away and homeproxy "
            "registers a new account",
        )
    return JWKEC(key=loaded)


def register(client: acme_client.ClientV2, email: str) -> messages.RegistrationResource:
    """Register the account (terms of service agreed), or find the existing one and bring its e-mail up to date."""
    contact = (f"mailto:{email}",) if email else ()
    new = messages.NewRegistration(contact=contact, terms_of_service_agreed=True)
    try:
        regr = client.new_account(new)
    except acme_errors.ConflictError as known:  # this key already has an account (RFC 8555 7.3.1)
        regr = client.query_registration(messages.RegistrationResource(uri=known.location, body=new))
        if email and tuple(regr.body.contact) != contact:
            regr = client.update_registration(regr, messages.Registration(contact=contact))
            log.info("ACME: account e-mail changed to %s", email)
        return regr
    log.info("ACME: registered a new account%s", f" for {email}" if email else " (no e-mail)")
    return regr


# --- our sentences ---------------------------------------------------------------------------

PROBLEMS = {
    "rateLimited": "the ACME server's rate limit was reached; homeproxy tries again later "
    '(try acme_directory = "letsencrypt-staging" while testing)',
    "rejectedIdentifier": "the ACME server will not issue a certificate for these names (a public CA cannot "
    'issue for private names such as .home.arpa or .lan: use issuer = "internal" for those)',
    "invalidContact": "the ACME server refused the e-mail address in [tls] acme_email",
    "unsupportedContact": "the ACME server refused the e-mail address in [tls] acme_email",
    "externalAccountRequired": "the ACME server requires external account binding, which homeproxy does not do",
    "caa": "a CAA record in DNS does not allow this ACME server to issue for the name",
    "userActionRequired": "the ACME server wants you to act first (e.g. agree to new terms on its website)",
    "serverInternal": "the ACME server had an internal error; homeproxy tries again later",
    "badNonce": "the ACME server kept rejecting the request's nonce",
}


def problem(err: messages.Error) -> str:
    """Our sentence for an RFC 7807 problem from the server, its detail after it."""
    ours = PROBLEMS.get(err.code or "", "the ACME server refused the request")
    return ours + (f"; the server said: {err.detail}" if err.detail else "")


def failure(step: str, err: Exception, url: str, timeout: float) -> AcmeFailed:
    """`err` (from requests, the acme library or josepy) as an AcmeFailed in our words."""
    if isinstance(err, messages.Error):
        return AcmeFailed(step, problem(err))
    if isinstance(err, requests.exceptions.InvalidJSONError | jose_errors.DeserializationError):
        return AcmeFailed(step, f"the server at {url} does not answer like an ACME server; check [tls] acme_directory")
    if isinstance(err, requests.exceptions.RequestException):
        return AcmeFailed(step, f"cannot reach the ACME server at {url}: {network_reason(err, timeout)}")
    if isinstance(err, acme_errors.ClientError) and err.args and isinstance(err.args[0], requests.Response):
        status = err.args[0].status_code
        return AcmeFailed(step, f"the server at {url} answered HTTP {status}, not ACME; check [tls] acme_directory")
    return AcmeFailed(step, f"the ACME server's answer could not be used ({type(err).__name__})")


def network_reason(err: BaseException, timeout: float) -> str:
    """What went wrong on the wire, in a few words (requests nests the cause several levels deep)."""
    if isinstance(err, requests.exceptions.Timeout):
        return f"no answer within {timeout:.0f} s"
    for cause in _causes(err):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"its TLS certificate is not trusted ({cause.verify_message}); "
                "for a private CA, set [tls] acme_ca_bundle to its certificate"
            )
        if isinstance(cause, ssl.SSLError):
            return f"the TLS handshake failed ({cause.reason or cause.strerror})"
        if isinstance(cause, socket.gaierror):
            return "its name does not resolve"
        if isinstance(cause, TimeoutError):
            return f"no answer within {timeout:.0f} s"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is it running, and is the port right?)"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
    return type(err).__name__


def _causes(err: BaseException) -> Iterator[BaseException]:
    """`err` and everything it wraps: __cause__, __context__, urllib3's `.reason`, exceptions in args."""
    todo, seen = [err], set[int]()
    while todo and len(seen) < 50:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo += [n for n in nested if isinstance(n, BaseException)]
