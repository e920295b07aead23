"""The certificates homeproxy keeps in `data_dir/certs`, read without a running engine.

`stored_paths` names a site's files (the manager writes them: the leaf 0644, its key 0600);
`stored_statuses` is what `homeproxy certs` shows when no homeproxy is running: each TLS
site's certificate on disk (or your own files), read only, nothing issued or changed.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

from homeproxy.certs.pairs import PairError, load_pair, uncovered_hosts
from homeproxy.certs.status import CertStatus
from homeproxy.config.model import Config


def stored_paths(store_dir: Path, name: str, issuer: str) -> tuple[Path, Path]:
    """The (certificate chain, key) files of site `name`'s certificate from `issuer`."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower())[:40]
    stem = f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}-{issuer}"
    return store_dir / f"{stem}.crt", store_dir / f"{stem}.key"


def stored_statuses(config: Config, data_dir: Path, now: datetime | None = None) -> tuple[CertStatus, ...]:
    """Every enabled TLS site's certificate as found on disk: "stored" (what the next start
    serves, if its names still match), "missing" (made at the next start), or "error"."""
    now = now or datetime.now(UTC)
    out = []
    for site in config.tls_sites:
        issuer = config.issuer_of(site)
        if issuer == "files":
            crt, key = Path(site.cert).expanduser(), Path(site.key).expanduser()
        else:
            crt, key = stored_paths(data_dir / "certs", site.name, issuer)
        status = CertStatus(site=site.name, names=(), issuer=issuer, state="missing")
        if crt.exists() or issuer == "files":
            try:
                cert = load_pair(crt, key, now=now)
            except PairError as e:
                status = CertStatus(site.name, (), issuer, "error", last_error=f"{e.file}: {e.message}")
            except OSError as e:
                status = CertStatus(site.name, (), issuer, "error", last_error=f"{e.filename}: {e.strerror}")
            else:
                missed = uncovered_hosts(cert, site.hosts)
                error = f"does not cover {', '.join(missed)}" if missed else ""
                status = CertStatus(
                    site=site.name,
                    names=cert.names,
                    issuer=issuer,
                    state="error" if error else "stored",
                    not_after=cert.not_after,
                    next_renewal=None if issuer == "files" else cert.renew_at(),
                    last_error=error,
                )
        out.append(status)
    return tuple(out)
