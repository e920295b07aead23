"""HTTPS through the real engine: the local CA, SNI, imported pairs, renewal, redirects, the root download.

Every client here verifies: it trusts only the local CA's root (read from the data dir, as
`homeproxy ca export` writes it) or the test's own CA, with hostname checks on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import plistlib
import ssl
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from homeproxy import paths
from homeproxy.certs.ca import LocalCA, fingerprint
from homeproxy.certs.manager import CertError
from homeproxy.config.model import Config
from homeproxy.engine.engine import Engine
from homeproxy.engine.events import EventBus
from homeproxy.engine.tls_paths import ROOT_URL_PATH
from tests.certs import write_pair
from tests.engine.conftest import Backend, NamedEcho, Seen, make_config, raw_request, read_response, site
from tests.waiting import wait_for

Start = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def engine() -> AsyncIterator[Start]:
    started: list[Engine] = []

    async def start(config: Config, clock: Callable[[], float] = time.time) -> Engine:
        e = Engine(config, EventBus(), clock=clock)
        e.certs.interval = 0.1
        started.append(e)
        await asyncio.to_thread(e.start)
        assert e.listen_errors == () and e.tls_errors == ()
        return e

    yield start
    for e in started:
        await asyncio.to_thread(e.stop)


def tls_config(*sites: dict[str, object], **server: object) -> Config:
    return make_config(*sites, https_port=0, **server)


def root_context() -> ssl.SSLContext:
    """A client that trusts only homeproxy's root, hostname checks on."""
    root = (paths.data_dir() / "ca" / "root.crt").read_bytes()
    ctx = ssl.create_default_context(cadata=root.decode())
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


def https_port(e: Engine) -> int:
    assert e.https_addresses, "no HTTPS listener"
    return e.https_addresses[0][1]


async def peer_cert(port: int, name: str | None, ctx: ssl.SSLContext | None = None) -> x509.Certificate:
    """Handshake with SNI `name` and return the leaf the server sent (verified by `ctx`)."""
    ctx = ctx or root_context()
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)}


async def get(
    url: str, *, host: str, ctx: ssl.SSLContext | None = None, **kw: object
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, headers={"Host": host}, ssl=ctx or False, server_hostname=host, allow_redirects=False, **kw) as r,
    ):  # type: ignore[arg-type]
        return r.status, dict(r.headers), await r.read()


async def test_https_request_verified_against_the_exported_root(engine: Start, echo: Backend) -> None:
    e = await engine(tls_config(site("ha", ["ha.home.arpa"], [echo.url], tls=True)))
    port = https_port(e)

    status, _, body = await get(f"https://127.0.0.1:{port}/states?x=1", host="ha.home.arpa", ctx=root_context())

    assert status == 200
    seen = Seen.of(body)
    assert seen.path == "/states?x=1"
    assert seen.one("X-Forwarded-Proto") == "https"
    assert seen.one("X-Forwarded-Port") == str(port)
    [status_row] = e.certificates()
    assert (status_row.site, status_row.issuer, status_row.state) == ("ha", "internal", "ok")
    assert status_row.names == ("ha.home.arpa",)


async def test_sni_picks_each_sites_leaf_and_a_wildcard(engine: Start, named_echo: NamedEcho) -> None:
    a, b = await named_echo("a"), await named_echo("b")
    e = await engine(
        tls_config(
            site("a", ["a.home.arpa"], [a.url], tls=True),
            site("b", ["*.lab.home.arpa"], [b.url], tls=True),
        )
    )
    port = https_port(e)

    assert sans(await peer_cert(port, "a.home.arpa")) == {"a.home.arpa"}
    assert sans(await peer_cert(port, "nas.lab.home.arpa")) == {"*.lab.home.arpa"}
    _, _, body = await get(f"https://127.0.0.1:{port}/", host="nas.lab.home.arpa", ctx=root_context())
    assert Seen.of(body).name == "b"


@pytest.mark.parametrize("name", ["other.home.arpa", "deep.er.lab.home.arpa", None])
async def test_an_unknown_or_missing_sni_gets_no_sites_certificate(
    engine: Start, echo: Backend, name: str | None
) -> None:
    e = await engine(tls_config(site("a", ["a.home.arpa"], [echo.url], tls=True)))
    loose = ssl.create_default_context()
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE  # only to see what the server would show: it must show nothing

    with pytest.raises((ssl.SSLError, ConnectionError)):  # the handshake fails: no certificate at all
        await peer_cert(https_port(e), name, loose)


