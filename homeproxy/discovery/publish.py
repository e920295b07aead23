"""Announcing sites' `.local` host names on the LAN (mDNS), never taking one another machine holds.

`wanted_names` turns the config into the names to announce; a `Publisher` owns
them on one `AsyncZeroconf` and keeps `states` (one `NameState` per name) for
the TUI, publishing `NameAnnounced`, `NameConflict` and `NameWithdrawn`.

zeroconf has no bare address-record API. A name is held by registering a
`ServiceInfo` of a private type (`plex._homeproxy._tcp.local.`) whose `server`
is the name (`plex.local.`): zeroconf then answers A/AAAA queries for it. With
`advertise` on, the site is also registered as an `_http._tcp` service on the
same server name, so it shows in other mDNS browsers.

Before claiming a name the publisher probes for it, as RFC 6762 §8.1 asks: three
A/AAAA questions 250 ms apart, carrying the proposed records in the Authority
section (which makes a probe: responders answer it at once, not after their
one-second multicast limit). If another machine answers (or its answer is still
in zeroconf's cache), the name is left alone: state "conflict", a
`NameConflict` event, a warning in the log, and another try on the next `apply`
or after `retry_interval` seconds.

A held name is defended. zeroconf itself answers queries and probes for it
(its registry holds the address records), so a machine probing for the name
hears our answer and picks another. zeroconf does not notice a machine that
announces the name later without probing (RFC 6762 §9), so the publisher
listens to every address record received: one for a held name with an address
that is not ours makes it probe again. If the other machine answers that probe,
it keeps the name (withdrawn here with goodbyes, state "conflict",
`NameConflict`, retried later); if it does not (a stray or stale announcement),
homeproxy keeps the name and announces it again, which flushes the other
record from the LAN's caches (§10.2).

Every registration carries the TXT key `homeproxy` (`SELF_KEY`) with this
process's instance id, so the browser can tell homeproxy's own adverts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from zeroconf import NonUniqueNameException, ServiceNameAlreadyRegistered
from zeroconf.asyncio import AsyncZeroconf

from homeproxy.discovery.publish_defence import _ClaimWatch, _Defence
from homeproxy.discovery.publish_names import HTTP_TYPE as HTTP_TYPE
from homeproxy.discovery.publish_names import HTTPS_TYPE as HTTPS_TYPE
from homeproxy.discovery.publish_names import NAME_TYPE as NAME_TYPE
from homeproxy.discovery.publish_names import NameState as NameState
from homeproxy.discovery.publish_names import NameStatus as NameStatus
from homeproxy.discovery.publish_names import PublishSpec as PublishSpec
from homeproxy.discovery.publish_names import _Held, _instance, _normalize
from homeproxy.discovery.publish_names import is_flat_local as is_flat_local
from homeproxy.discovery.publish_names import wanted_names as wanted_names
from homeproxy.discovery.publish_probe import _Tasks
from homeproxy.discovery.service import new_instance_id

log = logging.getLogger(__name__)

RETRY_INTERVAL = 60.0
"""Seconds between new attempts at names in conflict (or that failed)."""


class Publisher(_Defence):
    """Announces host names on one `AsyncZeroconf`; every method runs on its loop.

    `states` may be read from any thread: it is replaced whole, never changed in place.
    """

    def __init__(
        self,
        aiozc: AsyncZeroconf,
        publish: Callable[[object], None],
        addresses: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
        retry_interval: float = RETRY_INTERVAL,
        instance_id: str | None = None,
    ) -> None:
        self._aiozc = aiozc
        self.instance_id = new_instance_id() if instance_id is None else instance_id
        """Put in every registration's TXT (`SELF_KEY`): how a browser tells our adverts."""
        self._publish = publish
        self._clock = clock
        self._retry_interval = retry_interval
        self._addresses = _normalize(addresses)
        self._ours: set[str] = set(self._addresses)
        """Every address this publisher has answered with: answers carrying only these are our own echo."""
        self._wanted: dict[str, PublishSpec] = {}
        self._held: dict[str, _Held] = {}
        self._states: Mapping[str, NameState] = MappingProxyType({})
        self._lock = asyncio.Lock()
        self._claims = _Tasks()
        self._background = _Tasks()
        self._retry_task: asyncio.Task[Any] | None = None
        self._announcing: dict[str, asyncio.Future[Any]] = {}
        """zeroconf's announcement broadcasts by service key: cancelled before a goodbye, so a late
        announcement never brings a withdrawn record back into the LAN's caches."""
        self._watch: _ClaimWatch | None = None
        self._heard: dict[str, dict[str, float]] = {}
        """Held name -> addresses other machines announced for it -> when (loop time), newest last."""
        self._defending: set[str] = set()
        self._last_defence: dict[str, float] = {}
        self._closed = False

    # -- reading ---------------------------------------------------------------------------------

    @property
    def states(self) -> Mapping[str, NameState]:
        """Each wanted name's state (a read-only snapshot)."""
        return self._states

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses names are announced with."""
        return self._addresses

    # -- changing --------------------------------------------------------------------------------

    async def apply(self, wanted: Mapping[str, PublishSpec]) -> None:
        """Make the announced names `wanted`: withdraw removed ones (with goodbyes), update changed
        ones, probe for and claim new ones (concurrently). Returns once every name is settled."""
        async with self._lock:
            if self._closed:
                return
            self._wanted = dict(wanted)
            gone = [host for host in self._held if host not in self._wanted]
            await self._withdraw(gone)
            self._drop_states(host for host in self._states if host not in self._wanted)
            changed = [host for host, held in self._held.items() if held.spec != self._wanted[host]]
            await self._run_claims(
                [self._update(host) for host in changed]
                + [self._claim(host) for host in self._wanted if host not in self._held]
            )
            if self._retry_task is None:
                self._retry_task = self._background.spawn(self._retry_loop(), "homeproxy-mdns-retry")

    async def set_addresses(self, addresses: Sequence[str]) -> None:
        """The interfaces changed: announce the held names with `addresses` instead (peers' caches
        replace the old ones, RFC 6762 §10.2), and try the others again."""
        async with self._lock:
            new = _normalize(addresses)
            if self._closed or new == self._addresses:
                return
            old, self._addresses = self._addresses, new
            if not new:
                await self._withdraw(list(self._held), keep_state=True)
                for host in self._wanted:
                    self._set_state(host, "error", detail=self._no_address_detail(host))
                return
            self._ours.update(new)
            packed = self._packed()
            for host, held in self._held.items():
                for info in (held.name_info, held.advert):
                    if info is not None:
                        # In place: an announcement still under way then sends the new addresses too.
                        info.addresses = packed
                        self._announce(info, await self._aiozc.async_update_service(info))
                self._announced(host)
            # The new records carry the cache-flush bit, but peers flush only records older than
            # one second (RFC 6762 §10.2): goodbyes make sure the old addresses go at once.
            stale = [a for a in old if a not in new]
            if stale and self._held:
                self._background.spawn(self._address_goodbyes(list(self._held), stale), "homeproxy-mdns-goodbye")
            await asyncio.gather(*self._announcing.values(), return_exceptions=True)
            await self._run_claims([self._claim(host) for host in self._wanted if host not in self._held])

    async def close(self) -> None:
        """Say goodbye for every name (takes about 0.25 s) and stop."""
        self._closed = True
        # Announcement and goodbye broadcasts already under way are left to finish (< 0.5 s).
        for task in (*self._claims.running, *([self._retry_task] if self._retry_task else [])):
            task.cancel()
        if self._watch is not None:
            with contextlib.suppress(Exception):  # zeroconf already closed
                self._aiozc.zeroconf.async_remove_listener(self._watch)
            self._watch = None
        async with self._lock:
            hosts = list(self._held)
            await self._withdraw(hosts, keep_state=True)
            for host in self._states:
                self._set_state(host, "withdrawn", detail=f"homeproxy stopped answering for {host}.")

    # -- internals -------------------------------------------------------------------------------

    async def _run_claims(self, coros: list[Coroutine[Any, Any, None]]) -> None:
        """Run per-name work concurrently; one name's failure never stops the others."""
        tasks = [self._claims.spawn(c, "homeproxy-mdns-claim") for c in coros]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self._retry_interval)
            async with self._lock:
                if self._closed:
                    return
                await self._run_claims([self._claim(host) for host in self._wanted if host not in self._held])

    async def _claim(self, host: str) -> None:
        """Probe for `host`; if nobody else answers it, register it (and its advert)."""
        spec = self._wanted[host]
        if not self._addresses:
            self._set_state(host, "error", detail=self._no_address_detail(host))
            return
        try:
            if self._state_status(host) != "conflict":
                self._set_state(
                    host,
                    "probing",
                    addresses=self._addresses,
                    detail=f"Checking that no other device on the LAN answers for {host}.",
                )
            holders = await self._probe(host + ".")
            if holders:
                self._conflict(host, holders)
                return
            instance = self._free_instance(NAME_TYPE, _instance(host.removesuffix(".local")))
            info = self._name_info(spec, f"{instance}.{NAME_TYPE}")
            # The probe above stands for zeroconf's own (RFC 6762 §8.1): the instance name of a
            # private type matters to nobody, the host name does. This saves ~1.2 s per name.
            broadcast = await self._aiozc.async_register_service(info, cooperating_responders=True)
            self._held[host] = _Held(spec, info)
            self._watch_claims()
            self._announce(info, broadcast)
            self._announced(host)
            if spec.advertise:
                await self._advertise(host)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("mDNS: could not announce %s: %s", host, e)
            self._set_state(host, "error", detail=f"Announcing {host} failed ({e}); homeproxy tries again later.")

    async def _update(self, host: str) -> None:
        """A held name's site, port or advertising changed: update its registrations, keep the name."""
        held = self._held[host]
        old, new = held.spec, self._wanted[host]
        held.spec = new
        try:
            if old.port != new.port:
                held.name_info.port = new.port
                self._announce(held.name_info, await self._aiozc.async_update_service(held.name_info))
            if held.advert is not None and (
                not new.advertise or (old.site, old.port, old.https) != (new.site, new.port, new.https)
            ):
                advert, held.advert = held.advert, None
                # The name's own registration remains, so these goodbyes leave its A records alone.
                await self._unregister(advert)
            self._announced(host)
            if new.advertise and held.advert is None:
                await self._advertise(host)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("mDNS: could not update %s: %s", host, e)
            self._set_state(host, "error", detail=f"Updating {host} failed ({e}).")

    async def _advertise(self, host: str) -> None:
        """Register the site as an `_http._tcp` service on `host` (renamed if the instance is taken)."""
        held = self._held[host]
        spec = held.spec
        siblings = sum(1 for s in self._wanted.values() if s.site == spec.site and s.advertise)
        base = _instance(spec.site if siblings <= 1 else f"{spec.site} ({host.removesuffix('.local')})")
        type_ = HTTPS_TYPE if spec.https else HTTP_TYPE
        for n in range(1, 6):
            instance = base if n == 1 else _instance(f"{base} ({n})")
            info = self._advert_info(spec, f"{instance}.{type_}")
            try:
                # zeroconf probes the instance name (~1.2 s) and renames it itself on a LAN
                # conflict; ServiceNameAlreadyRegistered means one of our own names has it.
                broadcast = await self._aiozc.async_register_service(info, allow_name_change=True)
            except (NonUniqueNameException, ServiceNameAlreadyRegistered):
                continue
            self._announce(info, broadcast)
            if self._held.get(host) is not held or held.spec != spec:
                # Withdrawn or changed while zeroconf probed: take it back at once.
                await self._unregister(info)
                return
            held.advert = info
            self._announced(host)
            return
        log.warning("mDNS: no free service name for %s (tried %r and 4 more)", host, base)
