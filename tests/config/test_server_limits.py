"""The `[server]` limits on clients: sizes, timeouts and connection caps, as the loader reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeproxy.config import ConfigInvalid, ServerSettings
from homeproxy.config.load import parse_config
from homeproxy.config.store import ConfigStore

FILE = "/srv/homeproxy/config.toml"


def test_defaults_are_nginx_like() -> None:
    server = parse_config("", FILE).server
    assert (server.max_request_line, server.max_header_size, server.max_headers) == (8190, 64 * 1024, 200)
    assert (server.client_header_timeout, server.client_body_timeout, server.send_timeout) == (60.0, 60.0, 60.0)
    assert server.keepalive_timeout == 75.0
    assert (server.max_connections, server.max_connections_per_ip) == (4096, 256)


def test_values_take_sizes_durations_and_counts() -> None:
    text = """\
[server]
max_request_line = "16KiB"
max_header_size = 131072
max_headers = 0
client_header_timeout = "10s"
client_body_timeout = "1m"
send_timeout = 30
keepalive_timeout = "500ms"
max_connections = 0
max_connections_per_ip = 32
"""
    assert parse_config(text, FILE).server == ServerSettings(
        max_request_line=16 * 1024,
        max_header_size=131072,
        max_headers=0,
        client_header_timeout=10.0,
        client_body_timeout=60.0,
        send_timeout=30.0,
        keepalive_timeout=0.5,
        max_connections=0,
        max_connections_per_ip=32,
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('max_request_line = "big"', "expected a size"),
        ("max_header_size = 0", "expected a size"),
        ("max_headers = -1", "expected a whole number >= 0"),
        ("client_header_timeout = 0", "expected a duration above zero"),
        ('client_body_timeout = "forever"', "expected a duration"),
        ("send_timeout = -5", "expected a duration above zero"),
        ("keepalive_timeout = true", "expected a duration"),
        ('max_connections = "many"', "expected a whole number >= 0"),
        ("max_connections_per_ip = 1.5", "expected a whole number >= 0"),
    ],
)
def test_bad_values_are_errors_with_their_key_and_line(line: str, expected: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(f"[server]\nhttp_port = 8080\n{line}\n", FILE)
    [error] = info.value.errors
    assert (error.line, error.key) == (3, f"server.{line.split(' = ')[0]}")
    assert error.message.startswith(expected), error.message


def test_a_limit_set_through_the_store_is_saved_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# my proxy\n[server]\nhttp_port = 8080 # the LAN port\n", encoding="utf-8")
    store = ConfigStore(path)
    store.load()

    store.set_option("server", "max_connections_per_ip", 64)

    text = path.read_text(encoding="utf-8")
    assert "# the LAN port" in text
    assert parse_config(text, FILE).server.max_connections_per_ip == 64
