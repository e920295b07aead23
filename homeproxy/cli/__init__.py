"""The `homeproxy` command: the argument parser, and the dispatch to each command's module.

    homeproxy                       open the terminal UI (the proxy runs inside it)        cli/tui.py
    homeproxy serve                 run the proxy headless (systemd), logging to stderr    cli/serve.py
    homeproxy check                 validate a config file and exit 0 or 1                 cli/check.py
    homeproxy passwd [USER]         hash a password for a site's auth users                cli/passwd.py
    homeproxy demo                  sample sites and live traffic on loopback, in the TUI  demo/
    homeproxy discover              list the services mDNS finds on the LAN                cli/discover.py
    homeproxy ca export|info|trust  the local CA's root certificate                        cli/ca.py
    homeproxy certs [renew SITE]    TLS certificates, renewing one                         cli/certs.py

`--config PATH` works before or after the subcommand. Each command imports the
runtime and the TUI only inside the function that needs them, so `check` loads
neither aiohttp nor Textual.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from homeproxy import __version__, paths
from homeproxy.cli import ca as cli_ca
from homeproxy.cli import certs as cli_certs
from homeproxy.cli.check import cmd_check
from homeproxy.cli.discover import cmd_discover
from homeproxy.cli.passwd import cmd_passwd
from homeproxy.cli.serve import cmd_serve
from homeproxy.cli.tui import cmd_tui

DESCRIPTION = """\
homeproxy is a reverse proxy for the home lab. Put your services (Home Assistant,
Plex, Nextcloud, ...) behind one address and reach each by its own host name.

Sites live in a TOML config file. With no file, homeproxy writes a commented
default one and listens on port 8080. Edit the file: changes apply within
seconds, and an invalid edit is reported and ignored. The TUI shows the sites
and the live traffic.
"""

EPILOG = f"""\
examples:
  homeproxy                         open the TUI with the default config
  homeproxy serve                   run headless (systemd: assets/homeproxy.service)
  homeproxy check --config my.toml  validate a config file
  homeproxy passwd alice            hash a password: alice = "scrypt$..."
  homeproxy demo                    try it: sample sites with live traffic, nothing kept
  homeproxy discover --json         the LAN's services (mDNS), for scripts
  kill -HUP <pid>                   make `homeproxy serve` re-read its config

default config file: {paths.default_config_path()}
access log:          {paths.log_dir() / "access.log"}
"""


def _add_config_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        type=Path,
        default=default,
        help=f"config file to use (default: {paths.default_config_path()})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homeproxy",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"homeproxy {__version__}")
    _add_config_option(parser, None)
    parser.set_defaults(command="tui")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    tui = sub.add_parser("tui", help="open the terminal UI (the default)", description="Open the terminal UI.")
    serve = sub.add_parser(
        "serve",
        help="run the proxy without the UI (for systemd)",
        description="Run the proxy headless, logging to stderr. SIGTERM or SIGINT drains in-flight requests "
        "(up to server.drain_timeout) and exits 0; SIGHUP re-reads the config file.",
    )
    check = sub.add_parser(
        "check",
        help="validate a config file and exit 0 (valid) or 1 (errors)",
        description="Validate a config file. Prints every error with its line and key; exits 0 or 1.",
    )
    for p, name in ((tui, "tui"), (serve, "serve"), (check, "check")):
        # SUPPRESS: a --config given before the subcommand is not overwritten by this default.
        _add_config_option(p, argparse.SUPPRESS)
        p.set_defaults(command=name)
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override logging.level")
    passwd = sub.add_parser(
        "passwd",
        help="hash a password for a site's auth users",
        description="Hash a password for `auth = { users = ... }`. On a terminal it asks twice without echo; "
        "otherwise it reads one line from stdin. Prints the hash (scrypt$...), or with USER a line ready "
        'to paste: USER = "scrypt$...". The password itself is never stored.',
    )
    passwd.add_argument("user", nargs="?", metavar="USER", help="the user name, for a ready `USER = ...` line")
    passwd.set_defaults(command="passwd")
    demo = sub.add_parser(
        "demo",
        help="open the TUI on sample sites with live traffic (loopback only, nothing kept)",
        description="Start sample backends on 127.0.0.1, a temporary config with sites for them (one behind "
        "Basic auth: user demo, password demo) and a gentle traffic generator, and open the TUI. Quitting "
        "stops everything and removes the temporary files. Your own config is not read or touched.",
    )
    demo.add_argument(
        "--rate", type=_rate, default=3.0, metavar="N", help="requests per second to generate (default: 3)"
    )
    demo.set_defaults(command="demo")
    discover = sub.add_parser(
        "discover",
        help="list the services that mDNS finds on the LAN",
        description="Listen for mDNS services for a few seconds and list them: name, type, address and "
        "path. Uses the config's [discovery] interfaces and service types when the file exists. Any of "
        'them can be used as a site\'s upstream: mdns://NAME._TYPE._tcp (e.g. "mdns://Plex._plexmediasvr._tcp"). '
        "Exits 0 even when nothing answers (saying so on stderr).",
    )
    _add_config_option(discover, argparse.SUPPRESS)
    discover.add_argument("--timeout", type=_seconds, default=3.0, metavar="S", help="seconds to listen (default: 3)")
    discover.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    discover.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="T",
        help='a service type to browse, e.g. "_http._tcp" (repeatable; default: the config\'s '
        "discovery.service_types, plus every type the LAN lists if browse_all_types is on)",
    )
    discover.add_argument(
        "--interface",
        dest="interfaces",
        action="append",
        metavar="I",
        help="an interface name or IP address to listen on (repeatable; default: discovery.interfaces, "
        "else the LAN interfaces)",
    )
    discover.set_defaults(command="discover")
    cli_ca.add_parser(sub, _add_config_option)
    cli_certs.add_parser(sub, _add_config_option)
    return parser


def _bounded(what: str, high: float) -> Callable[[str], float]:
    """An argparse type: a number above 0 and at most `high` (`what` names it in errors)."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {what}, got {text!r}") from None
        if not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"expected {what} above 0 and at most {high:g}, got {text}")
        return value

    return convert


_seconds = _bounded("seconds", 600)
_rate = _bounded("requests per second", 1000)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `homeproxy` command with `argv` (default: the process's arguments); return the exit status."""
    args = build_parser().parse_args(argv)
    config_path: Path = args.config or paths.default_config_path()
    if args.command == "check":
        return cmd_check(config_path)
    if args.command == "serve":
        return cmd_serve(config_path, args.log_level)
    if args.command == "passwd":
        return cmd_passwd(args.user)
    if args.command == "demo":
        from homeproxy.demo import run_demo

        return run_demo(args.rate)
    if args.command == "ca":
        return cli_ca.run(args, config_path)
    if args.command == "certs":
        return cli_certs.run(args, config_path)
    if args.command == "discover":
        return cmd_discover(config_path, args.timeout, args.json, args.types or [], args.interfaces or [])
    return cmd_tui(config_path)
