"""The data that certificate code hands around: an issued certificate, and a site's TLS state."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A certificate chain and its private key, as PEM; never logged, never shown."""

    chain_pem: bytes
    """The leaf first, then the intermediates."""

    key_pem: bytes
    """The leaf's private key (PKCS#8 PEM)."""

    names: tuple[str, ...]
    """The DNS names and IP addresses the leaf covers (its SANs), as written."""

    not_before: datetime
    """Start of validity (timezone-aware, UTC)."""

    not_after: datetime
    """End of validity (timezone-aware, UTC)."""

    @property
    def lifetime_seconds(self) -> float:
        return (self.not_after - self.not_before).total_seconds()

    def renew_at(self) -> datetime:
        """When a third of the lifetime is left: the time to renew."""
        return self.not_after - (self.not_after - self.not_before) / 3


@dataclass(frozen=True, slots=True)
class CertStatus:
    """One TLS site's certificate as the TUI and `homeproxy certs` show it."""

    site: str
    names: tuple[str, ...]
    """The names the certificate in use covers (empty when there is none yet)."""

    issuer: str
    """"internal", "acme" or "files"."""

    state: str
    """"ok", "issuing", "renewing", "temporary" (an internal stand-in while ACME works),
    "error" (the last attempt failed; the old certificate, if any, keeps serving) or "missing"."""

    not_after: datetime | None = None
    next_renewal: datetime | None = None
    """When homeproxy will next try to renew (None: nothing scheduled, e.g. imported files)."""

    last_error: str = ""
    """Our own sentence about the last failure ("" when none)."""

    step: str = ""
    """While issuing: the current step ("account", "order", "challenge ha.example.org", "finalize")."""

    fingerprint: str = ""
    """SHA-256 of the leaf in use, "AB:CD:..."."""

    self_signed: bool = False
    """The certificate in use is a self-signed stand-in (browsers warn until ACME succeeds)."""


class Renewal:
    """One asked-for renewal, followed from another thread: its steps, then its outcome.

    The certificate loop `put`s ("step", text) while it works and ("done", CertStatus) once the
    attempt is over (success or failure: `CertStatus.last_error` tells). Read with `events()`.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, str | CertStatus]] = queue.SimpleQueue()

    def step(self, text: str) -> None:
        self._queue.put(("step", text))

    def done(self, status: CertStatus) -> None:
        self._queue.put(("done", status))

    def events(self, timeout: float) -> Iterator[tuple[str, str | CertStatus]]:
        """Steps as they come, ending with ("done", status); TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                kind, value = self._queue.get(timeout=left)
            except queue.Empty:
                raise TimeoutError from None
            yield kind, value
            if kind == "done":
                return
