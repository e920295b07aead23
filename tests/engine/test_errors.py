"""Errors: unreachable, slow, dying and garbled upstreams; malformed and abandoned client requests."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from homeproxy.engine.upstream import UPSTREAM_CERT_REFUSED
from tests.engine.conftest import (
    Backend,
    Handler,
    NamedEcho,
    RawCallback,
    StartBackend,
    StartProxy,
    StartRawBackend,
    closed_port,
    echo_handler,
    fetch,
    make_config,
    raw_request,
    record,
    site,
)


def assert_human_page(body: bytes, status: int, *, html: bool, hidden: tuple[str, ...] = ()) -> None:
    text = body.decode()
    assert str(status) in text
    assert "Traceback" not in text and "Error:" not in text and 'File "' not in text
    if html:
        assert text.lstrip().lower().startswith("<!doctype html>")
        assert f"<h1>{status}" in text
    for secret in hidden:
        assert secret not in text


async def test_unreachable_upstream_is_a_502_page(proxy: StartProxy, session: aiohttp.ClientSession) -> None:
    port = closed_port()
    p = await proxy(make_config(site("down", ["down.lan"], [f"http://127.0.0.1:{port}"])))

    plain = await fetch(session, p, host="down.lan", headers={"Accept": "*/*"})
    html = await fetch(session, p, host="down.lan", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})

    assert plain.status == 502
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert_human_page(plain.body, 502, html=False, hidden=(str(port), "127.0.0.1", "down.lan"))
    assert html.status == 502
    assert html.headers["Content-Type"].startswith("text/html")
    assert_human_page(html.body, 502, html=True, hidden=(str(port), "127.0.0.1", "down.lan"))


async def test_upstream_slower_than_read_timeout_is_a_504(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    arrived = asyncio.Event()

    async def stuck(request: web.BaseRequest) -> web.StreamResponse:
        arrived.set()
        await gate.wait()  # released only at teardown: never within the read timeout
        return web.Response(text="too late")

    up = await backend(stuck)
    p = await proxy(make_config(site("slow", ["slow.lan"], [up.url], read_timeout="200ms")))

    got = await fetch(session, p, host="slow.lan", headers={"Accept": "text/html"})

    assert arrived.is_set()
    assert got.status == 504
    assert_human_page(got.body, 504, html=True)


async def answer_partly(chunked: bool, length: int = 1_000_000) -> RawCallback:
    async def callback(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 100 + b"\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length + b"x" * 100)
        await writer.drain()
        writer.close()  # dies before the body is complete

    return callback


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_upstream_dying_mid_response_truncates_the_client_response(
    proxy: StartProxy, raw_backend: StartRawBackend, echo: Backend, session: aiohttp.ClientSession, chunked: bool
) -> None:
    up = await raw_backend(await answer_partly(chunked))
    p = await proxy(make_config(site("dies", ["dies.lan"], [up.url]), site("ok", ["ok.lan"], [echo.url])))

    async with session.get(p.url, headers={"Host": "dies.lan"}) as resp:
        assert resp.status == 200  # the status line had gone out already
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()

    assert (await fetch(session, p, host="ok.lan")).status == 200


async def test_upstream_dying_in_a_small_body_is_a_clean_502(
    proxy: StartProxy, raw_backend: StartRawBackend, echo: Backend, session: aiohttp.ClientSession
) -> None:
    """A small body of known length is read whole before anything is sent: no truncated 200."""
    up = await raw_backend(await answer_partly(False, length=1000))
    p = await proxy(make_config(site("dies", ["dies.lan"], [up.url]), site("ok", ["ok.lan"], [echo.url])))

    got = await fetch(session, p, host="dies.lan")
    assert got.status == 502
    assert_human_page(got.body, 502, html=False)
    assert (await fetch(session, p, host="ok.lan")).status == 200


def stalling_after(length: int, gate: asyncio.Event) -> Handler:
    """A backend that promises `length` bytes, sends 100 and then waits past any read timeout."""

    async def stalls(request: web.BaseRequest) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = length
        await resp.prepare(request)
        await resp.write(b"x" * 100)
        await gate.wait()  # opened only at teardown
        return resp

    return stalls


async def test_upstream_stalling_in_a_small_body_is_a_504(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    """A small body is read whole before anything is sent, so a stall is still a clean 504."""
    up = await backend(stalling_after(1000, gate))
    p = await proxy(make_config(site("stall", ["stall.lan"], [up.url], read_timeout="200ms")))
    assert (await fetch(session, p, host="stall.lan")).status == 504


async def test_upstream_stalling_mid_response_cuts_the_client_off(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    up = await backend(stalling_after(1_000_000, gate))  # large: streamed, the status line goes out first
    p = await proxy(make_config(site("stall", ["stall.lan"], [up.url], read_timeout="200ms")))

    async with session.get(p.url, headers={"Host": "stall.lan"}) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_error_pages_are_not_cached(proxy: StartProxy, session: aiohttp.ClientSession) -> None:
    p = await proxy(make_config(site("down", ["down.lan"], [f"http://127.0.0.1:{closed_port()}"])))

    for host, status in (("down.lan", 502), ("nowhere.lan", 404)):
        got = await fetch(session, p, host=host)
        assert got.status == status
        assert got.headers["Cache-Control"] == "no-store"


async def test_server_header_is_added_only_when_the_upstream_has_none(
    proxy: StartProxy, raw_backend: StartRawBackend, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    async def bare(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def branded(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok", headers={"Server": "Plex Media Server"})

    anonymous, named = await raw_backend(bare), await backend(branded)
    p = await proxy(make_config(site("a", ["a.lan"], [anonymous.url]), site("b", ["b.lan"], [named.url])))

    assert (await fetch(session, p, host="a.lan")).headers.getall("Server") == ["homeproxy"]
    assert (await fetch(session, p, host="b.lan")).headers.getall("Server") == ["Plex Media Server"]


@pytest.mark.parametrize(
    "reply",
    [b"", b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 abc Nope\r\n\r\n", b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n"],
    ids=["closes-silently", "not-http", "bad-status", "bad-header"],
)
async def test_upstream_speaking_nonsense_is_a_502(
    proxy: StartProxy, raw_backend: StartRawBackend, session: aiohttp.ClientSession, reply: bytes
) -> None:
    async def callback(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    up = await raw_backend(callback)
    p = await proxy(make_config(site("odd", ["odd.lan"], [up.url])))

    got = await fetch(session, p, host="odd.lan")

    assert got.status == 502
    assert_human_page(got.body, 502, html=False, hidden=(str(up.port),))


async def test_next_upstream_is_used_when_one_refuses(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("pair", ["pair.lan"], [f"http://127.0.0.1:{closed_port()}", echo.url])))

    for i in range(4):  # round robin starts on each upstream in turn; every request still lands
        got = await fetch(session, p, f"/{i}", host="pair.lan", method="POST", data=f"body {i}".encode())
        assert (got.seen.path, got.seen.body) == (f"/{i}", f"body {i}")


def self_signed_context(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (trusted by nobody)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def test_untrusted_https_upstream_is_a_502_at_once(
    proxy: StartProxy, named_echo: NamedEcho, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    runner = web.ServerRunner(web.Server(echo_handler("tls")), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed_context(tmp_path))
    await tls.start()
    plain = await named_echo("plain")
    try:
        p = await proxy(make_config(site("s", ["s.lan"], [f"https://127.0.0.1:{tls.port}", plain.url])))
        events = record(p)

        first = await fetch(session, p, "/1", host="s.lan")
        second = await fetch(session, p, "/2", host="s.lan")  # round robin: the next upstream's turn

        # A certificate error is not a refused connection: no silent failover to the next upstream.
        assert first.status == 502
        assert_human_page(first.body, 502, html=False, hidden=(str(tls.port),))
        assert second.seen.name == "plain"
        bad, _ = await events.wait(2)
        assert bad.upstream == f"https://127.0.0.1:{tls.port}"
        assert bad.error.startswith(UPSTREAM_CERT_REFUSED)
        assert "verify_upstream = false" in bad.error
    finally:
        await runner.cleanup()


async def test_websocket_to_an_unreachable_upstream_is_a_502(proxy: StartProxy, session: aiohttp.ClientSession) -> None:
    p = await proxy(make_config(site("down", ["down.lan"], [f"http://127.0.0.1:{closed_port()}"])))

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(p.url, headers={"Host": "down.lan"})

    assert refused.value.status == 502


async def test_websocket_refused_by_the_upstream_passes_its_status(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession
) -> None:
    async def forbidden(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=403, text="no websockets for you")

    up = await backend(forbidden)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url])))

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(p.url, headers={"Host": "ws.lan"})

    assert refused.value.status == 403


async def test_websocket_handshake_that_never_finishes_is_a_504(
    proxy: StartProxy, backend: StartBackend, session: aiohttp.ClientSession, gate: asyncio.Event
) -> None:
    async def stuck(request: web.BaseRequest) -> web.StreamResponse:
        await gate.wait()
        return web.Response()

    up = await backend(stuck)
    p = await proxy(make_config(site("ws", ["ws.lan"], [up.url], connect_timeout="100ms", read_timeout="100ms")))

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(p.url, headers={"Host": "ws.lan"})

    assert refused.value.status == 504


MALFORMED = {
    "garbage-request-line": b"THIS IS NOT HTTP AT ALL\r\n\r\n",
    "tls-hello-on-http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n",
    "space-in-header-name": b"GET / HTTP/1.1\r\nHost: ok.lan\r\nBad Header: x\r\n\r\n",
    "content-length-and-chunked": (
        b"POST / HTTP/1.1\r\nHost: ok.lan\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two-content-lengths": b"POST / HTTP/1.1\r\nHost: ok.lan\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    "bad-content-length": b"POST / HTTP/1.1\r\nHost: ok.lan\r\nContent-Length: 5x\r\n\r\nhello",
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: ok.lan\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: ok.lan\nX-A: 1\n\n",
    "mixed-lf-crlf": b"GET / HTTP/1.1\r\nHost: ok.lan\nX-A: 1\r\n\n\r\n",
    "bare-cr": b"GET / HTTP/1.1\rHost: ok.lan\r\n\r\n",
    "non-ascii-in-target": b"GET /caf\xe9 HTTP/1.1\r\nHost: ok.lan\r\n\r\n",
    "version-garbage": b"GET / HTTP/9.Z\r\nHost: ok.lan\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_request_is_a_400_and_the_engine_keeps_serving(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession, request_bytes: bytes
) -> None:
    p = await proxy(make_config(site("ok", ["ok.lan"], [echo.url])))

    resp = await raw_request(p.port, request_bytes)

    assert resp.status == 400
    assert b"Traceback" not in resp.body
    assert (await fetch(session, p, host="ok.lan")).status == 200


async def test_silent_and_half_finished_clients_do_not_block_others(
    proxy: StartProxy, echo: Backend, session: aiohttp.ClientSession
) -> None:
    p = await proxy(make_config(site("ok", ["ok.lan"], [echo.url])))

    _, silent = await asyncio.open_connection("127.0.0.1", p.port)  # connects and says nothing
    _, half = await asyncio.open_connection("127.0.0.1", p.port)
    half.write(b"POST /upload HTTP/1.1\r\nHost: ok.lan\r\nContent-Le")  # then goes away
    await half.drain()
    half.close()
    _, body_short = await asyncio.open_connection("127.0.0.1", p.port)
    body_short.write(b"POST /upload HTTP/1.1\r\nHost: ok.lan\r\nContent-Length: 100\r\n\r\nonly a bit")
    await body_short.drain()
    body_short.close()  # the body never completes
    try:
        for i in range(3):
            got = await fetch(session, p, f"/after/{i}", host="ok.lan")
            assert got.seen.path == f"/after/{i}"
    finally:
        silent.close()


async def test_malformed_request_gets_homeproxys_page_and_an_event(proxy: StartProxy) -> None:
    p = await proxy(make_config())
    events = record(p)

    resp = await raw_request(p.port, b"GET /secret-token-xyz HTTP/1.1\r\nBad Header: x\r\n\r\n")

    assert resp.status == 400
    assert b"secret-token-xyz" not in resp.body and b"Bad Header" not in resp.body  # nothing echoed
    assert b"could not be understood" in resp.body
    (ev,) = await events.wait(1)
    assert (ev.status, ev.site, ev.method, ev.path, ev.upstream) == (400, "", "", "", "")
    assert ev.client == "127.0.0.1"
    assert ev.error.startswith("malformed request: ")
