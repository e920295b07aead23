"""`CertManager`: every TLS site's certificate, the SNI contexts, renewal and hot reload.

It follows the config transaction: `prepare(config)` (blocking, off the engine's loop) gets a
certificate for every enabled TLS site or raises `CertError`, in which case the engine refuses
the config and keeps what it had; `commit()` (on the loop) swaps them in. Where they come from:

- "internal": a leaf from the local CA, issued before the apply completes, stored in
  `data_dir/certs` (keys 0600) so a restart reuses it;
- "files": the site's own `cert`/`key`, re-read when either file changes (a broken new pair
  leaves the old one serving, and the status says why);
- "acme": a stored ACME certificate, else a stand-in (the local CA's when it may sign the names,
  else self-signed) while `run()` gets the real one in the background.

`run()` is the loop task: every few seconds it re-reads changed files and, when a third of a
certificate's life is left, renews it (in a thread), with backoff after a failure. A working
certificate is never dropped for a failed renewal. Nothing here logs or returns a private key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from homeproxy.certs.challenges import ChallengeStore
from homeproxy.certs.contexts import SniContexts, host_of, site_context
from homeproxy.certs.manager_entries import CertError as CertError
from homeproxy.certs.manager_entries import Prepared as Prepared
from homeproxy.certs.manager_entries import RootDownload as RootDownload
from homeproxy.certs.manager_entries import _Entry, _leaf_fingerprint, _signature
from homeproxy.certs.manager_sources import _Sources
from homeproxy.certs.pairs import PairError, load_pair
from homeproxy.certs.status import CertStatus, IssuedCert, Renewal
from homeproxy.config.model import Config, Site, TlsSettings

if TYPE_CHECKING:
    from homeproxy.certs.ca import LocalCA

log = logging.getLogger("homeproxy.certs")

CHECK_INTERVAL = 5.0
"""Seconds between passes of `run()` (file changes are seen within this)."""
MAX_BACKOFF = 6 * 3600.0


class CertManager(_Sources):
    """Every TLS site's certificate; `contexts.listener` is the context the HTTPS listener uses."""

    def __init__(
        self, data_dir: Path, *, clock: Callable[[], float] = time.time, challenges: ChallengeStore | None = None
    ) -> None:
        self.ca_dir = data_dir / "ca"
        self.store_dir = data_dir / "certs"
        self.acme_dir = data_dir / "acme"
        self.clock = clock
        self.challenges = challenges or ChallengeStore()
        self.contexts = SniContexts()
        self.root: RootDownload | None = None
        self._entries: dict[str, _Entry] = {}
        self._tls = TlsSettings()
        self._ca: LocalCA | None = None
        self._ca_lock = threading.Lock()
        self._forced: set[str] = set()
        self._steps: dict[str, str] = {}
        self._followers: dict[str, list[Renewal]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.interval = CHECK_INTERVAL
        """Seconds between passes of `run()`."""

    # --- the transaction ---------------------------------------------------------------------

    def prepare(self, config: Config) -> Prepared:
        """Certificates for every enabled TLS site of `config`, or `CertError` (nothing changed). Blocking."""
        old, errors, out = self._entries, [], {}
        for site in config.tls_sites:
            try:
                out[site.name] = self._prepare_site(config, site, old.get(site.name))
            except CertError as e:
                errors.append(str(e))
        if errors:
            raise CertError("; ".join(errors))
        return Prepared(out, config.tls, self._root_download(config.tls), old)

    def commit(self, prepared: Prepared) -> None:
        """Serve what `prepare()` made (new handshakes only; open connections keep theirs)."""
        entries = dict(prepared.entries)
        for name, entry in entries.items():
            now = self._entries.get(name)
            if entry is prepared.base.get(name) and now is not None and now is not entry:
                entries[name] = now  # renewed or reloaded between prepare() and commit(): keep that
        self._entries, self._tls, self.root = entries, prepared.tls, prepared.root
        self._sync()
        self._poke()

    def _prepare_site(self, config: Config, site: Site, prev: _Entry | None) -> _Entry:
        issuer = config.issuer_of(site)
        hosts = tuple(dict.fromkeys(host_of(h) for h in site.hosts))
        files = (site.cert, site.key) if issuer == "files" else ("", "")
        if (
            prev is not None
            and prev.context is not None
            and (prev.issuer, prev.hosts, prev.files)
            == (
                issuer,
                hosts,
                files,
            )
        ):
            return prev  # unchanged: renewal and file changes are run()'s business
        if issuer == "files":
            return self._load_files(site.name, hosts, files)
        stored = self._stored(site.name, issuer, hosts)
        if stored is not None and (issuer == "acme" or self._now() < stored.renew_at()):
            return self._entry(site.name, hosts, issuer, stored, "ok")
        if issuer == "internal":
            return self._entry(site.name, hosts, issuer, self._issue_internal(site.name, hosts), "ok")
        return self._entry(site.name, hosts, issuer, self._stand_in(hosts), "temporary")

    def _load_files(self, name: str, hosts: tuple[str, ...], files: tuple[str, str]) -> _Entry:
        try:
            signature = _signature(files)
            pair = load_pair(*files, now=self._now())
        except PairError as e:
            raise CertError(f'site "{name}": {e.file}: {e.message}') from None
        except OSError as e:
            raise CertError(f'site "{name}": {e.filename}: cannot read: {e.strerror}') from None
        return replace(self._entry(name, hosts, "files", pair, "ok"), files=files, signature=signature)

    def _entry(self, name: str, hosts: tuple[str, ...], issuer: str, cert: IssuedCert, state: str) -> _Entry:
        ctx = site_context(cert, self.store_dir)
        return _Entry(name, hosts, issuer, cert, ctx, state, fingerprint=_leaf_fingerprint(cert))

    # --- what the TUI and the CLI read ---------------------------------------------------------

    def statuses(self) -> tuple[CertStatus, ...]:
        out = []
        for e in self._entries.values():
            step = self._steps.get(e.site, "")
            state = ("renewing" if e.state == "ok" else "issuing") if step else e.state
            nxt: datetime | None = None
            if e.issuer != "files" and e.cert is not None:
                nxt = self._now() if e.state == "temporary" else e.cert.renew_at()
                if e.retry_at:
                    nxt = max(nxt, datetime.fromtimestamp(e.retry_at, UTC))
            out.append(
                CertStatus(
                    site=e.site,
                    names=e.cert.names if e.cert else (),
                    issuer=e.issuer,
                    state=state,
                    not_after=e.cert.not_after if e.cert else None,
                    next_renewal=nxt,
                    last_error=e.last_error,
                    step=step,
                    fingerprint=e.fingerprint,
                    self_signed=e.cert is not None
                    and e.cert.chain_pem.count(b"-----BEGIN CERTIFICATE") == 1
                    and e.issuer != "files",
                )
            )
        return tuple(out)

    def renew(self, site: str, follow: Renewal | None = None) -> None:
        """Renew `site`'s certificate now (in the background). From any thread. `follow` gets the
        steps and the outcome. KeyError when no TLS site has that name."""
        if site not in self._entries:
            raise KeyError(site)
        if follow is not None:
            self._followers.setdefault(site, []).append(follow)
        self._forced.add(site)
        self._poke()

    # --- the loop task ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Renewals and file reloads every `interval` seconds, forever (cancel to stop)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("certificate check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def check(self) -> list[str]:
        """One pass: reload changed files, renew what is due or asked for. Returns the sites changed."""
        changed, done = [], []
        for name, entry in list(self._entries.items()):
            forced = name in self._forced
            self._forced.discard(name)
            new = await asyncio.to_thread(self._check_entry, entry, forced)
            if new is not entry and self._entries.get(name) is entry:
                self._entries = {**self._entries, name: new}
                changed.append(name)
            if forced:
                done.append(name)
        if changed:
            self._sync()
        for name in done:  # after _sync: what a follower hears of is already served
            status = {s.site: s for s in self.statuses()}.get(name)
            for follow in self._followers.pop(name, []):
                if status is not None:
                    follow.done(status)
        return changed

    def _check_entry(self, e: _Entry, forced: bool) -> _Entry:
        """Blocking: the entry as it should be now (the same object when nothing is to do)."""
        if e.issuer == "files":
            try:
                signature = _signature(e.files)
            except OSError as err:
                return self._failed(e, f"{err.filename}: cannot read: {err.strerror}; the previous pair keeps serving")
            if signature == e.signature and not forced:
                return e
            try:
                new = self._load_files(e.site, e.hosts, e.files)
            except CertError as err:
                message = str(err).removeprefix(f'site "{e.site}": ')
                return replace(self._failed(e, f"{message}; the previous pair keeps serving"), signature=signature)
            log.info('site "%s": reloaded %s', e.site, e.files[0])
            return new
        due = e.state in ("temporary", "error") or e.cert is None or self._now() >= e.cert.renew_at()
        if not (forced or due) or (not forced and self.clock() < e.retry_at):
            return e
        if e.issuer == "internal":
            self._step(e.site, "issuing from the local CA")
        try:
            cert = self._issue_internal(e.site, e.hosts) if e.issuer == "internal" else self._issue_acme(e)
        except CertError as err:
            failed = self._failed(e, str(err))
            if e.state == "temporary" and e.cert is not None and self._now() >= e.cert.renew_at():
                # ACME has failed for most of the stand-in's life: a fresh one, so HTTPS stays up.
                fresh = self._entry(e.site, e.hosts, e.issuer, self._stand_in(e.hosts), "temporary")
                failed = replace(failed, cert=fresh.cert, context=fresh.context, fingerprint=fresh.fingerprint)
            return failed
        return self._entry(e.site, e.hosts, e.issuer, cert, "ok")

    def _issue_acme(self, e: _Entry) -> IssuedCert:
        from homeproxy.certs.acme import AcmeFailed, AcmeIssuer

        def progress(step: str) -> None:
            self._steps[e.site] = step
            self._step(e.site, step)

        issuer = AcmeIssuer(self._tls, self.acme_dir, self.challenges, clock=self.clock)
        try:
            cert = issuer.issue(e.hosts, progress)
        except AcmeFailed as err:
            raise CertError(f"ACME, {err.step}: {err.message}") from None
        finally:
            self._steps.pop(e.site, None)
        self._store(e.site, "acme", cert)
        log.info('site "%s": certificate from %s for %s', e.site, self._tls.acme_url, ", ".join(e.hosts))
        return cert

    def _step(self, site: str, text: str) -> None:
        for follow in self._followers.get(site, ()):
            follow.step(text)

    def _failed(self, e: _Entry, message: str) -> _Entry:
        failures = e.failures + 1
        delay = min(60.0 * 2 ** (failures - 1), MAX_BACKOFF) * random.uniform(1.0, 1.1)
        if e.issuer == "files":  # read again whenever they change, whatever the backoff says
            log.warning('site "%s": %s (read again when the files change)', e.site, message)
        else:
            log.warning('site "%s": %s (next try in %.0f s)', e.site, message, delay)
        state = "temporary" if e.state == "temporary" else "error"
        return replace(e, state=state, last_error=message, failures=failures, retry_at=self.clock() + delay)

    def _sync(self) -> None:
        by_host = {h: e.context for e in self._entries.values() if e.context is not None for h in e.hosts}
        self.contexts.update(by_host)
