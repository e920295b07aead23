"""https upstreams with a home CA: `upstream_ca`, `upstream_sni` and `verify_upstream`, through the real engine.

The upstream is a real aiohttp HTTPS server on 127.0.0.1 with a certificate for
`nas.home.arpa` from a CA made for the test (homeproxy's own `LocalCA`, in a directory of its
own, not the local CA that homeproxy serves its sites with); it records the SNI name of each
handshake. The proxy reaches it by address, as one reaches a NAS or a Proxmox node.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from homeproxy.certs.ca import LocalCA
from homeproxy.engine.h1.errors import UPSTREAM_CERT_REFUSED
from tests.certs import write_pair
from tests.engine.conftest import Proxy, StartProxy, echo_handler, fetch, make_config, record, site

NAS = "nas.home.arpa"


@dataclass
class TlsBackend:
    port: int
    sni: list[str | None] = field(default_factory=list)
    """The server name of each TLS handshake (None: the client sent none)."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


StartTlsBackend = Callable[[LocalCA], Awaitable[TlsBackend]]


@pytest.fixture
def home_ca(tmp_path: Path) -> Callable[[str], LocalCA]:
    """Factory: a CA of its own (root and intermediate) in tmp_path/`name`."""

    def make(name: str) -> LocalCA:
        return LocalCA.open(tmp_path / name)

    return make


