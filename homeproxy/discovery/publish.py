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
import ipaddress
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from zeroconf import (
    NonUniqueNameException,
    RecordUpdate,
    RecordUpdateListener,
    ServiceInfo,
    ServiceNameAlreadyRegistered,
    Zeroconf,
    current_time_millis,
)
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

from homeproxy.config.model import Config
from homeproxy.discovery.events import NameAnnounced, NameConflict, NameWithdrawn
from homeproxy.discovery.service import SELF_KEY, new_instance_id

log = logging.getLogger(__name__)

NAME_TYPE = "_homeproxy._tcp.local."
"""The private service type that holds a bare host name (its instance is the name's label)."""

HTTP_TYPE = "_http._tcp.local."
HTTPS_TYPE = "_https._tcp.local."

PROBE_QUERIES = 3
PROBE_INTERVAL = 0.25
"""RFC 6762 §8.1: three probes 250 ms apart; silence 250 ms after the last one means the name is free."""

GOODBYE_INTERVAL = 0.125
"""Goodbyes for withdrawn addresses go out three times, like zeroconf's own (RFC 6762 §10.1)."""

PROBE_JITTER = 0.25
"""RFC 6762 §8.1: wait a random 0-250 ms before the first probe, so hosts starting together don't collide."""

RETRY_INTERVAL = 60.0
"""Seconds between new attempts at names in conflict (or that failed)."""

REPROBE_HOLDOFF = 1.0
"""Seconds between re-probes of one held name that other machines keep claiming (a bound on the
packets a flood of conflicting announcements can make us send; RFC 6762 §8.1 rate-limits too)."""

FLUSH_AGE = 1.1
"""RFC 6762 §10.2: a record with the cache-flush bit flushes only those received more than one
second before it, so a name kept after a stray claim is announced again no sooner than this."""

MAX_HEARD = 16
"""Most foreign addresses remembered per held name."""

MAX_INSTANCE_BYTES = 63
"""RFC 6763 §4.1.1: an instance name is at most 63 bytes of UTF-8."""

_FLAT_LOCAL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.local$")

NameStatus = Literal["probing", "announced", "conflict", "withdrawn", "error"]


@dataclass(frozen=True, slots=True)
class PublishSpec:
    """One name to announce: `host` (`"plex.local"`) for `site`, whose proxy listens on `port`."""

    host: str
    site: str
    port: int
    advertise: bool
    """Also register the site as an `_http._tcp` (or `_https._tcp`) service."""
    https: bool = False


@dataclass(frozen=True, slots=True)
class NameState:
    """Where announcing one name stands (for the TUI)."""

    host: str
    status: NameStatus
    addresses: tuple[str, ...] = ()
    """The addresses homeproxy answers with (announced), or would (probing)."""
    holders: tuple[str, ...] = ()
    """In conflict: the addresses another machine gave for the name (may be empty if unknown)."""
    detail: str = ""
    """One sentence saying what happens and why."""
    since: float = 0.0
    """When the name entered this status (the publisher's clock)."""


def is_flat_local(host: str) -> bool:
    """Is `host` exactly `label.local` (lower case, no wildcard)?

    Names with more labels (`a.b.local`) are skipped: Ubuntu's resolver (nss-mdns's
    `mdns4_minimal`) only asks mDNS for two-label `.local` names.
    """
    return bool(_FLAT_LOCAL.match(host))


def wanted_names(config: Config, port: int) -> dict[str, PublishSpec]:
    """The names to announce: each enabled, publishing site's flat `.local` hosts, in lower case.

    A host listed by two sites goes to the first.
    """
    wanted: dict[str, PublishSpec] = {}
    advertise = config.discovery.advertise
    for site in config.sites:
        if not site.enabled or not config.publishes(site):
            continue
        for raw in site.hosts:
            host = raw.strip().lower().rstrip(".")
            if is_flat_local(host) and host not in wanted:
                wanted[host] = PublishSpec(host=host, site=site.name, port=port, advertise=advertise)
    return wanted


