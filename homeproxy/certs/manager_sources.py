"""Where `CertManager`'s certificates come from: the local CA, the stand-in, the leaves stored in
`data_dir/certs`, and the root it serves."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from homeproxy.certs.files import private_dir, write_atomic
from homeproxy.certs.manager_entries import CertError, RootDownload
from homeproxy.certs.pairs import PairError, load_pair
from homeproxy.certs.status import IssuedCert
from homeproxy.certs.stored import stored_paths
from homeproxy.config.model import TlsSettings

if TYPE_CHECKING:
    from homeproxy.certs.ca import LocalCA

log = logging.getLogger("homeproxy.certs")


class _Sources:
    """The `CertManager` part that issues, stores and finds certificates (blocking: run it off the loop)."""

    ca_dir: Path
    store_dir: Path
    clock: Callable[[], float]
    _ca: LocalCA | None
    _ca_lock: threading.Lock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def local_ca(self) -> LocalCA:
        """The local CA, made on first use. Blocking."""
        from homeproxy.certs.ca import LocalCA

        with self._ca_lock:
            if self._ca is None:
                self._ca = LocalCA.open(self.ca_dir, clock=self.clock)
            return self._ca

    def _issue_internal(self, name: str, hosts: tuple[str, ...]) -> IssuedCert:
        from homeproxy.certs.ca import CAError

        try:
            cert = self.local_ca().issue(hosts)
        except CAError as e:
            raise CertError(f'site "{name}": {e}') from None
        self._store(name, "internal", cert)
        log.info('issued a certificate for site "%s" (%s) from the local CA', name, ", ".join(hosts))
        return cert

    def _stand_in(self, hosts: tuple[str, ...]) -> IssuedCert:
        from homeproxy.certs.ca import CAError
        from homeproxy.certs.standin import self_signed

        try:
            ca = self.local_ca()
            if not ca.names_outside(hosts):
                return ca.issue(hosts)
        except CAError:
            pass
        return self_signed(hosts, self._now())

    def _paths(self, name: str, issuer: str) -> tuple[Path, Path]:
        return stored_paths(self.store_dir, name, issuer)

    def _store(self, name: str, issuer: str, cert: IssuedCert) -> None:
        crt, key = self._paths(name, issuer)
        private_dir(self.store_dir)
        write_atomic(key, cert.key_pem)
        write_atomic(crt, cert.chain_pem, 0o644)

    def _stored(self, name: str, issuer: str, hosts: tuple[str, ...]) -> IssuedCert | None:
        """A stored certificate for exactly these hosts, unexpired, (internal) from today's CA."""
        crt, key = self._paths(name, issuer)
        if not crt.exists() or not key.exists():
            return None
        try:
            cert = load_pair(crt, key, now=self._now())
        except PairError:
            return None
        if set(cert.names) != set(hosts):
            return None
        if issuer == "internal" and not self._from_local_ca(cert):
            return None
        return cert

    def _from_local_ca(self, cert: IssuedCert) -> bool:
        chain = x509.load_pem_x509_certificates(cert.chain_pem)
        if len(chain) < 2:
            return False
        try:
            root = self.local_ca().root
            chain[1].verify_directly_issued_by(root)
            chain[0].verify_directly_issued_by(chain[1])
        except Exception:  # a CA made again since, or a broken file: issue a new leaf
            return False
        return True

    def _root_download(self, tls: TlsSettings) -> RootDownload | None:
        if not tls.serve_root or not (self.ca_dir / "root.crt").exists():
            return None
        from homeproxy.certs.ca import CAError, LocalCA, mobileconfig

        try:
            ca = LocalCA.open(self.ca_dir, create=False)
        except (CAError, OSError):
            return None
        der = ca.root_der()
        return RootDownload(ca.root_pem(), der, mobileconfig(der), ca.fingerprint())
