"""Probing for a name (RFC 6762 §8.1) and registering, announcing and withdrawing (§10.1) its records."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from zeroconf import ServiceInfo, current_time_millis
from zeroconf._dns import DNSAddress, DNSQuestion
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.asyncio import AsyncZeroconf
from zeroconf.const import (
    _CLASS_IN,
    _CLASS_UNIQUE,
    _DNS_HOST_TTL,
    _FLAGS_AA,
    _FLAGS_QR_QUERY,
    _FLAGS_QR_RESPONSE,
    _TYPE_A,
    _TYPE_AAAA,
)

from homeproxy.discovery.events import NameWithdrawn
from homeproxy.discovery.publish_names import (
    HTTP_TYPE,
    HTTPS_TYPE,
    NAME_TYPE,
    PublishSpec,
    _instance,
    _sorted_addresses,
)
from homeproxy.discovery.publish_states import _NameStates
from homeproxy.discovery.service import SELF_KEY

log = logging.getLogger("homeproxy.discovery.publish")  # one logger name for the whole publisher

PROBE_QUERIES = 3
PROBE_INTERVAL = 0.25
"""RFC 6762 §8.1: three probes 250 ms apart; silence 250 ms after the last one means the name is free."""

GOODBYE_INTERVAL = 0.125
"""Goodbyes for withdrawn addresses go out three times, like zeroconf's own (RFC 6762 §10.1)."""

PROBE_JITTER = 0.25
"""RFC 6762 §8.1: wait a random 0-250 ms before the first probe, so hosts starting together don't collide."""


@dataclass(slots=True)
class _Tasks:
    """Tasks the publisher started, kept referenced (asyncio holds only weak ones) and cancellable."""

    running: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task