async def test_a_non_tls_site_on_the_https_port_is_misdirected(engine: Start, named_echo: NamedEcho) -> None:
    a, plain = await named_echo("a"), await named_echo("plain")
    e = await engine(tls_config(site("a", ["a.home.arpa"], [a.url], tls=True), site("p", ["p.home.arpa"], [plain.url])))

    status, _, _ = await get(f"https://127.0.0.1:{https_port(e)}/", host="a.home.arpa", ctx=root_context())
    async with aiohttp.ClientSession() as s:  # SNI a.home.arpa, Host p.home.arpa
        url = f"https://127.0.0.1:{https_port(e)}/"
        async with s.get(url, headers={"Host": "p.home.arpa"}, ssl=root_context(), server_hostname="a.home.arpa") as r:
            assert r.status == 421
    assert status == 200


async def test_plain_http_redirects_with_path_and_query_but_not_the_exempt_paths(engine: Start, echo: Backend) -> None:
    e = await engine(
        tls_config(
            site("a", ["a.home.arpa"], [echo.url], tls=True),
            site("keep", ["k.home.arpa"], [echo.url], tls=True, redirect_to_https=False),
        )
    )
    http = f"http://127.0.0.1:{e.addresses[0][1]}"

    status, headers, _ = await get(f"{http}/x/y?q=1&r=%20", host="a.home.arpa")
    assert status == 308
    assert headers["Location"] == f"https://a.home.arpa:{https_port(e)}/x/y?q=1&r=%20"
    status, _, body = await get(f"{http}/x", host="k.home.arpa")
    assert status == 200 and Seen.of(body).path == "/x"
    # The root download and ACME challenges are answered on plain HTTP, never redirected.
    status, _, _ = await get(f"{http}{ROOT_URL_PATH}", host="a.home.arpa")
    assert status == 200
    e.certs.challenges.put("tok123", "tok123.thumb")
    status, _, body = await get(f"{http}/.well-known/acme-challenge/tok123", host="a.home.arpa")
    assert (status, body) == (200, b"tok123.thumb")
    status, _, _ = await get(f"{http}/.well-known/acme-challenge/unknown", host="a.home.arpa")
    assert status == 308  # not ours: the site's own business


async def test_an_address_host_of_a_tls_site_is_served_on_plain_http_not_redirected(
    engine: Start, echo: Backend
) -> None:
    e = await engine(tls_config(site("a", ["a.home.arpa", "127.0.0.1"], [echo.url], tls=True)))
    http = f"http://127.0.0.1:{e.addresses[0][1]}"
    status, _, body = await get(f"{http}/x", host="127.0.0.1")  # no SNI for it: HTTPS could never work
    assert status == 200 and Seen.of(body).path == "/x"
    status, _, _ = await get(f"{http}/x", host="a.home.arpa")
    assert status == 308


async def test_the_root_download_serves_only_the_public_root(engine: Start, echo: Backend) -> None:
    e = await engine(tls_config(site("a", ["a.home.arpa"], [echo.url], tls=True)))
    http = f"http://127.0.0.1:{e.addresses[0][1]}"
    ca = LocalCA.open(paths.data_dir() / "ca", create=False)

    _, headers, pem = await get(f"{http}{ROOT_URL_PATH}", host="anything.example")
    _, _, der = await get(f"{http}/.well-known/homeproxy/root.der", host="10.0.0.1")
    _, mc_headers, profile = await get(f"{http}/.well-known/homeproxy/root.mobileconfig", host="a.home.arpa")
    status, _, _ = await get(f"{http}/.well-known/homeproxy/root.key", host="a.home.arpa")

    assert pem == ca.root_pem() and der == ca.root_der()
    assert headers["Content-Type"] == "application/x-x509-ca-cert"
    assert mc_headers["Content-Type"] == "application/x-apple-aspen-config"
    [payload] = plistlib.loads(profile)["PayloadContent"]
    assert payload["PayloadContent"] == ca.root_der()
    for body in (pem, der, profile):
        assert b"PRIVATE KEY" not in body
        assert ca.intermediate.public_bytes(serialization.Encoding.DER) not in body
    assert status == 308  # not a download: routed (and redirected) like any other path


