"""Access log formats and per-site logging: the combined format's line (for a real request through a
real `Runtime`, and for events that lack fields), `access_log = false` on one site, a live switch
of format, and the config's errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import tomlkit

from homeproxy.config import ConfigInvalid, ConfigStore, parse_config
from homeproxy.engine import AccessLog
from homeproxy.engine.accesslog import combined_line, json_line
from homeproxy.engine.events import RequestCompleted
from homeproxy.runtime import Runtime
from tests.engine.conftest import Backend
from tests.engine.test_accesslog import event
from tests.waiting import wait_for

FILE = "f.toml"
StartRuntime = Callable[..., Awaitable[Runtime]]
COMBINED = re.compile(
    r"^(?P<client>\S+) - (?P<user>\S+) \[(?P<time>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[StartRuntime]:
    """Factory: a real `Runtime` on 127.0.0.1:0 with `sites` and `[logging]` options."""
    started: list[Runtime] = []

    async def start(*sites: dict[str, object], **logging: object) -> Runtime:
        doc = {
            "server": {"listen": ["127.0.0.1"], "http_port": 0, "drain_timeout": "2s"},
            "logging": logging,
            "sites": list(sites),
        }
        path = tmp_path / "config.toml"
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
        rt = Runtime(path, log_dir=tmp_path / "log", data_dir=tmp_path / "data", discovery=False)
        started.append(rt)
        await asyncio.to_thread(rt.start, watch=False)
        return rt

    yield start
    for rt in started:
        await asyncio.to_thread(rt.stop)


def site(name: str, host: str, upstream: str, **options: object) -> dict[str, object]:
    return {"name": name, "hosts": [host], "upstreams": [upstream], **options}


async def get(rt: Runtime, path: str, host: str, **headers: str) -> bytes:
    assert rt.engine is not None
    url = f"http://127.0.0.1:{rt.engine.addresses[0][1]}{path}"
    async with aiohttp.ClientSession() as s, s.get(url, headers={"Host": host, **headers}) as r:
        return await r.read()


async def logged(rt: Runtime, count: int) -> list[str]:
    """The access log's lines once it holds `count` of them."""
    path = rt.access_log.path

    def lines() -> list[str]:
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    await wait_for(lambda: len(lines()) >= count, description=f"{count} access log lines")
    return lines()


# --- a real request ---------------------------------------------------------------------


async def test_combined_line_for_a_real_request(runtime: StartRuntime, echo: Backend) -> None:
    rt = await runtime(site("app", "app.lan", echo.url), access_log_format="combined")
    body = await get(rt, "/a/b?q=1", "app.lan", Referer="http://home.lan/", **{"User-Agent": 'probe/1.0 "x"'})

    (line,) = await logged(rt, 1)

    m = COMBINED.match(line)
    assert m, line
    assert m.group("client", "user", "request", "status", "bytes") == (
        "127.0.0.1",
        "-",
        "GET /a/b?q=1 -",
        "200",
        str(len(body)),
    )
    assert m.group("referer", "agent") == ("http://home.lan/", r"probe/1.0 \x22x\x22")


async def test_json_stays_the_default(runtime: StartRuntime, echo: Backend) -> None:
    rt = await runtime(site("app", "app.lan", echo.url))
    await get(rt, "/j", "app.lan")

    (line,) = await logged(rt, 1)

    record = json.loads(line)
    assert (record["site"], record["path"], record["status"]) == ("app", "/j", 200)


async def test_a_site_with_access_log_false_is_left_out(runtime: StartRuntime, echo: Backend) -> None:
    rt = await runtime(site("quiet", "quiet.lan", echo.url, access_log=False), site("loud", "loud.lan", echo.url))
    await get(rt, "/health", "quiet.lan")
    await get(rt, "/page", "loud.lan")  # after the quiet one: once it is written, the quiet one was handled
    await get(rt, "/x", "nowhere.lan")  # unknown hosts have no site to turn off: logged

    lines = await logged(rt, 2)

    assert [(r["site"], r["path"]) for r in map(json.loads, lines)] == [("loud", "/page"), ("", "/x")]
    # The stats (and the metrics) still count the quiet site.
    await wait_for(lambda: rt.stats.site("quiet").requests == 1, description="the quiet site's request counted")


async def test_format_and_per_site_switch_change_live(runtime: StartRuntime, echo: Backend) -> None:
    rt = await runtime(site("app", "app.lan", echo.url))
    await get(rt, "/one", "app.lan")
    await logged(rt, 1)

    await asyncio.to_thread(rt.store.set_option, "logging", "access_log_format", "combined")
    await get(rt, "/two", "app.lan", **{"User-Agent": "after/2"})
    lines = await logged(rt, 2)
    m = COMBINED.match(lines[1])
    assert m and m.group("request", "agent") == ("GET /two -", "after/2"), lines[1]

    await asyncio.to_thread(rt.store.set_site_option, "app", "access_log", False)
    assert "access_log = false" in rt.config_path.read_text(encoding="utf-8")
    await asyncio.to_thread(rt.store.set_option, "logging", "access_log_format", "json")
    await asyncio.to_thread(rt.store.set_site_option, "app", "access_log", True)
    await get(rt, "/three", "app.lan")
    lines = await logged(rt, 3)
    assert json.loads(lines[2])["path"] == "/three"


