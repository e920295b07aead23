"""The demo's config file: one site per sample backend, 127.0.0.1 only, and its names and password."""

from __future__ import annotations

#: The Basic auth user of the demo's "grafana" site, and its password.
USER, PASSWORD = "demo", "demo"
#: The demo's sites, one per sample backend (`backends.BACKENDS`), in the config's order.
SITES = ("homeassistant", "plex", "nextcloud", "grafana")


def host_of(site: str) -> str:
    """The demo's host name for `site`: `*.localhost` names reach loopback in browsers."""
    return f"{site}.localhost"


def demo_config(proxy_port: int, backend_ports: dict[str, int], password_hash: str) -> str:
    """The demo's config file: 127.0.0.1 only, one site per backend."""
    ha, plex, cloud, grafana = (backend_ports[s] for s in SITES)
    return f"""# homeproxy demo: a temporary config, removed when the demo ends.
# Everything listens on 127.0.0.1 only. Try it in a browser: *.localhost names reach this machine.

[server]
listen = ["127.0.0.1"]
http_port = {proxy_port}
https_port = 0
# The demo's traffic generator pretends to be several LAN clients (X-Forwarded-For);
# that is believed only from this machine.
trusted_proxies = ["127.0.0.1/32"]
drain_timeout = "2s"

[logging]
# In the demo's temporary directory.
access_log = true
max_bytes = "1MiB"
keep_files = 1

[[sites]]
name = "homeassistant"
hosts = ["{host_of("homeassistant")}", "ha.localhost"]
upstreams = ["http://127.0.0.1:{ha}"]
websockets = true

[[sites]]
name = "plex"
hosts = ["{host_of("plex")}"]
upstreams = ["http://127.0.0.1:{plex}"]
read_timeout = "30s"

[[sites]]
name = "nextcloud"
hosts = ["{host_of("nextcloud")}", "cloud.localhost"]
upstreams = ["http://127.0.0.1:{cloud}"]
cache = true
compression = true

# Basic auth: user "{USER}", password "{PASSWORD}".
[[sites]]
name = "grafana"
hosts = ["{host_of("grafana")}"]
upstreams = ["http://127.0.0.1:{grafana}"]
auth = {{ users = {{ {USER} = "{password_hash}" }} }}
"""