class _Registrations(_NameStates):
    """The publisher's part that talks to zeroconf: probes, registrations, announcements, goodbyes."""

    _aiozc: AsyncZeroconf
    instance_id: str
    _ours: set[str]
    _announcing: dict[str, asyncio.Future[Any]]
    _heard: dict[str, dict[str, float]]
    _last_defence: dict[str, float]

    async def _withdraw(self, hosts: list[str], *, keep_state: bool = False) -> None:
        """Unregister `hosts` with goodbyes (RFC 6762 §10.1), all at once; ~0.25 s."""
        goodbyes: list[Awaitable[Any]] = []
        for host in hosts:
            held = self._held.pop(host)
            self._heard.pop(host, None)
            self._last_defence.pop(host, None)
            if held.advert is not None:
                # First the advert: the address goodbyes go out with the last registration on the name.
                goodbyes.append(await self._unregister(held.advert, wait=False))
            goodbyes.append(await self._unregister(held.name_info, wait=False))
        if goodbyes:
            await asyncio.gather(*goodbyes, return_exceptions=True)
        for host in hosts:
            log.info("mDNS: stopped answering for %s", host)
            self._publish(NameWithdrawn(host))
        if not keep_state:
            self._drop_states(hosts)

    async def _probe(self, fqdn: str, heard: Callable[[], tuple[str, ...]] | None = None) -> tuple[str, ...]:
        """The addresses another machine gives for `fqdn` (empty: the name is free): those in
        zeroconf's cache, or what `heard()` returns (a re-probe counts only fresh answers)."""
        zc = self._aiozc.zeroconf
        await zc.async_wait_for_start()
        holders_of = heard or (lambda: self._holders(fqdn))
        holders = holders_of()
        if holders:
            return holders
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.uniform(0, PROBE_JITTER))  # timing jitter, not a secret
        for _ in range(PROBE_QUERIES):
            # QM, not QU as RFC 6762 §8.1 suggests: two stacks on one host share port 5353 and a
            # unicast reply reaches only one of them; the Authority records make peers answer at once.
            out = DNSOutgoing(_FLAGS_QR_QUERY)
            out.add_question(DNSQuestion(fqdn, _TYPE_A, _CLASS_IN))
            out.add_question(DNSQuestion(fqdn, _TYPE_AAAA, _CLASS_IN))
            for record in self._address_records(fqdn, self._addresses, _DNS_HOST_TTL):
                out.authorities.append(record)  # type: ignore[arg-type]  # typed DNSPointer, writes any record
            zc.async_send(out)
            deadline = loop.time() + PROBE_INTERVAL
            while (remaining := deadline - loop.time()) > 0:
                # Woken early by any new record in the cache.
                await zc.async_wait(remaining * 1000)
                holders = holders_of()
                if holders:
                    return holders
        return ()

    def _announce(self, info: ServiceInfo, broadcast: Awaitable[Any]) -> None:
        """Keep zeroconf's announcement future for `info`, replacing (cancelling) an older one."""
        fut = asyncio.ensure_future(broadcast)
        previous = self._announcing.get(info.key)
        if previous is not None and previous is not fut:
            previous.cancel()
        self._announcing[info.key] = fut

        def done(f: asyncio.Future[Any], key: str = info.key) -> None:
            if self._announcing.get(key) is f:
                del self._announcing[key]

        fut.add_done_callback(done)

    async def _unregister(self, info: ServiceInfo, *, wait: bool = True) -> Awaitable[Any]:
        """Unregister `info` with goodbyes, after stopping its announcements; returns (or awaits) the goodbyes."""
        announcing = self._announcing.pop(info.key, None)
        if announcing is not None:
            announcing.cancel()
        goodbyes: Awaitable[Any] = await self._aiozc.async_unregister_service(info)
        if wait:
            await goodbyes
        return goodbyes

    async def _address_goodbyes(self, hosts: list[str], stale: list[str]) -> None:
        """Goodbyes (TTL 0) for addresses the held names no longer have."""
        out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        for host in hosts:
            # Without the cache-flush bit: with it, a peer would also expire the new addresses
            # it has held for more than a second (RFC 6762 §10.2).
            for record in self._address_records(host + ".", stale, 0, unique=False):
                out.add_answer_at_time(record, 0)
        for i in range(3):
            if i:
                await asyncio.sleep(GOODBYE_INTERVAL)
            self._aiozc.zeroconf.async_send(out)

    @staticmethod
    def _address_records(fqdn: str, addresses: Iterable[str], ttl: int, *, unique: bool = True) -> list[DNSAddress]:
        class_ = _CLASS_IN | _CLASS_UNIQUE if unique else _CLASS_IN
        records = []
        for address in addresses:
            ip = ipaddress.ip_address(address)
            records.append(DNSAddress(fqdn, _TYPE_A if ip.version == 4 else _TYPE_AAAA, class_, ttl, ip.packed))
        return records

    def _holders(self, fqdn: str) -> tuple[str, ...]:
        """The addresses zeroconf's cache has for `fqdn`, if any of them is not ours (else empty).

        Answers carrying only our addresses are our own echo (a goodbye still on its way, or
        another responder on this same machine); they are no reason to leave the name.
        """
        cache = self._aiozc.zeroconf.cache
        now = current_time_millis()
        found: set[str] = set()
        for type_ in (_TYPE_A, _TYPE_AAAA):
            for record in cache.async_all_by_details(fqdn, type_, _CLASS_IN):
                if isinstance(record, DNSAddress) and not record.is_expired(now):
                    found.add(str(ipaddress.ip_address(record.address)))
        return _sorted_addresses(found) if found - self._ours else ()

    def _free_instance(self, type_: str, base: str) -> str:
        """`base`, or `base-2`, ... if the LAN (zeroconf's cache) or our registry already has it."""
        zc = self._aiozc.zeroconf
        instance = base
        for n in range(2, 100):
            name = f"{instance}.{type_}"
            if zc.registry.async_get_info_name(name.lower()) is None and not zc.cache.current_entry_with_name_and_alias(
                type_, name
            ):
                break
            instance = _instance(f"{base}-{n}")
        return instance

    def _packed(self) -> list[bytes]:
        return [ipaddress.ip_address(a).packed for a in self._addresses]

    def _name_info(self, spec: PublishSpec, name: str) -> ServiceInfo:
        return ServiceInfo(
            NAME_TYPE,
            name,
            port=spec.port,
            properties={SELF_KEY: self.instance_id},
            server=spec.host + ".",
            addresses=self._packed(),
        )

    def _advert_info(self, spec: PublishSpec, name: str) -> ServiceInfo:
        return ServiceInfo(
            HTTPS_TYPE if spec.https else HTTP_TYPE,
            name,
            port=spec.port,
            properties={"path": "/", SELF_KEY: self.instance_id},
            server=spec.host + ".",
            addresses=self._packed(),
        )
