"""ACME (RFC 8555) certificates over HTTP-01 with certbot's `acme` library: account, order, challenges, finalize.

`AcmeIssuer.issue()` is blocking (the library is `requests`-based): callers run it in a thread.
The key authorizations go into a `ChallengeStore` that the engine's plain-HTTP listener serves on
`/.well-known/acme-challenge/<token>`. Every network call has a timeout and every poll a deadline,
so a stuck order ends in `AcmeFailed`, never in a hung thread. Wildcards need DNS-01, which
homeproxy does not do: they are refused before anything is sent.

Why certbot's `acme`: it is the reference client library of the Let's Encrypt ecosystem, typed,
released with certbot, and speaks RFC 8555 (JWS, nonces, orders) so homeproxy does not have to.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import requests
from acme import challenges as acme_challenges
from acme import client as acme_client
from acme import crypto_util, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import errors as jose_errors
from josepy.jwk import JWK, JWKEC

from homeproxy.certs.acme_account import AcmeFailed, Network, failure, load_account_key, problem, register
from homeproxy.certs.challenges import ChallengeStore
from homeproxy.certs.status import IssuedCert
from homeproxy.config.model import TlsSettings

__all__ = ["AcmeFailed", "AcmeIssuer", "ChallengeStore", "renewal_due"]

log = logging.getLogger("homeproxy.certs")

NETWORK_TIMEOUT = 30
"""Seconds for one HTTP request to the ACME server."""

DEADLINE = 90.0
"""Seconds for a whole issuance, polling included."""

_T = TypeVar("_T")
_PENDING = (messages.STATUS_PENDING, messages.STATUS_PROCESSING)


def renewal_due(cert: IssuedCert) -> datetime:
    """When a third of `cert`'s lifetime is left: the time to renew it."""
    return cert.not_after - (cert.not_after - cert.not_before) / 3


