"""Where a site's requests can go: the client every site forwards through (the pool and the
health board), and `mdns://` upstreams, looked up per request."""

from __future__ import annotations

import time
from collections.abc import Callable

from yarl import URL

from homeproxy.discovery.service import parse_mdns_ref
from homeproxy.engine.events import Event
from homeproxy.engine.h1.pool import Pool
from homeproxy.engine.health import HealthBoard


class UpstreamClient:
    """What every site forwards through; lives on the engine's loop: the HTTP/1.1 pool.
    (Forward auth has its own aiohttp client, made only when a site uses it.)"""

    def __init__(self, publish: Callable[[Event], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.pool = Pool()
        self.health = HealthBoard(self.pool, publish or (lambda event: None), clock)

    async def open(self) -> None:
        self.pool.start()

    async def close(self) -> None:
        await self.health.close()
        await self.pool.close()


Resolver = Callable[[str], str | None]
"""Maps an `mdns://` upstream to the base URL where its service is now (`"http://10.0.0.5:32400"`),
or None while the service is not on the network. Discovery provides it; the engine only calls it."""


def no_resolver(ref: str) -> str | None:
    return None


class MdnsUpstream:
    """An `mdns://` upstream: looked up in the resolver for each request, so the site follows
    the device when its address or port changes (a new DHCP lease) without a config change."""

    __slots__ = ("_resolver", "_urls", "path", "ref")

    def __init__(self, ref: str, resolver: Resolver) -> None:
        self.ref = ref
        self.path = parse_mdns_ref(ref).path
        self._resolver = resolver
        self._urls: dict[str, URL] = {}

    def resolve(self) -> URL | None:
        base = self._resolver(self.ref)
        if base is None:
            return None
        url = self._urls.get(base)
        if url is None:
            if len(self._urls) > 16:
                self._urls.clear()
            url = self._urls[base] = URL(base + self.path)
        return url

    def __str__(self) -> str:
        return self.ref
