"""`homeproxy ca`: export the local CA's root, show what it is and where, trust it on this machine.

    homeproxy ca export [--der] [--out FILE]   the root certificate only (PEM, or DER), to stdout or FILE
    homeproxy ca info                          fingerprint, subject, validity, files, the download URL
    homeproxy ca trust [--dry-run]             add the root to this machine's system store (Debian)

The CA is made on first use: when the first site with `tls = true` on the internal issuer
starts, or by `homeproxy ca export` (so the root can go onto devices before any site uses
it). `ca info` and `ca trust` only read: with no CA yet, they say so and how to make it.
Nothing here prints or copies a private key.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from homeproxy import paths

if TYPE_CHECKING:
    from homeproxy.certs.ca import LocalCA
    from homeproxy.config.model import Config

#: Where `homeproxy ca trust` puts the root (update-ca-certificates reads `*.crt` from here).
SYSTEM_CA_DIR = Path("/usr/local/share/ca-certificates")
SYSTEM_CA_FILE = SYSTEM_CA_DIR / "homeproxy-root.crt"
UPDATE_TOOL = "update-ca-certificates"
#: The path on homeproxy's plain-HTTP listener that serves the root (also `root.der`, `root.mobileconfig`).
ROOT_URL_PATH = "/.well-known/homeproxy/root.crt"

NO_CA = (
    "no local CA yet in {dir}: it is made when the first site with tls = true (internal issuer) starts, "
    "or run `homeproxy ca export` to make it now"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], add_config: Callable[..., None]) -> None:
    """Register `ca` and its subcommands on the top-level parser's subparsers."""
    ca = sub.add_parser(
        "ca",
        help="the local CA: export its root, show it, trust it on this machine",
        description="homeproxy's local certificate authority. Install its ROOT certificate (never a leaf or "
        "the intermediate, which are renewed every few weeks and months) on each device once; see docs/tls.md.",
    )
    ca.set_defaults(command="ca", ca_command=None)
    add_config(ca, argparse.SUPPRESS)
    ca_sub = ca.add_subparsers(title="ca commands", metavar="CA_COMMAND")
    export = ca_sub.add_parser(
        "export",
        help="write the root certificate (only the root) to stdout or a file",
        description="Write the local CA's root certificate (PEM by default) to stdout or --out FILE. Makes the "
        "CA if there is none yet. Only the public certificate: no key is ever written.",
    )
    export.add_argument("--der", action="store_true", help="DER (binary) instead of PEM")
    export.add_argument("--out", "-o", type=Path, metavar="FILE", help="write to FILE (mode 0644) instead of stdout")
    info = ca_sub.add_parser(
        "info",
        help="the root's fingerprint, subject, validity, files and download URL",
        description="Show the local CA: the root's SHA-256 fingerprint (compare it with the one your phone "
        "shows), subject, validity, the intermediate, where the files are and the URL devices download the "
        "root from. Reads only; exits 1 when there is no CA yet.",
    )
    trust = ca_sub.add_parser(
        "trust",
        help="add the root to this machine's system certificate store (Debian, as root)",
        description=f"Copy the root certificate to {SYSTEM_CA_FILE} and run {UPDATE_TOOL}, so programs on "
        "this machine that use the system store (curl, Python, Chromium) trust homeproxy's sites. Needs root "
        "and Debian's ca-certificates. Says how to undo it. Firefox keeps its own store (docs/tls.md).",
    )
    trust.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    for p, name in ((export, "export"), (info, "info"), (trust, "trust")):
        add_config(p, argparse.SUPPRESS)
        p.add_argument(
            "--ca-dir",
            type=Path,
            metavar="DIR",
            help=f"the CA's directory (default: {paths.data_dir() / 'ca'}); under sudo, or for the homeproxy "
            "service user, name the one homeproxy uses",
        )
        p.set_defaults(ca_command=name)


