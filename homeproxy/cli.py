"""The `homeproxy` command: the TUI, `serve`, `check`, `passwd`, `demo`, `discover`.

    homeproxy                     open the terminal UI (the proxy runs inside it)
    homeproxy serve               run the proxy headless (systemd), logging to stderr
    homeproxy check               validate a config file and exit 0 or 1
    homeproxy passwd [USER]       hash a password for a site's auth users
    homeproxy demo                sample sites and live traffic on loopback, in the TUI
    homeproxy discover            list the services mDNS finds on the LAN
    homeproxy ca export|info|trust  the local CA's root certificate (homeproxy/cli_ca.py)
    homeproxy certs [renew SITE]    TLS certificates, renewing one (homeproxy/cli_certs.py)

`--config PATH` works before or after the subcommand.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from homeproxy import __version__, cli_ca, cli_certs, paths
from homeproxy.config import ConfigChanged, ConfigEvent, ConfigInvalid, ConfigRejected, ConfigStore
from homeproxy.config.load import ConfigError, decode_config, load_file, parse_config

log = logging.getLogger("homeproxy")

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


def cmd_check(path: Path) -> int:
    """Validate `path`; print every error. 0 if valid."""
    try:
        data = path.read_bytes()
    except OSError as e:
        print(f"{path}: cannot read: {e.strerror or e}", file=sys.stderr)
        return 1
    warnings: list[ConfigError] = []
    try:
        config = parse_config(decode_config(data, str(path)), str(path), warnings)
    except ConfigInvalid as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        n = len(e.errors)
        print(f"{path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{path}: ok, {len(config.sites)} site{'s' if len(config.sites) != 1 else ''}")
    return 0


def cmd_passwd(user: str | None) -> int:
    """Print the scrypt hash of a password asked twice without echo (or read from stdin). 0 if printed."""
    import getpass

    import tomlkit

    from homeproxy.passwords import hash_password

    if user is not None and (not user or ":" in user):
        print('a user name cannot be empty or contain ":"', file=sys.stderr)
        return 2
    try:
        if sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                print("the passwords differ; nothing printed", file=sys.stderr)
                return 1
        else:
            password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        password.encode("utf-8")  # a non-UTF-8 stdin decodes to surrogates, which no browser could send
    except (EOFError, KeyboardInterrupt):
        print("no password given; nothing printed", file=sys.stderr)
        return 1
    except UnicodeError:
        print("the password is not valid UTF-8; nothing printed", file=sys.stderr)
        return 1
    if not password:
        print("the password is empty; nothing printed", file=sys.stderr)
        return 1
    hashed = hash_password(password)
    print(hashed if user is None else tomlkit.dumps({user: hashed}).rstrip("\n"))
    return 0


def cmd_discover(path: Path, timeout: float, as_json: bool, types: list[str], interfaces: list[str]) -> int:
    """Browse mDNS for `timeout` seconds and print what answered. 0 unless the arguments are wrong
    or no interface can be used. Needs neither the engine nor the TUI."""
    import asyncio
    import json

    from homeproxy.config.model import DiscoverySettings
    from homeproxy.discovery.browse import discover
    from homeproxy.discovery.interfaces import choose_interfaces, zeroconf_addresses
    from homeproxy.discovery.service import normalize_type

    settings = DiscoverySettings()
    try:
        settings = load_file(path).discovery
    except FileNotFoundError:
        pass
    except OSError as e:
        print(f"{path}: cannot read ({e.strerror or e}); using the default [discovery] settings", file=sys.stderr)
    except ConfigInvalid:
        print(f"{path} has errors (`homeproxy check`); using the default [discovery] settings", file=sys.stderr)
    try:
        wanted = [normalize_type(t) for t in types] if types else list(settings.service_types)
    except ValueError as e:
        print(f"--type: {e}", file=sys.stderr)
        return 2
    try:
        chosen = choose_interfaces(interfaces or settings.interfaces)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 1
    where = ", ".join(str(i) for i in chosen)
    try:
        found = asyncio.run(
            discover(
                zeroconf_addresses(chosen),
                types=wanted,
                browse_all_types=settings.browse_all_types and not types,
                timeout=timeout,
                max_services=settings.max_services,
            )
        )
    except KeyboardInterrupt:
        return 130
    except (OSError, RuntimeError) as e:
        print(f"mDNS could not start on {where}: {e}", file=sys.stderr)
        return 1
    if as_json:
        rows = [
            {
                "name": s.instance,
                "type": s.type,
                "label": s.label,
                "host": s.host,
                "addresses": list(s.addresses),
                "port": s.port,
                "path": s.path,
                "url": s.url(),
                "upstream": str(s.ref),
                "properties": dict(s.properties),
            }
            for s in found
        ]
        print(json.dumps(rows, indent=2))
    elif found:
        table = [("NAME", "TYPE", "ADDRESS", "PATH")]
        for s in found:
            table.append((s.instance, s.label, _host_port(s.address, s.port) or "(unresolved)", s.path or "/"))
        widths = [max(len(row[i]) for row in table) for i in range(3)]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3], sep="  ")
    n = len(found)
    if n:
        print(f"{n} service{'s' if n != 1 else ''} in {timeout:g} s on {where}", file=sys.stderr)
    else:
        print(f"no services found in {timeout:g} s on {where}", file=sys.stderr)
    return 0


def _host_port(address: str | None, port: int) -> str:
    if address is None or not port:
        return ""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def cmd_serve(path: Path, level: str | None) -> int:
    """Run headless until SIGTERM/SIGINT; SIGHUP reloads."""
    from homeproxy.runtime import Runtime

    _setup_logging(level or _peek_level(path))
    runtime = Runtime(path, log_level=level)
    try:
        runtime.start()
    except ConfigInvalid as e:
        for err in e.errors:
            log.error("%s", err)
        log.error("not starting: fix the config (`homeproxy check --config %s`)", path)
        return 1
    except OSError as e:
        log.error("cannot read or create %s: %s", path, e.strerror or e)
        return 1
    assert runtime.engine is not None
    if runtime.store.created:
        log.info("no config file found: wrote a commented default to %s", path)
    if runtime.engine.listen_errors:
        for reason in runtime.engine.listen_errors:
            log.error("%s", reason)
        runtime.stop()
        return 1
    config = runtime.store.config
    log.info("homeproxy %s serving %d site(s) from %s", __version__, len(config.sites), path)

    def on_config(event: ConfigEvent) -> None:
        if isinstance(event, ConfigChanged):
            log.info("config applied (%s): %d site(s)", event.source, len(event.config.sites))
        elif isinstance(event, ConfigRejected):
            log.error("config file rejected; still serving the last good config")

    runtime.store.subscribe(on_config)
    stop = threading.Event()
    reload = threading.Event()

    def on_stop(signum: int, _frame: object) -> None:
        log.info("%s: draining in-flight requests, then exiting", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: object) -> None:
        reload.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    while not stop.wait(0.2):
        if reload.is_set():
            reload.clear()
            log.info("SIGHUP: re-reading %s", path)
            if not runtime.store.reload(force=True) and not runtime.store.last_errors:
                log.info("config unchanged")
    runtime.stop()
    log.info("stopped")
    return 0


def _peek_level(path: Path) -> str:
    try:
        return ConfigStore(path).load(create=False).logging.level
    except (OSError, ConfigInvalid):
        return "info"


def cmd_tui(path: Path) -> int:
    """Start the engine and open the TUI; quitting stops the engine."""
    from homeproxy.runtime import Runtime
    from homeproxy.tui.app import HomeproxyApp

    log_file = paths.log_dir() / "homeproxy.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # The screen belongs to the TUI: the process log goes to a file.
    logging.basicConfig(
        level=logging.INFO,
        filename=log_file,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    runtime = Runtime(path)
    while True:
        try:
            runtime.start()
            break
        except ConfigInvalid as e:
            # Open the file with its errors instead of leaving: homeproxy starts once it is fixed.
            from homeproxy.tui.repair import RepairApp

            if not RepairApp(path, e.errors).run():
                for err in e.errors:
                    print(err, file=sys.stderr)
                print(f"\nhomeproxy did not start: fix {path} (`homeproxy check --config {path}`).", file=sys.stderr)
                return 1
            runtime = Runtime(path)
        except OSError as e:
            print(f"cannot read or create {path}: {e.strerror or e}", file=sys.stderr)
            return 1
    # Everything made while starting lives as long as the process: keep it out of the
    # collector's way, and collect less often (the request buffer holds many small objects;
    # full collections over it pause the UI, and with it the proxy's share of the GIL).
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        HomeproxyApp(runtime).run()
    finally:
        runtime.stop()
    if runtime.store.created:
        print(f"homeproxy wrote a commented default config to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