def _normalize(addresses: Iterable[str]) -> tuple[str, ...]:
    """Valid, deduplicated address strings (IPv6 zone ids dropped: mDNS records carry none)."""
    seen: dict[str, None] = {}
    for raw in addresses:
        try:
            ip = ipaddress.ip_address(raw.split("%", 1)[0].strip())
        except ValueError:
            log.warning("mDNS: ignoring %r, not an IP address", raw)
            continue
        seen.setdefault(str(ip), None)
    return tuple(seen)


def _sorted_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """IPv4 before IPv6, then numerically."""
    ips = sorted({ipaddress.ip_address(a) for a in addresses}, key=lambda ip: (ip.version, int(ip)))
    return tuple(str(ip) for ip in ips)


def _instance(text: str) -> str:
    """A DNS-SD instance name from `text`: no dots (zeroconf would split on them), at most 63 bytes."""
    name = " ".join(text.replace(".", " ").split()) or "homeproxy"
    while len(name.encode()) > MAX_INSTANCE_BYTES:
        name = name[:-1]
    return name


@dataclass(slots=True)
class _Held:
    """A name homeproxy answers for: its registrations."""

    spec: PublishSpec
    name_info: ServiceInfo
    advert: ServiceInfo | None = None


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


@dataclass(slots=True)
class _Tasks:
    """Tasks the publisher started, kept referenced (asyncio holds only weak ones) and cancellable."""

    running: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task


class Publisher:
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

    # -- defending held names (RFC 6762 §9) ------------------------------------------------------

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

    def _conflict(self, host: str, holders: tuple[str, ...]) -> None:
        previous = self._states.get(host)
        self._set_state(
            host,
            "conflict",
            holders=holders,
            detail=f"Another device ({', '.join(holders)}) already answers for {host}, so homeproxy leaves"
            f" the name to it and checks again every {self._retry_interval:g} s.",
        )
        if previous is None or previous.status != "conflict" or previous.holders != holders:
            log.warning("mDNS: %s is already answered by %s; not announcing it", host, ", ".join(holders))
            self._publish(NameConflict(host, holders))

    def _announced(self, host: str) -> None:
        held = self._held[host]
        previous = self._states.get(host)
        detail = f"Answering for {host} with {', '.join(self._addresses)}"
        if held.advert is not None:
            kind = "HTTPS" if held.spec.https else "HTTP"
            instance = held.advert.name.removesuffix("." + held.advert.type)
            detail += f", advertised as the {kind} service “{instance}”"
        self._set_state(host, "announced", addresses=self._addresses, detail=detail + ".")
        if previous is None or previous.status != "announced" or previous.addresses != self._addresses:
            log.info("mDNS: answering for %s with %s", host, ", ".join(self._addresses))
            self._publish(NameAnnounced(host, self._addresses))

    def _no_address_detail(self, host: str) -> str:
        return f"No network address to announce {host} with; homeproxy announces it when an interface comes up."

    def _state_status(self, host: str) -> str | None:
        state = self._states.get(host)
        return state.status if state else None

    def _set_state(
        self,
        host: str,
        status: NameStatus,
        *,
        addresses: tuple[str, ...] = (),
        holders: tuple[str, ...] = (),
        detail: str,
    ) -> None:
        previous = self._states.get(host)
        state = NameState(host, status, addresses, holders, detail, self._clock())
        if previous is not None and previous.status == status:
            state = replace(state, since=previous.since)
        if previous == state:
            return
        states = dict(self._states)
        states[host] = state
        self._states = MappingProxyType(states)

    def _drop_states(self, hosts: Iterable[str]) -> None:
        drop = set(hosts)
        if drop & self._states.keys():
            self._states = MappingProxyType({h: s for h, s in self._states.items() if h not in drop})