def run(args: argparse.Namespace, config_path: Path) -> int:
    """Dispatch `homeproxy ca ...`."""
    directory: Path = getattr(args, "ca_dir", None) or paths.data_dir() / "ca"
    if args.ca_command == "export":
        return cmd_export(directory, der=args.der, out=args.out)
    if args.ca_command == "info":
        return cmd_info(directory, config_path)
    if args.ca_command == "trust":
        return cmd_trust(directory, dry_run=args.dry_run)
    print("usage: homeproxy ca {export,info,trust} (see homeproxy ca --help)", file=sys.stderr)
    return 2


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _open(directory: Path, *, create: bool, hint: str = "") -> LocalCA | None:
    """The CA, or None after saying why not."""
    from homeproxy.certs.ca import CAError, CANotCreated, LocalCA

    existed = (directory / "root.crt").exists()
    try:
        ca = LocalCA.open(directory, create=create)
    except CANotCreated:
        _err(NO_CA.format(dir=directory) + hint)
        return None
    except CAError as e:
        _err(f"the local CA cannot be used: {e}")
        return None
    except OSError as e:
        _err(f"{directory}: cannot {'make or ' if create else ''}read the CA ({e.strerror or e})")
        return None
    if create and not existed:
        _err(f"made a new local CA in {directory} (root SHA-256 {ca.fingerprint()})")
    return ca


def cmd_export(directory: Path, *, der: bool, out: Path | None) -> int:
    """Write the root certificate; 0 if written."""
    if out is None and der and sys.stdout.isatty():
        _err("DER is binary and would garble the terminal: use --out FILE, or redirect stdout")
        return 2
    ca = _open(directory, create=True)
    if ca is None:
        return 1
    data = ca.root_der() if der else ca.root_pem()
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    from homeproxy.certs.files import PUBLIC_FILE, write_atomic

    try:
        write_atomic(out.expanduser(), data, PUBLIC_FILE)
    except OSError as e:
        _err(f"{out}: cannot write ({e.strerror or e})")
        return 1
    _err(f"wrote the root certificate ({'DER' if der else 'PEM'}, SHA-256 {ca.fingerprint()}) to {out}")
    return 0


def _config(config_path: Path) -> Config:
    """The config for the port and `serve_root`; the defaults when it is missing or invalid (said on stderr)."""
    from homeproxy.config import ConfigInvalid
    from homeproxy.config.load import load_file
    from homeproxy.config.model import Config

    try:
        return load_file(config_path)
    except FileNotFoundError:
        return Config()
    except OSError as e:
        _err(f"{config_path}: cannot read ({e.strerror or e}); showing the default port")
    except ConfigInvalid:
        _err(f"{config_path} has errors (`homeproxy check`); showing the default port")
    return Config()


def download_urls(config: Config) -> list[str]:
    """The URLs a device on the LAN can fetch the root from (this machine's LAN addresses)."""
    port = config.server.http_port
    suffix = "" if port == 80 else f":{port}"
    listen = config.server.listen
    addresses: list[str] = []
    try:
        from homeproxy.discovery.interfaces import lan_interfaces

        for interface in lan_interfaces():
            addresses += [a for a in interface.addresses if ":" not in a]
    except Exception:  # a machine whose interfaces cannot be listed still gets the path
        addresses = []
    if not set(listen) & {"0.0.0.0", "::", ""}:
        addresses = [a for a in addresses if a in listen] or [a for a in listen if not _loopback(a)]
    return [f"http://{_url_host(a)}{suffix}{ROOT_URL_PATH}" for a in dict.fromkeys(addresses)]


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address  # RFC 3986 3.2.2: an IPv6 literal goes in brackets


def cmd_info(directory: Path, config_path: Path) -> int:
    """Print the CA; 0 if there is one."""
    ca = _open(directory, create=False)
    if ca is None:
        return 1
    root, inter = ca.root, ca.intermediate
    config = _config(config_path)
    print("homeproxy local CA")
    print(f"  subject:       {root.subject.rfc4514_string()}")
    print(f"  SHA-256:       {ca.fingerprint()}")
    print(f"  valid:         {root.not_valid_before_utc:%Y-%m-%d} to {root.not_valid_after_utc:%Y-%m-%d} (UTC)")
    if ca.permitted_suffixes:
        print("  vouches for:   names under " + ", ".join("." + s for s in ca.permitted_suffixes))
        print("                 and private addresses only (name constraints)")
    else:
        print("  vouches for:   any name (this root has no name constraints)")
    print(f"  intermediate:  {inter.subject.rfc4514_string()}")
    print(f"                 until {inter.not_valid_after_utc:%Y-%m-%d}; replaced by itself when a third is left")
    print("  files:")
    width = max(len(k) for k in ca.files)
    for role, path in ca.files.items():
        print(f"    {role.ljust(width)}  {path}")
    print(f"  download path: {ROOT_URL_PATH} (also root.der, and root.mobileconfig for iOS)")
    if not config.tls.serve_root:
        print("                 not served: [tls] serve_root = false")
    else:
        for url in download_urls(config):
            print(f"                 {url}")
        print("                 on homeproxy's plain-HTTP port, under any host name")
    print("Install the ROOT (this certificate) on each device, never a leaf or the intermediate: those are")
    print("renewed every few weeks. Steps per platform: docs/tls.md; this machine: homeproxy ca trust.")
    return 0


