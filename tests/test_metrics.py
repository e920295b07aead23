"""Prometheus metrics: a real `Runtime` with a real backend, scraped over HTTP and parsed with
`prometheus_client`'s own parser; the admin listener's binding, re-binding and bind failures; the
`[metrics]` config."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import tomlkit
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from homeproxy.config import ConfigInvalid, parse_config
from homeproxy.runtime import Runtime
from tests.conftest import free_port

FILE = "m.toml"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
StartRuntime = Callable[..., Awaitable[Runtime]]


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    """A real upstream on 127.0.0.1:0: `/missing` is a 404, `/cached` is cacheable, anything else
    answers "hello" plus the size of the request body it read."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/missing":
            return web.Response(status=404, text="no")
        if request.path == "/cached":
            return web.Response(text="cached body", headers={"Cache-Control": "max-age=600"})
        return web.Response(text=f"hello {len(body)}")

    runner = web.ServerRunner(web.Server(handle), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site.port}"
    await runner.cleanup()


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[StartRuntime]:
    """Factory: write a config (proxy and metrics on 127.0.0.1, port 0) and start a real `Runtime`."""
    started: list[Runtime] = []

    async def start(*sites: dict[str, object], metrics: str | None = "127.0.0.1:0", **server: object) -> Runtime:
        doc: dict[str, object] = {
            "server": {"listen": ["127.0.0.1"], "http_port": 0, "https_port": 0, "drain_timeout": "2s", **server},
            "sites": list(sites),
        }
        if metrics is not None:
            doc["metrics"] = {"listen": metrics}
        path = tmp_path / "config.toml"
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
        rt = Runtime(path, log_dir=tmp_path / "log", data_dir=tmp_path / "data", discovery=False)
        started.append(rt)
        await asyncio.to_thread(rt.start, watch=False)
        assert rt.engine is not None and rt.engine.listen_errors == ()
        return rt

    yield start
    for rt in started:
        await asyncio.to_thread(rt.stop)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


