"""The Certificates screen without widgets: the engine seam, its `Text` (detail, status, empty page), root export."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from rich.text import Text

from homeproxy.certs.status import CertStatus
from homeproxy.tui.format import safe_text
from homeproxy.tui.widgets.cert_table import ISSUERS, span

#: The file `x` writes into the current directory (another name if one with other content is there).
EXPORT_NAME = "homeproxy-root.crt"


class CertSource(Protocol):
    """What the screen reads of the running engine (a seam: tests give canned certificates)."""

    def certificates(self) -> tuple[CertStatus, ...]: ...

    def renew(self, site: str) -> None: ...


def export_root(pem: bytes, directory: Path) -> Path:
    """Write `pem` to `EXPORT_NAME` in `directory` (or `homeproxy-root-2.crt`, ... rather than
    overwrite another file); an identical file already there is reused. Blocking."""
    stem, suffix = EXPORT_NAME.rsplit(".", 1)
    n = 1
    while True:
        target = directory / (EXPORT_NAME if n == 1 else f"{stem}-{n}.{suffix}")
        try:
            with target.open("xb") as f:  # never replaces a file
                f.write(pem)
            target.chmod(0o644)  # public: other users and devices may read it
            return target
        except FileExistsError:
            if target.is_file() and target.read_bytes() == pem:
                return target
            n += 1


def detail_text(status: CertStatus, now: datetime, *, wide: bool = True) -> Text:
    """A few lines about the selected certificate: every name (and, `wide`, the leaf's fingerprint),
    then its state in words."""
    text = Text.assemble((status.site, "bold"), " · ", ISSUERS.get(status.issuer, status.issuer), " · ")
    text.append(", ".join(status.names) if status.names else "no certificate yet", style="" if status.names else "dim")
    if status.fingerprint and wide:
        text.append(f"  SHA-256 {status.fingerprint[:23]}…", style="dim")
    text.append("\n")
    until = f"valid until {status.not_after:%Y-%m-%d %H:%M} UTC" if status.not_after else ""
    nxt = status.next_renewal
    if status.state in ("issuing", "renewing"):
        text.append(f"{status.state.capitalize()} now: {status.step or 'starting'}.", style="cyan")
    elif status.state == "error":
        error = safe_text(status.last_error) or "The last attempt failed."  # may quote the ACME server
        text.append("✗ " + error + ("" if error.endswith((".", "!", "?")) else "."), style="red")
        keeps = f" The old certificate serves until {status.not_after:%Y-%m-%d}." if status.not_after else ""
        retry = f" Next try in {span(nxt - now)}." if nxt is not None and nxt > now else ""
        text.append(keeps + retry)
    elif status.state == "temporary":
        source = "self-signed (browsers warn)" if status.self_signed else "from the local CA"
        text.append(
            f"A temporary certificate, {source}, serves while ACME issues the real one"
            + (f" (now: {status.step})." if status.step else "."),
            style="yellow",
        )
        if status.last_error:
            retry = f" Next try in {span(nxt - now)}." if nxt is not None and nxt > now else ""
            text.append("\n✗ " + safe_text(status.last_error).rstrip(".") + "." + retry, style="red")
    elif status.state == "missing":
        text.append(
            safe_text(status.last_error) or "No certificate yet: the site is not served over HTTPS.", style="red"
        )
    else:
        text.append(until[:1].upper() + until[1:] + ".")
        if status.issuer == "files":
            text.append(" Reloaded when its files change.")
        elif nxt is not None:
            text.append(f" Renews {nxt:%Y-%m-%d} (a third of its lifetime left), on its own.")
    return text


def status_line(statuses: Sequence[CertStatus] | None, https_port: int) -> Text:
    """The counts of certificates by state, or why there are none to count."""
    if statuses is None:
        return Text("○ The engine is not running: no certificates to show.", style="bold")
    if not statuses:
        return Text(f"HTTPS port {https_port}: opened once a site has HTTPS on.", style="dim")
    counts = {state: sum(1 for s in statuses if s.state == state) for state in ("ok", "error", "temporary")}
    busy = sum(1 for s in statuses if s.state in ("issuing", "renewing"))
    text = Text.assemble(("● ", "green"), f"{len(statuses)} certificate{'s' if len(statuses) != 1 else ''}")
    text.append(f" on HTTPS port {https_port}", style="dim")
    for count, label, style in (
        (counts["ok"], "ok", "green"),
        (busy, "renewing", "cyan"),
        (counts["temporary"], "temporary", "yellow"),
        (counts["error"], "failed", "red"),
    ):
        if count:
            text.append("  ·  ", style="dim")
            text.append(f"{count} {label}", style=style)
    return text


EMPTY = Text.assemble(
    ("No site uses HTTPS yet.\n\n", "bold"),
    "To turn it on: press ",
    ("2", "bold"),
    " for Sites, edit a site (",
    ("e", "bold"),
    "), switch ",
    ("HTTPS", "bold"),
    " on and save. homeproxy's local CA issues its certificate at once; then install the CA's root on your devices (",
    ("t", "bold"),
    " here shows how). Or add ",
    ("tls = true", "bold"),
    " to a [[sites]] table in the config file.",
)
