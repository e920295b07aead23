"""`Browser`: finds services on the LAN with python-zeroconf and keeps the `ServiceDirectory` current.

One `AsyncServiceBrowser` per service type (so types can be added and dropped
live), plus one for `_services._dns-sd._udp.local.` when every type the LAN
lists is wanted. zeroconf calls `_on_change` on its loop; that handler never
waits: resolving a name (`AsyncServiceInfo.async_request`, bounded by a
timeout) runs in a task per name, and the updates that arrive while it runs
are coalesced into one more pass. The result is cleaned (`clean_text`) into a
`DiscoveredService`, stored in the directory, and announced on the bus as
`ServiceFound` / `ServiceUpdated`; a goodbye becomes `ServiceLost`. With a
`SelfIdentity`, homeproxy's own adverts are marked `own` (and marked again
when the identity changes: new interfaces, another port).

Everything here runs on zeroconf's event loop; only `Discovery` (the runner)
and `homeproxy discover` create a `Browser`.

Questions are sent as QM (multicast answers): two mDNS stacks on one host
share UDP 5353, and a unicast answer to a QU question reaches only one of
them, so with QU a browser beside avahi (or beside a second homeproxy) would
wait a second for its next query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from zeroconf import BadTypeInNameException, DNSQuestionType, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

from homeproxy.discovery.browse_resolve import MAX_RETRY_DELAY as MAX_RETRY_DELAY
from homeproxy.discovery.browse_resolve import Publish as Publish
from homeproxy.discovery.browse_resolve import _Resolving
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.events import ServiceLost, ServiceUpdated
from homeproxy.discovery.publish import NAME_TYPE
from homeproxy.discovery.resolved import MAX_ADDRESSES as MAX_ADDRESSES
from homeproxy.discovery.resolved import MAX_KEY as MAX_KEY
from homeproxy.discovery.resolved import service_from_info as service_from_info
from homeproxy.discovery.resolved import service_name as service_name
from homeproxy.discovery.service import DiscoveredService, MdnsRef, SelfIdentity, clean_text, normalize_type

log = logging.getLogger(__name__)

ENUMERATION_TYPE = "_services._dns-sd._udp.local."
"""The DNS-SD meta-query that lists every service type on the link (RFC 6763 section 9)."""
MAX_TYPES = 200
"""Most service types browsed, configured and revealed together (a LAN listing more is odd)."""
RESOLVE_TIMEOUT = 3.0
"""Seconds one resolution may wait for SRV, TXT and address records."""
RETRY_DELAY = 30.0
"""Seconds before an unresolved service is asked again (doubling up to `MAX_RETRY_DELAY`)."""
MAX_CONCURRENT = 16
"""Resolutions in flight at once."""


class Browser(_Resolving):
    """Browses service types on an `AsyncZeroconf` into a `ServiceDirectory`.

    Create, use and close it on zeroconf's event loop. `types` are browsed and
    all their services kept; with `browse_all_types`, every type the LAN lists
    is added (up to `max_types`); `refs` (the `mdns://` upstreams of sites) are
    always resolved, even when their type is not browsed otherwise (then only
    those instances are kept). The directory is this browser's: entries already
    in it (left by an earlier browser when zeroconf restarted) are adopted.
    """

    def __init__(
        self,
        aiozc: AsyncZeroconf,
        directory: ServiceDirectory,
        publish: Publish,
        *,
        types: Iterable[str] = (),
        browse_all_types: bool = False,
        refs: Iterable[MdnsRef] = (),
        clock: Callable[[], float] = time.time,
        resolve_timeout: float = RESOLVE_TIMEOUT,
        retry_delay: float = RETRY_DELAY,
        max_types: int = MAX_TYPES,
        identity: SelfIdentity | None = None,
    ) -> None:
        self._zc: Zeroconf = aiozc.zeroconf
        self._identity = identity
        self._loop = asyncio.get_running_loop()
        self.directory = directory
        self._publish = publish
        self._clock = clock
        self.resolve_timeout = resolve_timeout
        self.retry_delay = retry_delay
        self.max_types = max_types
        self._types: frozenset[str] = frozenset()
        """Configured types (normalised)."""
        self._all = False
        self._revealed: set[str] = set()
        """Types the LAN listed through the enumeration query."""
        self.types_refused = 0
        """Revealed types not browsed because `max_types` was reached."""
        self._refs: dict[str, str] = {}
        """Referenced service key -> its type."""
        self._browsers: dict[str, AsyncServiceBrowser] = {}
        self._known: dict[str, tuple[str, str]] = {}
        """Keys this browser put in the directory -> (type, the name as received)."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._attempts: dict[str, int] = {}
        """Unresolved passes in a row, per key (for the retry back-off)."""
        self._sem = asyncio.Semaphore(MAX_CONCURRENT)
        self._cancelling: set[asyncio.Task[None]] = set()
        """Browsers being cancelled (kept referenced until done)."""
        self._closed = False
        for s in directory.snapshot():  # left by an earlier browser (zeroconf restarted): ours now
            self._known[s.key] = (s.type, s.name)
        self.configure(types, browse_all_types=browse_all_types, refs=refs)

    # -- what to browse ---------------------------------------------------------------------------

    @property
    def browsed_types(self) -> frozenset[str]:
        """The service types browsed now (without the enumeration query)."""
        return frozenset(self._browsers) - {ENUMERATION_TYPE}

    def configure(self, types: Iterable[str], *, browse_all_types: bool, refs: Iterable[MdnsRef]) -> None:
        """`set_types` and `set_refs` at once (one change of browsers)."""
        self._refs = {r.key: r.type for r in refs}
        self.set_types(types, browse_all_types=browse_all_types)

    def set_types(self, types: Iterable[str], *, browse_all_types: bool) -> None:
        """Browse these types (and every listed type if `browse_all_types`); services of
        types no longer browsed leave the directory (`ServiceLost`)."""
        wanted: set[str] = set()
        for t in types:
            try:
                wanted.add(normalize_type(t))
            except ValueError:
                log.warning("mDNS: not a service type, ignored: %s", clean_text(t, 80))
        self._types = frozenset(wanted)
        if not browse_all_types:
            self._revealed.clear()
        self._all = browse_all_types
        self._sync()

    def set_refs(self, refs: Iterable[MdnsRef]) -> None:
        """The `mdns://` upstreams in use: their types are browsed and their instances kept."""
        self._refs = {r.key: r.type for r in refs}
        self._sync()

    def set_identity(self, identity: SelfIdentity | None) -> None:
        """Recognise homeproxy's own adverts by `identity` from now on; the services already kept
        are marked again (`ServiceUpdated` for each that changes)."""
        if identity == self._identity:
            return
        self._identity = identity
        for key in list(self._known):
            service = self.directory.get(key)
            if service is None:
                continue
            marked = self._mark(service)
            if marked.own != service.own and isinstance(previous := self.directory.upsert(marked), DiscoveredService):
                self._publish(ServiceUpdated(marked, previous))

    def watch(self, ref: MdnsRef) -> None:
        """Make sure `ref` is browsed and kept (adds to the refs given so far)."""
        if ref.key not in self._refs:
            self._refs[ref.key] = ref.type
            self._sync()

    def _wanted(self) -> set[str]:
        wanted = set(self._types) | set(self._refs.values())
        if self._all:
            wanted |= self._revealed
            wanted.add(ENUMERATION_TYPE)
        return wanted

    def _sync(self) -> None:
        """Start and stop browsers to match what is wanted; forget services no longer kept."""
        if self._closed:
            return
        wanted = self._wanted()
        for type_ in [t for t in self._browsers if t not in wanted]:
            # Its callbacks already queued may still come: `_keeps` turns them away.
            task = self._loop.create_task(self._browsers.pop(type_).async_cancel())
            self._cancelling.add(task)
            task.add_done_callback(self._cancelling.discard)
        for type_ in sorted(wanted - set(self._browsers)):
            try:
                self._browsers[type_] = AsyncServiceBrowser(
                    self._zc, [type_], handlers=[self._on_change], question_type=DNSQuestionType.QM
                )
            except (BadTypeInNameException, RuntimeError) as e:  # refused type, or zeroconf closing
                log.warning("mDNS: cannot browse %s: %s", clean_text(type_, 80), e)
        # (A resolution in flight for a type no longer kept is discarded by `_store`.)
        for key, (type_, _) in list(self._known.items()):
            if not self._keeps(type_, key):
                self._forget(key)

    # -- zeroconf's callback (on its loop; never waits) ------------------------------------------

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if self._closed:
            return
        try:
            if service_type == ENUMERATION_TYPE:
                if state_change is ServiceStateChange.Added:
                    self._on_type(name)
                return
            full, _ = service_name(service_type, name)
            key = full.lower()
            if state_change is ServiceStateChange.Removed:
                self._forget(key)
            elif self._keeps(service_type, key):
                self._schedule(service_type, name, key)
        except Exception:  # a bug here must not break zeroconf's dispatch
            log.exception("mDNS: handling %s for %r failed", state_change, name)

    def _on_type(self, name: str) -> None:
        try:
            type_ = normalize_type(name)
        except ValueError:
            return  # a subtype or junk
        if type_ in self._revealed or not self._all or type_ == NAME_TYPE:
            return  # NAME_TYPE: the records that hold homeproxy's own .local names, not services
        if len(self._revealed | self._types | set(self._refs.values())) >= self.max_types:
            self.types_refused += 1
            return
        self._revealed.add(type_)
        # Not from inside zeroconf's dispatch: starting a browser adds a record listener.
        self._loop.call_soon(self._sync)

    # -- forgetting ---------------------------------------------------------------------------------

    def _cancel(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self._dirty.discard(key)
        retry = self._retries.pop(key, None)
        if retry is not None:
            retry.cancel()
        self._attempts.pop(key, None)

    def _forget(self, key: str) -> None:
        """Stop resolving `key` and drop it from the directory (`ServiceLost` if it was there)."""
        self._cancel(key)
        self._known.pop(key, None)
        old = self.directory.remove(key)
        if old is not None:
            self._publish(ServiceLost(old))

    async def settle(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) for the resolutions in flight (for `homeproxy discover`)."""
        deadline = self._loop.time() + timeout
        while self._tasks and self._loop.time() < deadline:
            await asyncio.wait(list(self._tasks.values()), timeout=max(0.0, deadline - self._loop.time()))

    async def close(self, *, forget: bool = False) -> None:
        """Stop browsing and resolving; with `forget`, also drop this browser's services
        from the directory (`ServiceLost` for each)."""
        if forget:
            for key in list(self._known):
                self._forget(key)
        self._closed = True
        for browser in self._browsers.values():
            with contextlib.suppress(Exception):
                await browser.async_cancel()
        self._browsers.clear()
        if self._cancelling:
            await asyncio.wait(list(self._cancelling), timeout=1.0)
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)


async def discover(
    addresses: list[str],
    *,
    types: Iterable[str],
    browse_all_types: bool,
    timeout: float,
    max_services: int = 1000,
) -> tuple[DiscoveredService, ...]:
    """Browse for `timeout` seconds on `addresses` (zeroconf's `interfaces=`) and return what was
    found, resolutions in flight given up to `resolve_timeout` more (`homeproxy discover`)."""
    directory = ServiceDirectory(max_services)
    aiozc = AsyncZeroconf(interfaces=addresses)
    try:
        browser = Browser(aiozc, directory, lambda _event: None, types=types, browse_all_types=browse_all_types)
        await asyncio.sleep(timeout)
        await browser.settle(RESOLVE_TIMEOUT)
        await browser.close()
    finally:
        await aiozc.async_close()
    return directory.snapshot()
