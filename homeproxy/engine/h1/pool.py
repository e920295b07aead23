"""The keep-alive pool: idle `H1Connection`s per upstream, and the count of requests in flight.

One `Origin` per (scheme, host, port, verify, keep-alive, CA file, SNI name): sites that
forward to the same upstream the same way share its connections. A connection is taken from
the pool only when it has been idle for less than the keep-alive time and the kernel has not
seen the upstream close it (one getsockopt: the loop may not have read the FIN yet); idle ones
past their time are closed by a sweep once a second. `in_flight` and `failures` per origin are the seams the
balancing and health-check work builds on.

An https origin's client context comes from `Pool.origin`, which each config apply's forwarders
call: a site's `upstream_ca` file is read again then (a replaced CA takes effect on the apply,
and the idle connections made under the old one are closed). A CA file that cannot be read is
an `UpstreamError` on each connect, never a crash, and never a silent fall back to the system's CAs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import sys
from dataclasses import dataclass, field

from homeproxy.engine.h1.connection import H1Connection
from homeproxy.engine.h1.errors import UpstreamCertError, UpstreamConnectError, UpstreamError

MAX_IDLE = 128
"""Idle connections kept per origin (more are closed when released)."""
SWEEP_EVERY = 1.0
CHECK_AFTER = 0.05
"""Seconds idle after which a pooled connection is checked with the kernel before it is reused
(a close the loop has not read yet); connections in steady use skip the system call."""


@dataclass(frozen=True, slots=True)
class OriginKey:
    scheme: str
    host: str
    port: int
    verify: bool
    keepalive: float
    ca: str = ""
    """With `verify`: the PEM file of the only CA the upstream's certificate may chain to ("": the system's)."""
    sni: str = ""
    """The name sent in TLS SNI and checked in the upstream's certificate ("": `host`)."""


@dataclass(slots=True)
class Origin:
    key: OriginKey
    idle: list[H1Connection] = field(default_factory=list)
    in_flight: int = 0
    """Requests being answered by this origin now."""
    failures: int = 0
    """Connection failures in a row (0 after a success)."""
    tls: ssl.SSLContext | None = None
    """An https origin's client context (set by `Pool.origin`)."""
    tls_error: str = ""
    """Why an https origin has no context (its CA file cannot be read)."""


if sys.platform == "linux":
    _TCP_ESTABLISHED = 1  # tcpi_state, the first byte of Linux's struct tcp_info

    def peer_closed(conn: H1Connection) -> bool:
        """The kernel has seen the upstream close the connection (FIN or RST): one getsockopt, no read."""
        sock = conn.sock
        if sock is None:
            return False
        try:
            return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != _TCP_ESTABLISHED)
        except ValueError:  # uvloop: the socket is gone already
            return True
        except OSError:
            return False

else:  # pragma: no cover - Debian is Linux

    def peer_closed(conn: H1Connection) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class OriginLoad:
    """One upstream's load now, for the metrics."""

    upstream: str
    """`scheme://host:port`."""
    in_flight: int
    idle: int


#: Contexts made for `upstream_ca` files kept at most (a CA file replaced again and again).
MAX_CA_CONTEXTS = 16


