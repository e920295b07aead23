"""The name-defence listener: another machine announcing a held name makes it probe again (RFC 6762 §9)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
from collections.abc import Callable

from zeroconf import RecordUpdate, RecordUpdateListener, Zeroconf
from zeroconf._dns import DNSAddress

from homeproxy.discovery.publish_names import _sorted_addresses
from homeproxy.discovery.publish_probe import _Registrations, _Tasks

log = logging.getLogger("homeproxy.discovery.publish")  # one logger name for the whole publisher

REPROBE_HOLDOFF = 1.0
"""Seconds between re-probes of one held name that other machines keep claiming (a bound on the
packets a flood of conflicting announcements can make us send; RFC 6762 §8.1 rate-limits too)."""

FLUSH_AGE = 1.1
"""RFC 6762 §10.2: a record with the cache-flush bit flushes only those received more than one
second before it, so a name kept after a stray claim is announced again no sooner than this."""

MAX_HEARD = 16
"""Most foreign addresses remembered per held name."""


class _ClaimWatch(RecordUpdateListener):
    """Hands every address record zeroconf receives to `heard(name, packed address)` (on its loop)."""

    def __init__(self, heard: Callable[[str, bytes], None]) -> None:
        super().__init__()
        self._heard = heard

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            # TTL 0 is a goodbye: giving the name up is no claim on it.
            if isinstance(record, DNSAddress) and record.ttl > 0:
                try:
                    self._heard(record.name, record.address)
                except Exception:  # a bug here must not break zeroconf's dispatch
                    log.exception("mDNS: checking %r for a name conflict failed", record)


class _Defence(_Registrations):
    """The publisher's part that listens for claims on its held names and defends them."""

    _watch: _ClaimWatch | None
    _defending: set[str]
    _claims: _Tasks
    _lock: asyncio.Lock
    _closed: bool

    def _watch_claims(self) -> None:
        """Start listening to the address records zeroconf receives (once)."""
        if self._watch is None and not self._closed:
            self._watch = _ClaimWatch(self._on_address)
            self._aiozc.zeroconf.async_add_listener(self._watch, None)

    def _on_address(self, name: str, packed: bytes) -> None:
        """An address record arrived: for a held name with an address not ours, defend the name."""
        host = name.lower().rstrip(".")
        if self._closed or host not in self._held:
            return
        try:
            address = str(ipaddress.ip_address(packed))
        except ValueError:
            return
        if address in self._ours:
            return  # our own announcement, echoed (or another responder on this machine)
        heard = self._heard.setdefault(host, {})
        heard.pop(address, None)
        heard[address] = asyncio.get_running_loop().time()
        while len(heard) > MAX_HEARD:
            del heard[next(iter(heard))]
        if host not in self._defending:
            self._defending.add(host)
            self._claims.spawn(self._defend(host), "homeproxy-mdns-defend")

    def _heard_since(self, host: str, since: float) -> tuple[str, ...]:
        heard = self._heard.get(host, {})
        return _sorted_addresses(a for a, when in heard.items() if when >= since)

    async def _defend(self, host: str) -> None:
        """Another machine announced `host`, which we hold: probe for it again (RFC 6762 §9). If the
        other machine answers, the name is its (withdrawn here: conflict); if not, we announce again."""
        loop = asyncio.get_running_loop()
        try:
            wait = self._last_defence.get(host, -math.inf) + REPROBE_HOLDOFF - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            async with self._lock:
                held = self._held.get(host)
                if held is None or self._closed:
                    return
                since = self._last_defence[host] = loop.time()
                claimed = ", ".join(self._heard.get(host, {})) or "another device"
                log.info("mDNS: %s announced %s, which homeproxy holds; probing for it again", claimed, host)
                self._set_state(
                    host,
                    "probing",
                    addresses=self._addresses,
                    detail=f"Another device ({claimed}) announced {host}: checking whether it still answers for it.",
                )
                # Only answers heard from now on count: the announcement itself may be stale or stray.
                holders = await self._probe(host + ".", lambda: self._heard_since(host, since))
                if holders:
                    await self._withdraw([host], keep_state=True)
                    self._conflict(host, holders)
                    return
                log.info("mDNS: nobody else answered for %s; homeproxy keeps it and announces it again", host)
                last_heard = max(self._heard.get(host, {}).values(), default=-math.inf)
                if (wait := last_heard + FLUSH_AGE - loop.time()) > 0:
                    await asyncio.sleep(wait)
                for info in (held.name_info, held.advert):
                    if info is not None:
                        # Our records carry the cache-flush bit: peers drop the other one (§10.2).
                        self._announce(info, await self._aiozc.async_update_service(info))
                self._announced(host)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("mDNS: defending %s failed: %s", host, e)
        finally:
            self._defending.discard(host)