@pytest.fixture
def busy_port() -> Iterator[tuple[socket.socket, int]]:
    """A loopback port that something else is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s, int(s.getsockname()[1])


def site(name: str, hosts: list[str], upstream: str, **options: object) -> dict[str, object]:
    return {"name": name, "hosts": hosts, "upstreams": [upstream], **options}


def proxy_url(rt: Runtime, path: str = "/") -> str:
    assert rt.engine is not None
    return f"http://127.0.0.1:{rt.engine.addresses[0][1]}{path}"


def metrics_url(rt: Runtime) -> str:
    address = rt.metrics_server.address
    assert address is not None, rt.metrics_server.error
    return f"http://127.0.0.1:{address[1]}/metrics"


async def get(
    session: aiohttp.ClientSession, rt: Runtime, path: str, host: str, *, method: str = "GET", data: bytes = b""
) -> bytes:
    async with session.request(method, proxy_url(rt, path), headers={"Host": host}, data=data or None) as r:
        return await r.read()


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    async with session.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape_until(
    session: aiohttp.ClientSession, rt: Runtime, name: str, labels: dict[str, str], want: float
) -> Samples:
    """Scrape until a counter reaches `want` (the metrics thread counts in batches)."""
    seen: list[Samples] = []

    async def reached() -> bool:
        seen.append(await scrape(session, metrics_url(rt)))
        return value(seen[-1], name, **labels) == want

    deadline = asyncio.get_running_loop().time() + 10
    while not await reached():
        assert asyncio.get_running_loop().time() < deadline, f"{name}{labels} is {value(seen[-1], name, **labels)}"
        await asyncio.sleep(0.05)
    return seen[-1]


async def refused(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(url):
            return False
    except aiohttp.ClientConnectionError:
        return True


# --- what is counted --------------------------------------------------------------------


async def test_requests_latency_bytes_and_cache_after_real_requests(
    runtime: StartRuntime, backend: str, session: aiohttp.ClientSession
) -> None:
    rt = await runtime(
        site("app", ["app.lan"], backend),
        site("idle", ["idle.lan"], backend),
        site("cached", ["cached.lan"], backend, cache=True),
    )
    bodies = [await get(session, rt, f"/page/{n}", "app.lan") for n in range(3)]
    bodies.append(await get(session, rt, "/upload", "app.lan", method="POST", data=b"12345"))
    bodies.append(await get(session, rt, "/missing", "app.lan"))
    for _ in range(2):
        await get(session, rt, "/x", "nowhere.lan")  # no site: the "other" bucket
    for _ in range(3):
        assert await get(session, rt, "/cached", "cached.lan") == b"cached body"

    await scrape_until(session, rt, "homeproxy_requests_total", {"site": "app", "status_class": "2xx"}, 4)
    samples = await scrape_until(session, rt, "homeproxy_requests_total", {"site": "cached", "status_class": "2xx"}, 3)

    def v(name: str, **labels: str) -> float | None:
        return value(samples, name, **labels)

    assert v("homeproxy_requests_total", site="app", status_class="4xx") == 1
    assert v("homeproxy_requests_total", site="app", status_class="5xx") == 0
    assert v("homeproxy_requests_total", site="other", status_class="4xx") == 2
    assert v("homeproxy_requests_total", site="idle", status_class="2xx") == 0  # configured: present at zero
    assert v("homeproxy_request_duration_seconds_count", site="app") == 5
    assert v("homeproxy_request_duration_seconds_bucket", site="app", le="+Inf") == 5
    assert v("homeproxy_request_duration_seconds_count", site="other") == 2
    assert v("homeproxy_request_body_bytes_total", site="app") == 5
    assert v("homeproxy_response_body_bytes_total", site="app") == sum(len(b) for b in bodies)
    assert v("homeproxy_cache_misses_total", site="cached") == 1
    assert v("homeproxy_cache_hits_total", site="cached") == 2
    assert v("homeproxy_cache_stale_total", site="cached") == 0
    assert v("homeproxy_cache_hits_total", site="app") is None  # no cache, no cache series
    assert v("homeproxy_metrics_events_dropped_total") == 0
    # Bounded cardinality: the only labels are site and status class (and the histogram's le), and
    # the configured upstream's address on the load gauges.
    sites = {dict(labels).get("site") for _, labels in samples if dict(labels).get("site")}
    assert sites == {"app", "idle", "cached", "other"}
    assert {k for _, labels in samples for k, _ in labels} <= {"site", "status_class", "le", "upstream"}
    upstreams = {dict(labels)["upstream"] for _, labels in samples if "upstream" in dict(labels)}
    assert upstreams == {backend}
    assert not [name for name, _ in samples if name.endswith("_created")]


async def test_connections_and_requests_in_flight_now(runtime: StartRuntime, session: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def slow(request: web.BaseRequest) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="done")

    runner = web.ServerRunner(web.Server(slow), handle_signals=False)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    upstream = f"http://127.0.0.1:{tcp.port}"
    try:
        rt = await runtime(site("slow", ["slow.lan"], upstream))
        waiting = asyncio.ensure_future(get(session, rt, "/wait", "slow.lan"))
        # The upstream's count goes up once its connection is made, a moment after the engine's.
        with_one = await scrape_until(session, rt, "homeproxy_upstream_requests_in_flight", {"upstream": upstream}, 1)
        assert value(with_one, "homeproxy_requests_in_flight") == 1
        assert (value(with_one, "homeproxy_client_connections") or 0) >= 1

        release.set()
        assert await waiting == b"done"
        after = await scrape_until(session, rt, "homeproxy_requests_in_flight", {}, 0)
        assert value(after, "homeproxy_upstream_requests_in_flight", upstream=upstream) == 0
        assert value(after, "homeproxy_upstream_idle_connections", upstream=upstream) == 1  # kept for the next one
    finally:
        await runner.cleanup()


async def test_upstream_up_follows_the_health_checks(
    runtime: StartRuntime, backend: str, session: aiohttp.ClientSession, busy_port: tuple[socket.socket, int]
) -> None:
    # A port that takes connections and never answers: its checks time out.
    _, port = busy_port
    silent = f"http://127.0.0.1:{port}"
    health = {"path": "/", "interval": "0.2s", "timeout": "0.2s", "fails": 1, "passes": 1}
    rt = await runtime(site("pair", ["pair.lan"], backend, health=health) | {"upstreams": [backend, silent]})
    down = await scrape_until(session, rt, "homeproxy_upstream_up", {"site": "pair", "upstream": silent}, 0)
    assert value(down, "homeproxy_upstream_up", site="pair", upstream=backend) == 1


async def test_tls_certificate_expiry_per_site(
    runtime: StartRuntime, backend: str, session: aiohttp.ClientSession
) -> None:
    rt = await runtime(site("secure", ["secure.home.arpa"], backend, tls=True), site("plain", ["p.lan"], backend))
    assert rt.engine is not None
    (status,) = rt.engine.certificates()
    assert status.not_after is not None

    samples = await scrape(session, metrics_url(rt))

    expiry = [(dict(labels), v) for (name, labels), v in samples.items() if name.startswith("homeproxy_tls_cert")]
    assert expiry == [({"site": "secure"}, status.not_after.timestamp())]


async def test_openmetrics_when_the_scraper_asks(
    runtime: StartRuntime, backend: str, session: aiohttp.ClientSession
) -> None:
    rt = await runtime(site("app", ["app.lan"], backend))
    async with session.get(metrics_url(rt), headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await r.text()
    assert text.rstrip().endswith("# EOF")
    assert 'homeproxy_requests_total{site="app",status_class="2xx"} 0.0' in text


async def test_only_metrics_is_served(runtime: StartRuntime, backend: str, session: aiohttp.ClientSession) -> None:
    rt = await runtime(site("app", ["app.lan"], backend))
    async with session.get(metrics_url(rt).replace("/metrics", "/")) as r:
        assert r.status == 404


# --- the admin listener -----------------------------------------------------------------


async def test_off_by_default(runtime: StartRuntime, backend: str) -> None:
    rt = await runtime(site("app", ["app.lan"], backend), metrics=None)
    assert rt.store.config.metrics.listen == ""
    assert rt.metrics_server.address is None and rt.metrics_server.error == ""
    assert [s.name for s in rt.bus._subs] == ["stats", "access-log"]  # the bus feeds no metrics thread


async def test_rebinds_on_a_live_change_and_keeps_counting(
    runtime: StartRuntime, backend: str, session: aiohttp.ClientSession
) -> None:
    rt = await runtime(site("app", ["app.lan"], backend))
    old = metrics_url(rt)
    await get(session, rt, "/", "app.lan")
    await scrape_until(session, rt, "homeproxy_requests_total", {"site": "app", "status_class": "2xx"}, 1)

    port = free_port()
    await asyncio.to_thread(rt.store.set_option, "metrics", "listen", f"127.0.0.1:{port}")

    assert rt.metrics_server.address == ("127.0.0.1", port)
    assert await refused(old)
    await get(session, rt, "/", "app.lan")
    await scrape_until(session, rt, "homeproxy_requests_total", {"site": "app", "status_class": "2xx"}, 2)

    await asyncio.to_thread(rt.store.set_option, "metrics", "listen", "")
    assert rt.metrics_server.address is None
    assert await refused(f"http://127.0.0.1:{port}/metrics")
    assert "metrics" not in [s.name for s in rt.bus._subs]


async def test_a_removed_site_loses_its_series_and_a_new_one_starts_at_zero(
    runtime: StartRuntime, backend: str, session: aiohttp.ClientSession
) -> None:
    rt = await runtime(site("keep", ["keep.lan"], backend), site("old", ["old.lan"], backend))
    await get(session, rt, "/", "old.lan")
    await scrape_until(session, rt, "homeproxy_requests_total", {"site": "old", "status_class": "2xx"}, 1)

    await asyncio.to_thread(rt.store.remove_site, "old")
    config = parse_config(tomlkit.dumps({"sites": [site("new", ["new.lan"], backend)]}))
    await asyncio.to_thread(rt.store.add_site, config.sites[0])

    samples = await scrape(session, metrics_url(rt))
    assert value(samples, "homeproxy_requests_total", site="old", status_class="2xx") is None
    assert value(samples, "homeproxy_requests_total", site="new", status_class="2xx") == 0


async def test_a_bind_failure_is_logged_and_retried_never_a_crash(
    runtime: StartRuntime,
    backend: str,
    session: aiohttp.ClientSession,
    busy_port: tuple[socket.socket, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder, port = busy_port
    with caplog.at_level(logging.ERROR, logger="homeproxy.metrics"):
        rt = await runtime(site("app", ["app.lan"], backend), metrics=f"127.0.0.1:{port}")

    assert rt.metrics_server.address is None
    assert rt.metrics_server.error == (
        f"metrics: cannot listen on 127.0.0.1:{port}: the port is in use (another program, or homeproxy "
        "itself); pick another [metrics] listen"
    )
    assert [r.getMessage() for r in caplog.records] == [f"{rt.metrics_server.error}; the proxy goes on without metrics"]
    assert await get(session, rt, "/", "app.lan") == b"hello 0"  # the proxy serves regardless

    holder.close()
    # The next apply tries the same address again, since it failed.
    await asyncio.to_thread(rt.store.set_option, "logging", "level", "warning")
    assert rt.metrics_server.address == ("127.0.0.1", port)
    await scrape_until(session, rt, "homeproxy_requests_total", {"site": "app", "status_class": "2xx"}, 1)


# --- the config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            'listen = "9180"',
            "metrics.listen",
            'expected "host:port" such as "127.0.0.1:9180" or "[::1]:9180", got "9180"',
        ),
        ('listen = "127.0.0.1:99999"', "metrics.listen", 'expected "host:port"'),
        ('listen = "::1:9180"', "metrics.listen", 'write an IPv6 address in brackets, such as "[::1]:9180"'),
        ("listen = 9180", "metrics.listen", "expected a string, got 9180"),
        ('lisen = "127.0.0.1:9180"', "metrics.lisen", 'unknown key "lisen"; did you mean "listen"?'),
        (
            'listen = "127.0.0.1:8080"',
            "metrics.listen",
            "port 8080 is the proxy's server.http_port; the metrics listener needs a port of its own",
        ),
    ],
)
def test_config_errors_name_file_line_and_key(text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(f"[server]\nhttp_port = 8080\n\n[metrics]\n{text}\n", FILE)
    (err,) = info.value.errors
    assert (err.file, err.line, err.key) == (FILE, 5, key)
    assert message in err.message


@pytest.mark.parametrize(("listen", "address"), [("127.0.0.1:9180", ("127.0.0.1", 9180)), ("[::1]:0", ("::1", 0))])
def test_config_accepts_host_and_port(listen: str, address: tuple[str, int]) -> None:
    metrics = parse_config(f'[metrics]\nlisten = "{listen}"\n', FILE).metrics
    assert (metrics.listen, metrics.address) == (listen, address)


def test_the_same_port_on_another_address_than_the_proxy_is_allowed() -> None:
    text = '[server]\nlisten = ["192.168.1.5"]\nhttp_port = 8080\n[metrics]\nlisten = "127.0.0.1:8080"\n'
    assert parse_config(text, FILE).metrics.address == ("127.0.0.1", 8080)


def test_empty_or_absent_is_off() -> None:
    assert parse_config("", FILE).metrics.address is None
    assert parse_config('[metrics]\nlisten = ""\n', FILE).metrics.address is None