def _sudo_hint() -> str:
    """Where the invoking user's CA is when running under sudo (HOME is root's there)."""
    user = os.environ.get("SUDO_USER")
    if not user:
        return ""
    try:
        import pwd

        home = Path(pwd.getpwnam(user).pw_dir)
    except (ImportError, KeyError):
        return ""
    return f" (under sudo that is root's directory; {user}'s is --ca-dir {home / '.local/share/homeproxy/ca'})"


def cmd_trust(directory: Path, *, dry_run: bool) -> int:
    """Install the root into Debian's system store; 0 if done (or, dry, if it could be)."""
    tool = shutil.which(UPDATE_TOOL)
    if tool is None:
        _err(
            f"cannot trust the root here: {UPDATE_TOOL} is not installed (Debian/Ubuntu: apt install "
            "ca-certificates). Other systems: see docs/tls.md, or `homeproxy ca export --out root.crt` and "
            "add it by hand. Nothing was changed."
        )
        return 1
    if not dry_run and os.geteuid() != 0:
        _err(
            f"cannot trust the root: writing {SYSTEM_CA_FILE} needs root. Run: sudo homeproxy ca trust "
            f"--ca-dir {directory} (sudo changes the home directory, so name this CA). "
            "Nothing was changed; --dry-run shows the plan."
        )
        return 1
    ca = _open(directory, create=False, hint=_sudo_hint())
    if ca is None:
        return 1
    pem = ca.root_pem()
    try:
        same = SYSTEM_CA_FILE.read_bytes() == pem
    except OSError:
        same = False
    undo = f"sudo rm {SYSTEM_CA_FILE} && sudo {UPDATE_TOOL} --fresh"
    verb = "would" if dry_run else "will"
    print(f"root certificate: {ca.files['root certificate']} (SHA-256 {ca.fingerprint()})")
    if same:
        print(f"{SYSTEM_CA_FILE} already holds this root; {verb} run {UPDATE_TOOL} again")
    else:
        replacing = " (replacing the homeproxy root there)" if SYSTEM_CA_FILE.exists() else ""
        print(f"{verb} copy it to {SYSTEM_CA_FILE} (mode 0644){replacing}")
        print(f"{verb} run: {tool}")
    print(f"to undo: {undo}")
    if dry_run:
        print("dry run: nothing was changed")
        return 0
    from homeproxy.certs.files import PUBLIC_FILE, write_atomic

    try:
        SYSTEM_CA_DIR.mkdir(parents=True, exist_ok=True)
        if not same:
            write_atomic(SYSTEM_CA_FILE, pem, PUBLIC_FILE)
    except OSError as e:
        _err(f"{SYSTEM_CA_FILE}: cannot write ({e.strerror or e}); nothing was changed")
        return 1
    result = subprocess.run([tool], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        _err(f"{UPDATE_TOOL} failed (exit {result.returncode}):\n{result.stderr.strip() or result.stdout.strip()}")
        _err(f"{SYSTEM_CA_FILE} is in place; to undo: {undo}")
        return 1
    print(f"done: copied the root to {SYSTEM_CA_FILE} and ran {UPDATE_TOOL}")
    print("programs using the system store (curl, wget, Python, Chromium, Go) now trust homeproxy's sites;")
    print("Firefox keeps its own store (docs/tls.md). Already running programs may need a restart.")
    return 0