@pytest.fixture
async def tls_backend(tmp_path: Path) -> AsyncIterator[StartTlsBackend]:
    """Factory: an echo backend over HTTPS whose certificate for nas.home.arpa comes from `ca`."""
    runners: list[web.ServerRunner] = []

    async def start(ca: LocalCA) -> TlsBackend:
        crt, key = write_pair(ca.issue([NAS]), tmp_path / f"served-{len(runners)}")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        backend = TlsBackend(0)

        def on_sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            backend.sni.append(name)

        ctx.sni_callback = on_sni
        runner = web.ServerRunner(web.Server(echo_handler("nas")), handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        runners.append(runner)
        tcp = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await tcp.start()
        backend.port = tcp.port
        return backend

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


def ca_file(ca: LocalCA, path: Path) -> Path:
    """`ca`'s root as a PEM file at `path` (replacing what was there)."""
    path.write_bytes(ca.root_pem())
    return path


def nas_config(backend: TlsBackend, **options: Any) -> Any:
    return make_config(site("nas", ["nas.lan"], [backend.url], **options))


async def one_request(p: Proxy, session: aiohttp.ClientSession) -> tuple[int, str, bytes]:
    """GET /ui through the proxy: its status, the error in its `RequestCompleted`, and the body."""
    events = record(p)
    got = await fetch(session, p, "/ui", host="nas.lan")
    (done,) = await events.wait(1)
    assert done.status == got.status
    return got.status, done.error, got.body


async def test_a_home_ca_certificate_is_refused_against_the_system_store(
    proxy: StartProxy, session: aiohttp.ClientSession, home_ca: Callable[[str], LocalCA], tls_backend: StartTlsBackend
) -> None:
    nas = await tls_backend(home_ca("home"))
    p = await proxy(nas_config(nas, upstream_sni=NAS))

    status, error, _ = await one_request(p, session)

    assert status == 502
    assert error.startswith(UPSTREAM_CERT_REFUSED)
    assert nas.sni == [NAS]  # the handshake was made (and refused by homeproxy)


async def test_upstream_ca_and_sni_reach_a_server_by_address(
    proxy: StartProxy,
    session: aiohttp.ClientSession,
    home_ca: Callable[[str], LocalCA],
    tls_backend: StartTlsBackend,
    tmp_path: Path,
) -> None:
    ca = home_ca("home")
    nas = await tls_backend(ca)
    p = await proxy(nas_config(nas, upstream_ca=str(ca_file(ca, tmp_path / "home-ca.pem")), upstream_sni=NAS))

    status, error, body = await one_request(p, session)
    assert (status, error) == (200, ""), body[:300]
    assert (await fetch(session, p, "/again", host="nas.lan")).seen.path == "/again"

    assert nas.sni == [NAS]  # one handshake, sending the configured name; the second request reused it


async def test_a_name_the_certificate_does_not_cover_is_refused(
    proxy: StartProxy,
    session: aiohttp.ClientSession,
    home_ca: Callable[[str], LocalCA],
    tls_backend: StartTlsBackend,
    tmp_path: Path,
) -> None:
    ca = home_ca("home")
    nas = await tls_backend(ca)
    p = await proxy(
        nas_config(nas, upstream_ca=str(ca_file(ca, tmp_path / "home-ca.pem")), upstream_sni="printer.home.arpa")
    )

    status, error, _ = await one_request(p, session)

    assert status == 502
    assert error.startswith(UPSTREAM_CERT_REFUSED)
    assert nas.sni == ["printer.home.arpa"]


async def test_without_an_upstream_ca_the_url_host_is_checked(
    proxy: StartProxy,
    session: aiohttp.ClientSession,
    home_ca: Callable[[str], LocalCA],
    tls_backend: StartTlsBackend,
    tmp_path: Path,
) -> None:
    """The right CA but no upstream_sni: 127.0.0.1 is checked, which the certificate does not name."""
    ca = home_ca("home")
    nas = await tls_backend(ca)
    p = await proxy(nas_config(nas, upstream_ca=str(ca_file(ca, tmp_path / "home-ca.pem"))))

    status, error, _ = await one_request(p, session)

    assert status == 502
    assert error.startswith(UPSTREAM_CERT_REFUSED)
    assert nas.sni == [None]  # no SNI for an address


@pytest.mark.parametrize(
    ("ca", "sni"),
    [("", ""), ("missing.pem", NAS)],
    ids=["no-ca", "unreadable-ca-is-not-read"],
)
async def test_verify_upstream_off_needs_no_ca(
    proxy: StartProxy,
    session: aiohttp.ClientSession,
    home_ca: Callable[[str], LocalCA],
    tls_backend: StartTlsBackend,
    tmp_path: Path,
    ca: str,
    sni: str,
) -> None:
    nas = await tls_backend(home_ca("home"))
    ca_path = str(tmp_path / ca) if ca else ""
    p = await proxy(nas_config(nas, verify_upstream=False, upstream_ca=ca_path, upstream_sni=sni))

    status, error, body = await one_request(p, session)

    assert (status, error) == (200, ""), body[:300]
    assert nas.sni == ([NAS] if sni else [None])  # still sent when set (a name); none for an address


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "No such file or directory"), (b"", "it holds no PEM certificate"), (b"junk\n", "no PEM certificate")],
    ids=["missing", "empty", "not-pem"],
)
async def test_a_ca_file_that_cannot_be_read_is_a_502_that_says_so(
    proxy: StartProxy,
    session: aiohttp.ClientSession,
    home_ca: Callable[[str], LocalCA],
    tls_backend: StartTlsBackend,
    tmp_path: Path,
    content: bytes | None,
    reason: str,
) -> None:
    nas = await tls_backend(home_ca("home"))
    path = tmp_path / "home-ca.pem"
    if content is not None:
        path.write_bytes(content)
    p = await proxy(nas_config(nas, upstream_ca=str(path), upstream_sni=NAS))

    for _ in range(2):  # every request, not only the first
        status, error, _ = await one_request(p, session)
        assert status == 502
        assert f"upstream CA file {path} cannot be read: " in error
        assert reason in error
    assert nas.sni == []  # never a fall back to the system's CAs, nor a connection without the CA


async def test_a_replaced_ca_file_takes_effect_on_the_next_apply(
    proxy: StartProxy,
    session: aiohttp.ClientSession,
    home_ca: Callable[[str], LocalCA],
    tls_backend: StartTlsBackend,
    tmp_path: Path,
) -> None:
    old, new = home_ca("old"), home_ca("new")
    nas = await tls_backend(old)
    path = ca_file(old, tmp_path / "home-ca.pem")
    config = nas_config(nas, upstream_ca=str(path), upstream_sni=NAS)
    p = await proxy(config)
    assert (await one_request(p, session))[:2] == (200, "")  # and its connection waits in the pool

    ca_file(new, path)  # the home CA was replaced; nas still has a certificate from the old one
    await asyncio.to_thread(p.engine.apply, config)
    status, error, _ = await one_request(p, session)
    assert status == 502
    assert error.startswith(UPSTREAM_CERT_REFUSED)

    ca_file(old, path)
    await asyncio.to_thread(p.engine.apply, config)
    assert (await one_request(p, session))[:2] == (200, "")
    assert nas.sni == [NAS] * 3  # a new handshake after each apply