def _client_context(verify: bool, cadata: str | bytes | None = None) -> ssl.SSLContext:
    """`cadata` (PEM text or DER bytes, never empty): trust only that CA, not the system's store too."""
    ctx = ssl.create_default_context(cadata=cadata)
    if not verify:  # self-signed LAN gear: still encrypted, not authenticated
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Pool:
    """Every origin's idle connections; lives on the engine's loop."""

    def __init__(self) -> None:
        self._origins: dict[OriginKey, Origin] = {}
        self._contexts: dict[tuple[bool, bytes], ssl.SSLContext] = {
            (True, b""): _client_context(True),
            (False, b""): _client_context(False),
        }
        """Client contexts per (verify, CA file contents; b"": the system's CAs)."""
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The engine's loop (set by `start()`)."""

    def origin(self, key: OriginKey) -> Origin:
        """The origin for `key`. For https, its context is looked up again, which reads the CA file
        of `key.ca`: callers keep the origin (the forwarders made by each config apply do)."""
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = Origin(key)
        if key.scheme == "https":
            self._trust(origin)
        return origin

    def _trust(self, origin: Origin) -> None:
        """(Re)make `origin`'s context; the idle connections made under another one are closed."""
        key = origin.key
        try:
            tls, error = self.tls_context(key.verify, key.ca), ""
        except UpstreamError as e:
            tls, error = None, str(e)
        if tls is not origin.tls:
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()
        origin.tls, origin.tls_error = tls, error

    def snapshot(self) -> tuple[OriginLoad, ...]:
        """Every origin's requests in flight and idle connections, summed per upstream address.
        Safe from another thread: it only reads counters (a moment's skew is harmless)."""
        totals: dict[str, list[int]] = {}
        for origin in list(self._origins.values()):
            key = origin.key
            t = totals.setdefault(f"{key.scheme}://{key.host}:{key.port}", [0, 0])
            t[0] += origin.in_flight
            t[1] += len(origin.idle)
        return tuple(OriginLoad(name, i, n) for name, (i, n) in sorted(totals.items()))

    def tls_context(self, verify: bool, ca: str = "") -> ssl.SSLContext:
        """The client context for https upstreams (`verify`: check the certificate and name; `ca`:
        against that PEM file's CA only, read now). `UpstreamError` if `ca` cannot be read or holds
        no certificate. Without `verify` nothing is checked and `ca` is not read."""
        if not verify or not ca:
            return self._contexts[verify, b""]
        try:
            with open(os.path.expanduser(ca), "rb") as f:
                data = f.read()
        except OSError as e:
            raise UpstreamError(f"upstream CA file {ca} cannot be read: {e.strerror or e}") from None
        ctx = self._contexts.get((True, data)) if data else None  # b"" is the system's CAs
        if ctx is None:
            try:
                if not data:
                    raise ValueError("empty")
                ctx = _client_context(True, data.decode("ascii", "ignore") if b"-----BEGIN" in data else data)
            except (ValueError, ssl.SSLError):
                raise UpstreamError(f"upstream CA file {ca} cannot be read: it holds no PEM certificate") from None
            if len(self._contexts) >= 2 + MAX_CA_CONTEXTS:
                for old in [k for k in self._contexts if k[1]]:
                    del self._contexts[old]
            self._contexts[True, data] = ctx
        return ctx

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.create_task(self._sweep(), name="homeproxy-pool-sweep")

    async def acquire(self, origin: Origin, connect_timeout: float | None, *, fresh: bool = False) -> H1Connection:
        """An idle connection that is still good, else a new one (`fresh`: always a new one)."""
        conn = None if fresh else self.take(origin)
        if conn is not None:
            return conn
        return await self._connect(origin, self._loop or asyncio.get_running_loop(), connect_timeout)

    def take(self, origin: Origin) -> H1Connection | None:
        """An idle connection that is still good, or None (then `acquire` connects)."""
        idle = origin.idle
        if not idle:
            return None
        now = (self._loop or asyncio.get_running_loop()).time()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed
            transport = conn.transport
            idle_for = now - conn.idle_since
            if (
                conn.closed
                or transport is None
                or transport.is_closing()
                or idle_for >= origin.key.keepalive
                # One getsockopt, only for a connection idle long enough for the upstream to have
                # closed it unseen: one in steady use is seen closing by the loop itself.
                or (idle_for > CHECK_AFTER and peer_closed(conn))
            ):
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, origin: Origin, loop: asyncio.AbstractEventLoop, timeout: float | None) -> H1Connection:
        key = origin.key
        tls = None
        if key.scheme == "https":
            if origin.tls is None:  # its CA file could not be read at the last apply: try again
                self._trust(origin)
            if origin.tls is None:
                raise UpstreamError(origin.tls_error)  # our configuration, not the upstream's failure
            tls = origin.tls
        # The SNI name (an address is not sent: the ssl module leaves SNI out for one).
        name = (key.sni or key.host) if tls else None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: H1Connection(loop), key.host, key.port, ssl=tls, server_hostname=name
                )
        except ssl.SSLCertVerificationError as e:
            origin.failures += 1
            raise UpstreamCertError(e.verify_message or "certificate refused") from None
        except TimeoutError:
            origin.failures += 1
            raise UpstreamConnectError("connect timed out") from None
        except OSError as e:
            origin.failures += 1
            raise UpstreamConnectError(e.strerror or str(e), e) from None
        origin.failures = 0
        return conn

    def release(self, origin: Origin, conn: H1Connection) -> None:
        """Back to the pool if it may carry another request, else closed."""
        if conn.reusable() and len(origin.idle) < MAX_IDLE:
            conn.idle_since = (self._loop or asyncio.get_running_loop()).time()
            origin.idle.append(conn)
        else:
            conn.close()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = loop.time()
            for origin in self._origins.values():
                keep = []
                for conn in origin.idle:
                    if conn.closed or now - conn.idle_since >= origin.key.keepalive:
                        conn.close()
                    else:
                        keep.append(conn)
                origin.idle[:] = keep

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()
        self._origins.clear()