class AcmeIssuer:
    """Issues certificates from the ACME directory in `settings` (HTTP-01 only); one issue() at a time."""

    def __init__(
        self,
        settings: TlsSettings,
        account_dir: Path,
        challenges: ChallengeStore,
        *,
        clock: Callable[[], float] = time.time,
        timeout: int = NETWORK_TIMEOUT,
        deadline: float = DEADLINE,
    ) -> None:
        self.settings = settings
        self.account_dir = account_dir
        self.challenges = challenges
        self.clock = clock
        """Wall clock, to refuse a certificate that is already expired by it (a wrong system clock).
        Deadlines use `time.monotonic`, so an injected clock cannot stall a poll."""
        self.timeout = timeout
        self.deadline = deadline
        self._step = ""
        self._progress: Callable[[str], None] = lambda s: None

    def issue(self, names: Sequence[str], progress: Callable[[str], None] = lambda s: None) -> IssuedCert:
        """A new certificate (new P-256 key) for `names`. BLOCKING. Raises AcmeFailed."""
        self._progress = progress
        self._step = "order"
        wanted = _checked_names(names)
        url = self.settings.acme_url
        deadline = time.monotonic() + self.deadline
        try:
            self._enter("account")
            client, account_key = self._account(url)
            self._enter("order")
            key = ec.generate_private_key(ec.SECP256R1())
            key_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            dns = [n for n in wanted if not _is_ip(n)]
            ips = [ipaddress.ip_address(n) for n in wanted if _is_ip(n)]
            order = client.new_order(crypto_util.make_csr(key_pem, dns, ipaddrs=ips))
            order_of = {n: i for i, n in enumerate(wanted)}  # the server's order is arbitrary; show ours
            for authzr in sorted(order.authorizations, key=lambda a: order_of.get(a.body.identifier.value, 0)):
                self._authorize(client, account_key, authzr, deadline)
            self._enter("finalize")
            body = self._finalize(client, order, deadline)
            self._enter("download")
            assert body.certificate is not None
            chain = _network(client).post_as_get(body.certificate, client.directory["newNonce"]).content
            cert = self._checked_cert(chain, key, key_pem, wanted)
        except AcmeFailed as err:
            log.info("ACME: %s failed: %s", err.step, err.message)
            raise
        except (requests.RequestException, acme_errors.Error, jose_errors.Error) as err:
            failed = failure(self._step, err, url, self.timeout)
            log.info("ACME: %s failed: %s", failed.step, failed.message)
            raise failed from None
        log.info("ACME: certificate for %s, valid until %s", ", ".join(wanted), f"{cert.not_after:%Y-%m-%d}")
        return cert

    # --- steps -----------------------------------------------------------------------------

    def _enter(self, step: str) -> None:
        self._step = step
        log.info("ACME: %s", step)
        self._progress(step)

    def _account(self, url: str) -> tuple[acme_client.ClientV2, JWKEC]:
        bundle = self.settings.acme_ca_bundle
        if bundle and not Path(bundle).expanduser().is_file():
            raise AcmeFailed("account", f"the CA bundle {bundle} ([tls] acme_ca_bundle) is not a readable file")
        key = load_account_key(self.account_dir, url)
        net = Network(key, ca_bundle=str(Path(bundle).expanduser()) if bundle else "", timeout=self.timeout)
        directory = acme_client.ClientV2.get_directory(url, net)
        if not all(field in directory.to_partial_json() for field in ("newNonce", "newAccount", "newOrder")):
            raise AcmeFailed("account", f"{url} is not an ACME directory; check [tls] acme_directory")
        client = acme_client.ClientV2(directory, net)
        if client.external_account_required():
            raise AcmeFailed(
                "account", f"the ACME server at {url} requires external account binding, which homeproxy does not do"
            )
        register(client, self.settings.acme_email)
        return client, key

    def _authorize(
        self,
        client: acme_client.ClientV2,
        account_key: JWK,
        authzr: messages.AuthorizationResource,
        deadline: float,
    ) -> None:
        name = authzr.body.identifier.value
        if authzr.body.status == messages.STATUS_VALID:
            self._enter(f"challenge {name}: already authorized for this account")
            return
        self._enter(f"challenge {name}")
        challb = next((c for c in authzr.body.challenges if isinstance(c.chall, acme_challenges.HTTP01)), None)
        if challb is None:
            raise AcmeFailed(self._step, f"the ACME server offers no HTTP-01 challenge for {name}")
        response, keyauth = challb.response_and_validation(account_key)
        token: str = challb.chall.encode("token")
        fetched = challb.chall.uri(name)
        # RFC 8555 8.3: the answer must be servable before the server is told to fetch it.
        self.challenges.put(token, keyauth)
        try:
            client.answer_challenge(challb, response)
            authzr = self._poll(
                lambda: client.poll(authzr), lambda a: a.body.status not in _PENDING, deadline, f"validating {name}"
            )
        finally:
            self.challenges.remove(token)
        if authzr.body.status != messages.STATUS_VALID:
            error = next((c.error for c in authzr.body.challenges if c.error is not None), None)
            raise AcmeFailed(self._step, _challenge_failed(fetched, error))

    def _finalize(self, client: acme_client.ClientV2, order: messages.OrderResource, deadline: float) -> messages.Order:
        net, nonce_url = _network(client), client.directory["newNonce"]

        def fetch() -> tuple[messages.Order, requests.Response]:
            response = net.post_as_get(order.uri, nonce_url)
            return messages.Order.from_json(response.json()), response

        def issued(o: messages.Order) -> bool:
            return o.status not in _PENDING and (o.status != messages.STATUS_VALID or o.certificate is not None)

        body = self._poll(fetch, lambda o: o.status != messages.STATUS_PENDING, deadline, "the order")
        if body.status == messages.STATUS_READY:
            body = client.begin_finalization(order).body
        if not issued(body):
            body = self._poll(fetch, issued, deadline, "issuing the certificate")
        if body.status != messages.STATUS_VALID or body.certificate is None:
            ours = "the ACME server did not issue the certificate"
            raise AcmeFailed("finalize", f"{ours}: {problem(body.error)}" if body.error else ours)
        return body

    def _poll(
        self,
        fetch: Callable[[], tuple[_T, requests.Response | None]],
        done: Callable[[_T], bool],
        deadline: float,
        what: str,
    ) -> _T:
        """fetch() until done(), honouring Retry-After (RFC 8555 8.2), never past `deadline`."""
        wait = 0.2
        while True:
            value, response = fetch()
            if done(value):
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AcmeFailed(
                    self._step,
                    f"the ACME server did not finish {what} within {self.deadline:.0f} s; homeproxy tries again later",
                )
            time.sleep(min(_retry_after(response) or wait, 10.0, left))
            wait = min(wait * 2, 2.0)

    def _checked_cert(
        self, chain_pem: bytes, key: ec.EllipticCurvePrivateKey, key_pem: bytes, names: tuple[str, ...]
    ) -> IssuedCert:
        try:
            chain = x509.load_pem_x509_certificates(chain_pem)
        except ValueError:
            raise AcmeFailed("download", "the ACME server sent something that is not a PEM certificate chain") from None
        leaf = chain[0]
        if leaf.public_key() != key.public_key():
            raise AcmeFailed("download", "the certificate the ACME server sent is not for the key homeproxy made")
        if leaf.not_valid_after_utc.timestamp() <= self.clock():
            raise AcmeFailed(
                "download",
                f"the certificate the ACME server sent expired on {leaf.not_valid_after_utc:%Y-%m-%d} by this "
                "machine's clock; is the clock right?",
            )
        return IssuedCert(
            chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
            key_pem=key_pem,
            names=names,
            not_before=leaf.not_valid_before_utc.astimezone(UTC),
            not_after=leaf.not_valid_after_utc.astimezone(UTC),
        )


def _checked_names(names: Sequence[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(n.strip().rstrip(".").lower() for n in names if n.strip()))
    if not wanted:
        raise AcmeFailed("order", "no names to get a certificate for")
    for name in wanted:
        if "*" in name:
            raise AcmeFailed(
                "order",
                f"{name} is a wildcard, and a wildcard certificate needs the DNS-01 challenge, which homeproxy "
                "does not do: get it with certbot and the DNS plugin for your DNS provider, and set the site's "
                "cert and key to certbot's files",
            )
    return wanted


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _challenge_failed(url: str, error: messages.Error | None) -> str:
    if error is not None and error.code in ("connection", "dns"):
        hint = "port 80 must reach homeproxy's http_port: forward it on the router, and point the name at it in DNS"
    else:
        hint = "port 80 must reach homeproxy's http_port, not another web server"
    ours = f"the ACME server could not fetch {url} ({hint})"
    return ours + (f"; the server said: {error.detail}" if error is not None and error.detail else "")


def _retry_after(response: requests.Response | None) -> float | None:
    value = response.headers.get("Retry-After", "") if response is not None else ""
    return float(value) if value.isdigit() else None  # the HTTP-date form falls back to our backoff


def _network(client: acme_client.ClientV2) -> Network:
    assert isinstance(client.net, Network)
    return client.net
