"""CONNECT, the forward proxy's method, to homeproxy, a reverse proxy: a 405, never a tunnel.

The real engine on loopback, raw sockets for the client, a `RecordingUpstream` behind a site whose
name the CONNECT's authority gives and which is also `[server] default_site`, so that a CONNECT
routed like any request would reach it. What must hold: the answer is homeproxy's own 405 page with
an `Allow` header, the connection closes after it, the bytes the client sends after the CONNECT's
head (a TLS ClientHello, a request of its own) go nowhere, and one `RequestCompleted` says why.
"""

from __future__ import annotations

import asyncio

from tests.engine.conftest import STEP_TIMEOUT, StartProxy, StartRawBackend, make_config, read_response, record, site
from tests.engine.recording import RecordingUpstream
from tests.engine.test_smuggling import still_serves, until_closed

#: What a client would put in the tunnel: a TLS record's first bytes, then a request of its own.
TUNNEL_BYTES = b"\x16\x03\x01\x00\x05hello" + b"GET /smuggled HTTP/1.1\r\nHost: s.lan\r\n\r\n"


async def test_connect_is_a_405_with_allow_and_never_a_tunnel(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    up = RecordingUpstream()
    p = await proxy(make_config(site("s", ["s.lan"], [(await raw_backend(up)).url]), default_site="s"))
    rec = record(p)

    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(b"CONNECT s.lan:443 HTTP/1.1\r\nHost: s.lan:443\r\n\r\n" + TUNNEL_BYTES)
        await writer.drain()
        resp = await read_response(reader)
        writer.write(TUNNEL_BYTES)  # more of the would-be tunnel, after the answer
        after = await until_closed(reader)
    finally:
        writer.close()

    assert resp.status == 405
    allowed = {m.strip() for m in (resp.get("Allow") or "").split(",")}
    assert {"GET", "HEAD", "POST"} <= allowed and "CONNECT" not in allowed
    assert resp.get("Server") == "homeproxy" and resp.get("Connection") == "close"
    assert b"405 Method Not Allowed" in resp.body
    assert after == b""  # closed, and nothing came back through a tunnel
    assert up.raw == b""  # nothing reached the site: neither the CONNECT nor what followed it
    [event] = await rec.wait(1)  # published before the page was written: one, and only one
    assert (event.status, event.site, event.upstream) == (405, "", "")
    assert "CONNECT" in event.error
    await still_serves(p, up)


async def test_connect_after_a_pipelined_request_is_refused_once_that_one_is_answered(
    proxy: StartProxy, raw_backend: StartRawBackend
) -> None:
    up = RecordingUpstream()
    p = await proxy(make_config(site("s", ["s.lan"], [(await raw_backend(up)).url]), default_site="s"))
    rec = record(p)

    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    try:
        writer.write(
            b"GET /first HTTP/1.1\r\nHost: s.lan\r\n\r\n"
            b"CONNECT s.lan:443 HTTP/1.1\r\nHost: s.lan:443\r\n\r\n" + TUNNEL_BYTES
        )
        await writer.drain()
        first = await read_response(reader)
        second = await read_response(reader)
        after = await until_closed(reader)
    finally:
        writer.close()

    assert (first.status, first.body) == (200, b"ok")
    assert second.status == 405 and second.get("Allow")
    assert after == b""
    assert [r.target for r in up.complete()] == ["/first"]
    # Both events are published before the 405's bytes are written: there is no third to wait for.
    events = await rec.wait(2)
    assert sorted(e.status for e in events) == [200, 405]
    assert "CONNECT" in next(e for e in events if e.status == 405).error


async def test_connect_in_any_target_form_is_a_405(proxy: StartProxy, raw_backend: StartRawBackend) -> None:
    """llhttp takes CONNECT with an origin-form, asterisk or absolute target too (RFC 9112 section
    3.2.3 allows only authority-form): each is the same 405, never routed."""
    up = RecordingUpstream()
    p = await proxy(make_config(site("s", ["s.lan"], [(await raw_backend(up)).url]), default_site="s"))

    for target in (b"s.lan:443", b"[::1]:443", b"s.lan", b"/", b"*", b"http://s.lan/"):
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        try:
            writer.write(b"CONNECT %s HTTP/1.1\r\nHost: s.lan\r\n\r\n" % target)
            await writer.drain()
            resp = await asyncio.wait_for(read_response(reader), STEP_TIMEOUT)
            assert await until_closed(reader) == b""
        finally:
            writer.close()
        assert resp.status == 405, target

    assert up.raw == b""
