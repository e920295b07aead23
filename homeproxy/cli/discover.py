"""`homeproxy discover`: list the services mDNS finds on the LAN, as a table or JSON."""

from __future__ import annotations

import sys
from pathlib import Path

from homeproxy.config import ConfigInvalid
from homeproxy.config.load import load_file


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
