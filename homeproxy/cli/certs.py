"""`homeproxy certs`: every TLS site's certificate, and renewing one now.

    homeproxy certs                 site, issuer, state, expiry, next renewal, names, last error
    homeproxy certs renew SITE      renew now, printing each step (account, order, challenge, finalize)

Both ask the homeproxy that is running (through its control socket, `homeproxy.control`),
so they show what it serves. With none running, `certs` reads the certificates stored on
disk, and `certs renew` starts the engine in this process for the renewal (an ACME
challenge needs the HTTP listener) and stops it again; the next start serves the new one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeproxy import paths
from homeproxy.certs.status import CertStatus
from homeproxy.control import request, serve_request, socket_path, status_from_json

if TYPE_CHECKING:
    from homeproxy.config.model import Config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], add_config: Callable[..., None]) -> None:
    """Register `certs` (and `certs renew SITE`) on the top-level parser's subparsers."""
    certs = sub.add_parser(
        "certs",
        help="every TLS site's certificate; renew one now",
        description="List every TLS site's certificate as the running homeproxy serves it (or, with none "
        "running, as stored on disk): issuer, state, expiry, next renewal, names and the last error.",
    )
    certs.set_defaults(command="certs", certs_command="list")
    add_config(certs, argparse.SUPPRESS)
    certs_sub = certs.add_subparsers(title="certs commands", metavar="CERTS_COMMAND")
    renew = certs_sub.add_parser(
        "renew",
        help="renew a site's certificate now, showing each step",
        description="Renew SITE's certificate now and print each step as it happens. Asks the running "
        "homeproxy; with none running, starts the engine here for the renewal. The old certificate keeps "
        "serving if the renewal fails. Exit 0 when renewed, 1 when not.",
    )
    renew.add_argument("site", metavar="SITE", help="the site's name")
    add_config(renew, argparse.SUPPRESS)
    renew.set_defaults(certs_command="renew")


def run(args: argparse.Namespace, config_path: Path) -> int:
    data_dir = paths.data_dir()
    sock = socket_path(data_dir)
    if args.certs_command == "renew":
        return cmd_renew(args.site, config_path, data_dir, sock)
    return cmd_list(config_path, data_dir, sock)


def _say(text: str) -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _ask(sock: Path, obj: dict[str, Any]) -> Iterator[dict[str, Any]] | None:
    """The running homeproxy's answers, or None when none listens on `sock`."""
    if not sock.exists():
        return None
    answers = request(sock, obj)
    try:
        first = next(answers)
    except (OSError, StopIteration):
        return None

    def chain() -> Iterator[dict[str, Any]]:
        yield first
        yield from answers

    return chain()


def cmd_list(config_path: Path, data_dir: Path, sock: Path) -> int:
    answers = _ask(sock, {"cmd": "certs"})
    if answers is not None:
        answer = next(answers)
        if "error" in answer:
            _err(f"homeproxy: {answer['error']}")
            return 1
        statuses = [status_from_json(d) for d in answer["certs"]]
        _say(f"the running homeproxy serves ({sock}):")
    else:
        from homeproxy.certs.stored import stored_statuses

        config = _load(config_path)
        if config is None:
            return 1
        statuses = list(stored_statuses(config, data_dir))
        _say(f"homeproxy is not running; the certificates stored in {data_dir} (from {config_path}):")
    if not statuses:
        _say("no site has TLS on: add `tls = true` to a site (docs/tls.md)")
        return 0
    for line in table(statuses, datetime.now(UTC)):
        _say(line)
    return 0


def _load(config_path: Path) -> Config | None:
    """The config, or None after printing why not (every error, with its line and key)."""
    from homeproxy.config import ConfigInvalid
    from homeproxy.config.load import load_file

    try:
        return load_file(config_path)
    except OSError as e:
        _err(f"{config_path}: cannot read: {e.strerror or e}")
    except ConfigInvalid as e:
        for err in e.errors:
            _err(str(err))
    return None


def _when(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "-"
    days = (t - now).total_seconds() / 86400
    left = f"in {days:.0f} d" if days >= 1 else ("now" if days > -1 / 1440 else f"{-days:.0f} d ago")
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M} ({left})"


def table(statuses: Iterable[CertStatus], now: datetime) -> list[str]:
    """The listing: one row per site, its last error indented below it."""
    rows = [("SITE", "ISSUER", "STATE", "EXPIRES (UTC)", "NEXT RENEWAL (UTC)", "NAMES")]
    errors: dict[int, str] = {}
    for s in statuses:
        state = f"{s.state}: {s.step}" if s.step else s.state
        rows.append((s.site, s.issuer, state, _when(s.not_after, now), _when(s.next_renewal, now), " ".join(s.names)))
        if s.last_error:
            errors[len(rows) - 1] = s.last_error
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[5])
        if i in errors:
            out.append(f"    last error: {errors[i]}")
    return [line.rstrip() for line in out]


def cmd_renew(site: str, config_path: Path, data_dir: Path, sock: Path) -> int:
    answers = _ask(sock, {"cmd": "renew", "site": site})
    if answers is not None:
        return _follow(answers)
    from homeproxy.config import ConfigInvalid
    from homeproxy.runtime import Runtime

    _say("homeproxy is not running: renewing in this process (the next start serves the new certificate)")
    runtime = Runtime(config_path, data_dir=data_dir, discovery=False)
    try:
        runtime.start(watch=False)
    except ConfigInvalid as e:
        for err in e.errors:
            _err(str(err))
        return 1
    try:
        assert runtime.engine is not None
        for problem in runtime.engine.listen_errors:
            _err(f"warning: {problem} (an ACME challenge needs the HTTP listener)")
        return _follow(serve_request(runtime.engine, {"cmd": "renew", "site": site}))
    finally:
        runtime.stop()


def _follow(answers: Iterable[dict[str, Any]]) -> int:
    """Print each step and the outcome; 0 when the certificate was renewed."""
    for answer in answers:
        if "step" in answer:
            _say(f"  … {answer['step']}")
        elif "error" in answer:
            _err(f"homeproxy: {answer['error']}")
            return 1
        elif "done" in answer:
            status = status_from_json(answer["done"])
            if status.last_error and status.state != "ok":
                _err(f"✗ {status.site}: not renewed: {status.last_error}")
                _err("  the certificate it had keeps serving")
                return 1
            expires = _when(status.not_after, datetime.now(UTC))
            _say(f"✓ {status.site}: renewed; {', '.join(status.names)}; expires {expires}")
            _say(f"  SHA-256 {status.fingerprint}")
            return 0
    _err("homeproxy: the renewal ended without an outcome")
    return 1