async def test_no_root_download_without_serve_root(engine: Start, echo: Backend) -> None:
    config = tls_config(site("a", ["a.home.arpa"], [echo.url], tls=True))
    config = dataclasses.replace(config, tls=dataclasses.replace(config.tls, serve_root=False))
    e = await engine(config)

    status, _, _ = await get(f"http://127.0.0.1:{e.addresses[0][1]}{ROOT_URL_PATH}", host="x.lan")

    assert status == 404


async def test_keys_are_0600_in_0700_directories(engine: Start, echo: Backend) -> None:
    await engine(tls_config(site("a", ["a.home.arpa"], [echo.url], tls=True)))
    data = paths.data_dir()

    keys = list((data / "ca").glob("*.key")) + list((data / "certs").glob("*.key"))
    assert len(keys) >= 3  # root, intermediate, the site's leaf
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    for d in (data / "ca", data / "certs"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert not [p for p in (data / "certs").iterdir() if p.name.startswith(".pair.")]  # scratch files gone


async def test_a_leaf_near_expiry_is_renewed_without_dropping_an_open_connection(engine: Start, echo: Backend) -> None:
    now = [time.time() - timedelta(days=21).total_seconds()]  # issued 21 days ago: real clients accept both
    e = await engine(tls_config(site("a", ["a.home.arpa"], [echo.url], tls=True)), clock=lambda: now[0])
    port = https_port(e)
    before = await peer_cert(port, "a.home.arpa")
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=root_context(), server_hostname="a.home.arpa")
    request = b"GET /k HTTP/1.1\r\nHost: a.home.arpa\r\n\r\n"
    try:
        writer.write(request)
        assert (await read_response(reader)).status == 200
        [old] = e.certificates()

        now[0] = time.time()  # 9 of 30 days left: under a third
        await wait_for(lambda: e.certificates()[0].fingerprint != old.fingerprint, description="renewal")

        writer.write(request)  # the same keep-alive connection, made before the renewal
        assert (await read_response(reader)).status == 200
    finally:
        writer.close()
    after = await peer_cert(port, "a.home.arpa")
    assert after.serial_number != before.serial_number
    assert e.certificates()[0].state == "ok"


def resumed_sessions(port: int, name: str, version: ssl.TLSVersion, connections: int) -> list[ssl.SSLSession]:
    """`connections` verified HTTPS requests in a row, each offering the previous one's session;
    returns the sessions of those that resumed."""
    import socket

    ctx = root_context()
    ctx.minimum_version = ctx.maximum_version = version
    session: ssl.SSLSession | None = None
    resumed = []
    for _ in range(connections):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=name, session=session) as tls,
        ):
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(65536):  # to the end (TLS 1.3 tickets arrive after the handshake)
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            session = tls.session
            if tls.session_reused:
                resumed.append(session)
            # A clean close (close_notify both ways): OpenSSL forgets a TLS 1.2 session that ended
            # without one, where a browser's clean close would keep it.
            with contextlib.suppress(OSError):
                tls.unwrap()
    return resumed


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
async def test_sessions_resume_from_the_servers_cache_with_no_ticket_key(
    engine: Start, echo: Backend, version: ssl.TLSVersion
) -> None:
    e = await engine(tls_config(site("a", ["a.home.arpa"], [echo.url], tls=True)))
    port = https_port(e)
    resumed = await asyncio.to_thread(resumed_sessions, port, "a.home.arpa", version, 3)
    assert len(resumed) == 2  # the 2nd and the 3rd connection skip the full handshake
    if version == ssl.TLSVersion.TLSv1_2:
        # No stateless ticket (the master secret sealed under a long-lived key): a session ID.
        assert not any(s.has_ticket for s in resumed) and all(s.id for s in resumed)
    stats = e.certs.contexts.listener.session_stats()
    assert stats["hits"] == 2
    assert stats["number"] >= 1  # the sessions are in the listener's cache: a ticket only names one


async def test_an_apply_that_adds_a_tls_site_serves_it_when_apply_returns(engine: Start, echo: Backend) -> None:
    e = await engine(make_config(site("plain", ["p.home.arpa"], [echo.url]), https_port=0))
    assert e.https_addresses == ()

    started = time.monotonic()
    await asyncio.to_thread(e.apply, tls_config(site("plain", ["p.home.arpa"], [echo.url], tls=True)))
    status, _, _ = await get(f"https://127.0.0.1:{https_port(e)}/", host="p.home.arpa", ctx=root_context())
    elapsed = time.monotonic() - started

    assert status == 200
    assert elapsed < 30  # not a speed target: it must not wait for a renewal pass


