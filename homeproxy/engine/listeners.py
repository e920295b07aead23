"""The engine's listening sockets: which ones a config asks for, opening them, and saying why not.

A `Listener` is one `asyncio.Server` (plain HTTP, or TLS with the certificate manager's
SNI context) serving homeproxy's HTTP/1.1 protocol; `Engine._bind` swaps sets of them
on `apply()`. Connections already open belong to the `HttpServer`, not to a listener,
so closing a listener never drops one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ssl
from collections.abc import Callable

from homeproxy.config.model import Config
from homeproxy.engine.h1.server import HttpServer


@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    """One open listening socket: where, and whether it speaks TLS."""

    host: str
    port: int
    """As bound (port 0 resolved)."""
    tls: bool
    server: asyncio.AbstractServer


class BindError(OSError):
    """A listener could not be opened; the message says why and what to do."""


def explain_bind_error(host: str, port: int, err: OSError, key: str = "http_port") -> str:
    """A sentence a person can act on."""
    where = f"{host}:{port}"
    if err.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied. Ports below 1024 need root or "
            f"CAP_NET_BIND_SERVICE (the systemd unit in assets/ grants it); or set {key} to 1024 or above."
        )
    if err.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is already in use by another program "
            f"(another homeproxy? `ss -ltnp 'sport = :{port}'` shows which); stop it or change {key}."
        )
    if err.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: this machine has no such address; check server.listen."
    return f"cannot listen on {where}: {err.strerror or err}"


async def open_listeners(
    http: HttpServer, wanted: tuple[tuple[str, int, bool], ...], tls_context: Callable[[], ssl.SSLContext]
) -> tuple[list[Listener], list[str]]:
    """Open each (host, port, tls) of `wanted`: the ones that opened, and why the others did not."""
    loop = asyncio.get_running_loop()
    opened: list[Listener] = []
    errors: list[str] = []
    for host, port, tls in wanted:
        ctx = tls_context() if tls else None
        try:
            server = await loop.create_server(http.protocol(tls), host, port, ssl=ctx, reuse_address=True, backlog=1024)
        except OSError as e:
            errors.append(explain_bind_error(host, port, e, "https_port" if tls else "http_port"))
            continue
        bound = server.sockets[0].getsockname()[1] if server.sockets else port
        opened.append(Listener(host, int(bound), tls, server))
    return opened, errors


def listen_set(config: Config) -> tuple[tuple[str, int, bool], ...]:
    """(host, port, tls) of every listener `config` needs: HTTPS only while a site has TLS on."""
    server = config.server
    plain = tuple((host, server.http_port, False) for host in server.listen)
    if not config.tls_sites:
        return plain
    return plain + tuple((host, server.https_port, True) for host in server.listen)
