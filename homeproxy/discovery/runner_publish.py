"""Handing the `Publisher` new names and addresses: a worker on the discovery loop applies the latest."""

from __future__ import annotations

import asyncio
import logging

from homeproxy.discovery.publish import Publisher, PublishSpec

log = logging.getLogger("homeproxy.discovery.runner")  # one logger name for the whole runner


class _PublishHandoff:
    """The `Discovery` part that feeds its publisher; probing takes a while and must hold up nothing else."""

    _publisher: Publisher | None
    _pub_wanted: dict[str, PublishSpec] | None
    _pub_addresses: list[str] | None
    _pub_dirty_names: bool
    _pub_dirty_addresses: bool
    _pub_wake: asyncio.Event | None

    def _want_published(
        self, *, wanted: dict[str, PublishSpec] | None = None, addresses: list[str] | None = None
    ) -> None:
        """Hand the publisher new names or addresses; its worker applies the latest (probing takes
        a while, and must not hold up browsing or `start`)."""
        changed = False
        if wanted is not None and wanted != self._pub_wanted:
            self._pub_wanted = wanted
            self._pub_dirty_names = True
            changed = True
        if addresses is not None and addresses != self._pub_addresses:
            self._pub_addresses = addresses
            self._pub_dirty_addresses = True
            changed = True
        if changed and self._pub_wake is not None:
            self._pub_wake.set()

    async def _publish_worker(self) -> None:
        assert self._pub_wake is not None
        wake = self._pub_wake
        while True:
            await wake.wait()
            wake.clear()
            publisher = self._publisher
            if publisher is None:
                return
            try:
                if self._pub_dirty_addresses and self._pub_addresses is not None:
                    self._pub_dirty_addresses = False
                    await publisher.set_addresses(self._pub_addresses)
                if self._pub_dirty_names and self._pub_wanted is not None:
                    self._pub_dirty_names = False
                    await publisher.apply(self._pub_wanted)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mDNS: announcing names failed")