# --- the line itself --------------------------------------------------------------------


def test_combined_line_of_an_event() -> None:
    ev = event(0, request_headers=(("user-agent", "curl/8.5"), ("Referer", "")))
    assert combined_line(ev) == (
        '192.168.1.57 - - [14/Nov/2023:22:13:20 +0000] "GET /api/0?x=1 -" 200 18342 "-" "curl/8.5"'
    )


def test_combined_line_escapes_what_could_forge_a_line_or_a_field() -> None:
    ev = event(0, path='/a"b\\c\nd', request_headers=(("User-Agent", "x\r\ny\x7f"),))
    line = combined_line(ev)
    assert "\n" not in line and "\r" not in line
    assert '"GET /a\\x22b\\x5Cc\\x0Ad -"' in line
    assert line.endswith('"-" "x\\x0D\\x0Ay\\x7F"')


def test_combined_line_of_a_malformed_request_and_a_missing_client() -> None:
    ev = event(0, method="", path="", status=400, bytes_out=0, client="")
    assert combined_line(ev) == '- - - [14/Nov/2023:22:13:20 +0000] "-" 400 0 "-" "-"'


def test_access_log_writes_the_configured_format_and_skips_sites(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.log")
    log.configure(
        enabled=True, max_bytes=log.max_bytes, keep_files=1, format="combined", skip_sites=frozenset({"quiet"})
    )
    log.write([event(0), dataclasses.replace(event(1), site="quiet")])
    log.write([dataclasses.replace(event(2), site="quiet")])  # nothing to write: no empty line either
    log.close()
    assert log.path.read_text(encoding="utf-8").splitlines() == [combined_line(event(0))]
    with pytest.raises(ValueError, match="unknown access log format 'clf'"):
        log.configure(enabled=True, max_bytes=1, keep_files=1, format="clf")


# --- the config -------------------------------------------------------------------------


SITE = '[[sites]]\nname = "a"\nhosts = ["a.lan"]\nupstreams = ["http://x"]\n'


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (
            '[logging]\naccess_log_format = "clf"\n',
            2,
            "logging.access_log_format",
            'expected one of "json", "combined", got "clf"',
        ),
        ("[logging]\naccess_log_format = 1\n", 2, "logging.access_log_format", "expected a string, got 1"),
        (
            '[logging]\naccess_log_fromat = "json"\n',
            2,
            "logging.access_log_fromat",
            'did you mean "access_log_format"?',
        ),
        (SITE + 'access_log = "no"\n', 5, "sites[0].access_log", 'expected true or false, got "no"'),
        (SITE + "acces_log = false\n", 5, "sites[0].acces_log", 'did you mean "access_log"?'),
    ],
)
def test_config_errors_name_file_line_and_key(text: str, line: int, key: str, message: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(text, FILE)
    (err,) = info.value.errors
    assert (err.file, err.line, err.key) == (FILE, line, key)
    assert message in err.message


def test_config_values() -> None:
    config = parse_config('[logging]\naccess_log_format = "Combined"\n' + SITE + "access_log = false\n", FILE)
    assert (config.logging.access_log_format, config.sites[0].access_log) == ("combined", False)
    default = parse_config(SITE, FILE)
    assert (default.logging.access_log_format, default.sites[0].access_log) == ("json", True)


def test_the_store_keeps_comments_when_setting_the_format(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[logging]\n# how lines look\naccess_log = true  # on\n", encoding="utf-8")
    store = ConfigStore(path)
    store.load(create=False)

    store.set_option("logging", "access_log_format", "combined")

    text = path.read_text(encoding="utf-8")
    assert "# how lines look" in text and "# on" in text
    assert parse_config(text, FILE).logging.access_log_format == "combined"


def test_json_lines_parse_back_to_the_event_whatever_the_text() -> None:
    """json_line writes JSON itself (field by field): every line must parse back to the event's
    values, quotes, backslashes, control characters, non-ASCII and lone surrogates included."""
    rng = random.Random(12)
    alphabet = 'ab"\\\x00\x1f\x7f\n\ré€\U0001f600\udcff /?=&{}:,'

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))

    for _ in range(2000):
        ev = RequestCompleted(
            time=rng.uniform(1e9, 2e9),
            client=text(),
            site=text(),
            host=text(),
            method=text(),
            path=text(),
            status=rng.randint(0, 999),
            bytes_in=rng.randint(0, 10**9),
            bytes_out=rng.randint(0, 10**12),
            duration=rng.random() * rng.choice([1e-6, 1, 100]),
            upstream=text(),
            cache=text(),
            error=text(),
        )
        line = json_line(ev)
        assert "\n" not in line and "\r" not in line  # one line per request, whatever it carried
        record = json.loads(line)
        strings = ("client", "site", "host", "method", "path", "upstream", "cache", "error")
        assert {k: record[k] for k in strings} == {k: getattr(ev, k) for k in strings}
        assert (record["status"], record["bytes_in"], record["bytes_out"]) == (ev.status, ev.bytes_in, ev.bytes_out)
        assert record["duration_ms"] == round(ev.duration * 1000, 3)
        # The time to the millisecond, exactly as datetime rounds and writes it.
        assert record["time"] == datetime.fromtimestamp(ev.time, UTC).isoformat(timespec="milliseconds")
