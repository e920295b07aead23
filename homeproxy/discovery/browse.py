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
from dataclasses import replace

from zeroconf import BadTypeInNameException, DNSQuestionType, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.events import ServiceFound, ServiceLost, ServiceUpdated
from homeproxy.discovery.publish import NAME_TYPE
from homeproxy.discovery.service import (
    MAX_PROPERTIES,
    DiscoveredService,
    MdnsRef,
    SelfIdentity,
    clean_path,
    clean_text,
    normalize_type,
    sort_addresses,
)

log = logging.getLogger(__name__)

ENUMERATION_TYPE = "_services._dns-sd._udp.local."
"""The DNS-SD meta-query that lists every service type on the link (RFC 6763 section 9)."""
MAX_TYPES = 200
"""Most service types browsed, configured and revealed together (a LAN listing more is odd)."""
RESOLVE_TIMEOUT = 3.0
"""Seconds one resolution may wait for SRV, TXT and address records."""
RETRY_DELAY = 30.0
"""Seconds before an unresolved service is asked again (doubling up to `MAX_RETRY_DELAY`)."""
MAX_RETRY_DELAY = 600.0
MAX_CONCURRENT = 16
"""Resolutions in flight at once."""
MAX_ADDRESSES = 16
"""Most addresses kept per service."""
MAX_KEY = 64
"""Longest TXT key kept (RFC 6763 section 6.4 recommends at most 9 characters)."""

Publish = Callable[[object], None]


def service_name(type_: str, name: str) -> tuple[str, str]:
    """`(name, instance)` as the directory keeps them: the instance part cleaned
    (`clean_text`) and the type appended as browsed (normalised)."""
    suffix = "." + type_
    raw = name[: -len(suffix)] if name.lower().endswith(suffix.lower()) else name.rstrip(".")
    instance = clean_text(raw)
    return f"{instance}{suffix}", instance


def service_from_info(info: ServiceInfo, type_: str, name: str, *, seen: float) -> DiscoveredService:
    """A `DiscoveredService` from what zeroconf resolved (complete or not): every string cleaned,
    properties capped at `MAX_PROPERTIES`, a bare `{'': None}` TXT ignored, addresses best first."""
    full, instance = service_name(type_, name)
    props: list[tuple[str, str | None]] = []
    seen_keys: set[str] = set()
    for k, v in info.properties.items():
        if not k:  # an empty TXT (one zero-length string) decodes as {b'': None}
            continue
        key = clean_text(k, MAX_KEY)
        if key.lower() in seen_keys:
            continue
        seen_keys.add(key.lower())
        props.append((key, None if v is None else clean_text(v)))
        if len(props) >= MAX_PROPERTIES:
            break
    path = clean_path(next((v for k, v in props if k.lower() == "path"), None))
    addresses = sort_addresses(info.parsed_scoped_addresses())[:MAX_ADDRESSES]
    return DiscoveredService(
        name=full,
        instance=instance,
        type=type_,
        host=clean_text(info.server or ""),
        addresses=addresses,
        port=info.port or 0,
        properties=tuple(props),
        path=path,
        seen=seen,
    )


def _service_info(type_: str, name: str) -> AsyncServiceInfo:
    """An `AsyncServiceInfo` to resolve `name`, even one zeroconf's name check refuses
    (control characters, an instance over 63 bytes): such names exist on real networks,
    and the record lookups themselves work with any name."""
    try:
        return AsyncServiceInfo(type_, name)
    except BadTypeInNameException:
        info = AsyncServiceInfo(type_, f"unnamed.{type_}")
        info.name = name
        return info


class Browser:
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

    def _mark(self, service: DiscoveredService) -> DiscoveredService:
        own = self._identity is not None and self._identity.recognizes(service)
        return service if own == service.own else replace(service, own=own)

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

    def _keeps(self, type_: str, key: str) -> bool:
        return type_ in self._types or (self._all and type_ in self._revealed) or key in self._refs

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

    # -- resolving ----------------------------------------------------------------------------------

    def _schedule(self, type_: str, name: str, key: str) -> None:
        """Resolve `name` in its own task; while one runs, note that another pass is due."""
        if key in self._tasks:
            self._dirty.add(key)
            return
        directory = self.directory
        if key not in self._known and directory.get(key) is None and len(directory) >= directory.max_services:
            directory.refused += 1  # a flood: no task for a name that cannot be kept
            return
        retry = self._retries.pop(key, None)
        if retry is not None:
            retry.cancel()
        task = self._loop.create_task(self._resolve_loop(type_, name, key), name=f"mdns-resolve {key[:80]}")
        self._tasks[key] = task

    async def _resolve_loop(self, type_: str, name: str, key: str) -> None:
        try:
            while True:
                self._dirty.discard(key)
                async with self._sem:
                    service = await self._resolve(type_, name)
                if service is None:
                    return
                self._store(service, name, key)
                if key not in self._dirty:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("mDNS: resolving %r failed", name)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    async def _resolve(self, type_: str, name: str) -> DiscoveredService | None:
        info = _service_info(type_, name)
        if self._zc.done:
            return None
        with contextlib.suppress(BadTypeInNameException):
            await info.async_request(self._zc, self.resolve_timeout * 1000, question_type=DNSQuestionType.QM)
        if self._closed or self._zc.done:
            return None
        return self._mark(service_from_info(info, type_, name, seen=self._clock()))

    def _store(self, service: DiscoveredService, name: str, key: str) -> None:
        if self._closed or not self._keeps(service.type, key):
            return
        previous = self.directory.upsert(service)
        if previous is None:
            self._known[key] = (service.type, name)
            self._publish(ServiceFound(service))
        elif isinstance(previous, DiscoveredService):
            self._known[key] = (service.type, name)
            self._publish(ServiceUpdated(service, previous))
        elif self.directory.get(key) is None:
            return  # refused: the directory is full
        else:
            self._known[key] = (service.type, name)  # unchanged (perhaps found by an earlier browser)
        if service.resolved:
            self._attempts.pop(key, None)
        else:
            self._retry_later(key)

    def _retry_later(self, key: str) -> None:
        """An unresolved service (no address yet) is asked again later, less often each time."""
        old = self._retries.pop(key, None)
        if old is not None:
            old.cancel()
        attempts = self._attempts.get(key, 0)
        self._attempts[key] = attempts + 1
        delay = min(self.retry_delay * 2**attempts, MAX_RETRY_DELAY)
        self._retries[key] = self._loop.call_later(delay, self._retry, key)

    def _retry(self, key: str) -> None:
        self._retries.pop(key, None)
        known = self._known.get(key)
        if not self._closed and known is not None:
            self._schedule(known[0], known[1], key)

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