def imported_pair(tmp: Path, names: list[str], stem: str) -> tuple[Path, Path, LocalCA]:
    ca = LocalCA.open(tmp / "their-ca")
    crt, key = write_pair(ca.issue(names), tmp / "files", stem)
    return crt, key, ca


async def test_an_imported_pair_is_served_and_hot_reloaded(engine: Start, echo: Backend, tmp_path: Path) -> None:
    crt, key, theirs = imported_pair(tmp_path, ["nas.home.arpa"], "nas")
    trust = ssl.create_default_context(cadata=theirs.root_pem().decode())
    e = await engine(tls_config(site("nas", ["nas.home.arpa"], [echo.url], tls=True, cert=str(crt), key=str(key))))
    port = https_port(e)
    first = await peer_cert(port, "nas.home.arpa", trust)

    new = theirs.issue(["nas.home.arpa"])
    tmp_crt, tmp_key = write_pair(new, tmp_path / "staging", "nas")
    os.replace(tmp_key, key)
    os.replace(tmp_crt, crt)  # as certbot's deploy hook would
    new_leaf = x509.load_pem_x509_certificate(new.chain_pem)
    wanted = fingerprint(new_leaf.public_bytes(serialization.Encoding.DER))
    await wait_for(lambda: e.certificates()[0].fingerprint == wanted, description="reload")
    assert e.certificates()[0].state == "ok"
    second = await peer_cert(port, "nas.home.arpa", trust)
    assert second.serial_number != first.serial_number

    key.write_bytes(b"not a key\n")  # a broken new pair: the old one keeps serving
    await wait_for(lambda: e.certificates()[0].state == "error", description="the broken pair seen")
    [status] = e.certificates()
    assert str(key) in status.last_error and "previous pair keeps serving" in status.last_error
    assert (await peer_cert(port, "nas.home.arpa", trust)).serial_number == second.serial_number


async def test_an_apply_with_a_mismatched_pair_is_refused_and_nothing_changes(
    engine: Start, echo: Backend, tmp_path: Path
) -> None:
    crt, _, _ = imported_pair(tmp_path, ["nas.home.arpa"], "nas")
    _, other_key, _ = imported_pair(tmp_path, ["nas.home.arpa"], "other")
    e = await engine(tls_config(site("a", ["a.home.arpa"], [echo.url], tls=True)))
    before = e.config
    # Files that were good when the config was checked and broke before the apply.
    good_crt, good_key, _ = imported_pair(tmp_path, ["nas.home.arpa"], "good")
    config = tls_config(
        site("a", ["a.home.arpa"], [echo.url], tls=True),
        site("nas", ["nas.home.arpa"], [echo.url], tls=True, cert=str(good_crt), key=str(good_key)),
    )
    good_key.write_bytes(other_key.read_bytes())

    with pytest.raises(CertError) as refused:
        await asyncio.to_thread(e.apply, config)

    assert 'site "nas"' in str(refused.value) and str(good_key) in str(refused.value)
    assert e.config is before
    assert [s.site for s in e.certificates()] == ["a"]
    assert crt.exists()


async def test_websockets_work_over_tls(engine: Start, backend: Callable[..., Awaitable[Backend]]) -> None:
    async def ws_echo(request: web.BaseRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)  # type: ignore[arg-type]
        async for msg in ws:
            await ws.send_str(f"echo {msg.data} via {request.headers.get('X-Forwarded-Proto')}")
        return ws

    b = await backend(ws_echo)
    e = await engine(tls_config(site("ws", ["ws.home.arpa"], [b.url], tls=True)))
    async with aiohttp.ClientSession() as s:
        url = f"wss://127.0.0.1:{https_port(e)}/socket"
        async with s.ws_connect(
            url, headers={"Host": "ws.home.arpa"}, ssl=root_context(), server_hostname="ws.home.arpa"
        ) as ws:
            await ws.send_str("hi")
            msg = await ws.receive(timeout=10)
    assert msg.data == "echo hi via https"


async def test_plain_http_listener_unchanged_without_tls_sites(engine: Start, echo: Backend) -> None:
    e = await engine(make_config(site("p", ["p.lan"], [echo.url]), https_port=0))

    response = await raw_request(e.addresses[0][1], b"GET / HTTP/1.1\r\nHost: p.lan\r\nConnection: close\r\n\r\n")

    assert response.status == 200
    assert e.https_addresses == () and e.certificates() == ()
