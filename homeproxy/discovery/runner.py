"""`Discovery`: mDNS for a running homeproxy, on its own thread and event loop.

`Runtime` starts it with the config, calls `apply` after every config change
and `stop` at shutdown; the TUI reads `interfaces`, `running`, `error` and
`names`. Inside, one `AsyncZeroconf` (only while something needs it: browsing,
a name to announce, or a site with an `mdns://` upstream) carries a `Browser`
(services into the `ServiceDirectory`) and a `Publisher` (sites' `.local`
names). Nothing here may stop the proxy: failures (no usable interface, a
socket error) are logged and kept in `error`, and retried every
`recheck_interval` seconds, when the interfaces are also looked at again (an
address from DHCP, a cable plugged in).

It also knows homeproxy itself (`identity`: the instance id its adverts carry,
its addresses and ports), so the browser marks homeproxy's own adverts, and a
site whose upstream is homeproxy itself is reported (`ProblemReported`) when
the config is applied: every request would loop back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from zeroconf.asyncio import AsyncZeroconf

from homeproxy.config.model import Config
from homeproxy.discovery.browse import Browser
from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.events import ServiceLost
from homeproxy.discovery.identity import mdns_refs as mdns_refs
from homeproxy.discovery.identity import self_identity as self_identity
from homeproxy.discovery.identity import upstream_loops as upstream_loops
from homeproxy.discovery.interfaces import Interface, addresses_of, choose_interfaces, zeroconf_addresses
from homeproxy.discovery.publish import NameState, Publisher, PublishSpec, wanted_names
from homeproxy.discovery.runner_publish import _PublishHandoff
from homeproxy.discovery.service import SelfIdentity, new_instance_id
from homeproxy.engine.events import ProblemReported

if TYPE_CHECKING:
    from homeproxy.engine.events import EventBus

log = logging.getLogger(__name__)

START_TIMEOUT = 3.0
"""Seconds `start` may block (zeroconf binding its sockets)."""
STOP_TIMEOUT = 3.0
"""Seconds `stop` may block (goodbyes, about 0.25 s, then closing)."""
RECHECK_INTERVAL = 30.0
"""Seconds between looks at the interfaces (and retries after a failure)."""

_EMPTY: Mapping[str, NameState] = MappingProxyType({})


class Discovery(_PublishHandoff):
    """Browsing and announcing over mDNS, for a `Runtime`. Thread-safe; never raises into the proxy."""

    def __init__(self, bus: EventBus, directory: ServiceDirectory, *, clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self.directory = directory
        self.clock = clock
        self.interfaces: tuple[Interface, ...] = ()
        """The interfaces zeroconf uses now (empty while it is not running)."""
        self.running = False
        """zeroconf is up (browsing and/or announcing)."""
        self.error = ""
        """Why mDNS is not running although it should ("" when all is well)."""
        self.recheck_interval = RECHECK_INTERVAL
        self.instance_id = new_instance_id()
        """This run's id, in the TXT of every advert (how the browser knows homeproxy's own)."""
        self.identity = SelfIdentity(self.instance_id)
        """How homeproxy recognises itself (updated with the config and the interfaces)."""
        self._loops: dict[tuple[str, str], str] = {}
        """Upstreams that are homeproxy itself, reported (`ProblemReported`) once each."""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: tuple[Config, int] | None = None
        self._last: tuple[Config, int] | None = None
        self._pending_lock = threading.Lock()
        self._lock: asyncio.Lock | None = None
        self._apply_task: asyncio.Task[None] | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._aiozc: AsyncZeroconf | None = None
        self._browser: Browser | None = None
        self._publisher: Publisher | None = None
        self._pub_wanted: dict[str, PublishSpec] | None = None
        self._pub_addresses: list[str] | None = None
        self._pub_dirty_names = False
        self._pub_dirty_addresses = False
        self._pub_wake: asyncio.Event | None = None
        self._pub_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def names(self) -> Mapping[str, NameState]:
        """The publisher's state of each announced name (read-only, replaced whole on change)."""
        publisher = self._publisher
        return publisher.states if publisher is not None else _EMPTY

    # -- the thread-side API --------------------------------------------------------------------

    def start(self, config: Config, *, port: int) -> None:
        """Start the loop thread and, if the config needs it, zeroconf. Blocks at most ~3 s."""
        if self._thread is not None:
            self.apply(config, port=port)
            return
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="homeproxy-mdns", daemon=True)
        self._thread.start()
        ready.wait(START_TIMEOUT)
        loop = self._loop
        if loop is None:
            self.error = "the mDNS thread did not start"
            log.warning("mDNS: %s", self.error)
            return
        future = asyncio.run_coroutine_threadsafe(self._reconcile(config, port), loop)
        try:
            future.result(timeout=START_TIMEOUT)
        except concurrent.futures.TimeoutError:
            self.error = f"mDNS did not start within {START_TIMEOUT:g} s"
            log.warning("mDNS: %s", self.error)
        except Exception as e:  # never into the proxy
            self.error = f"mDNS could not start: {e}"
            log.warning("mDNS: %s", self.error)
        loop.call_soon_threadsafe(self._schedule_recheck)

    def apply(self, config: Config, *, port: int) -> None:
        """Follow a new config (browse on/off, types, mdns:// upstreams, interfaces, names). Returns at
        once: the work runs on the discovery loop, the latest config winning."""
        loop = self._loop
        if loop is None or self._closing:
            return
        with self._pending_lock:
            self._pending = (config, port)
        with contextlib.suppress(RuntimeError):  # the loop just closed
            loop.call_soon_threadsafe(self._kick)

    def stop(self) -> None:
        """Goodbyes for announced names, zeroconf closed, thread joined; at most ~3 s."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._closing:
            return
        self._closing = True
        future = asyncio.run_coroutine_threadsafe(self._stop(), loop)
        try:
            future.result(timeout=STOP_TIMEOUT)
        except Exception as e:
            log.warning("mDNS: stopping did not finish cleanly: %s", e or type(e).__name__)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=1.0)

    # -- the loop thread ------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._lock = asyncio.Lock()
        self._pub_wake = asyncio.Event()
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=0.5))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _kick(self) -> None:
        if self._apply_task is None or self._apply_task.done():
            loop = asyncio.get_running_loop()
            self._apply_task = loop.create_task(self._apply_pending(), name="homeproxy-mdns-apply")

    async def _apply_pending(self) -> None:
        while not self._closing:
            with self._pending_lock:
                pending, self._pending = self._pending, None
            if pending is None:
                return
            try:
                await self._reconcile(*pending)
            except Exception as e:
                self._fail(f"mDNS: applying the config failed: {e}")

    def _schedule_recheck(self) -> None:
        if self._closing:
            return
        self._recheck = asyncio.get_running_loop().call_later(self.recheck_interval, self._on_recheck)

    def _on_recheck(self) -> None:
        """Look at the interfaces again (and retry after a failure) with the last config."""
        if self._closing:
            return
        with self._pending_lock:
            if self._pending is None and self._last is not None:
                self._pending = self._last
        self._kick()
        self._schedule_recheck()

    def _fail(self, message: str) -> None:
        if message != self.error:  # the recheck retries: log each new problem once
            log.warning("%s", message)
        self.error = message

    async def _reconcile(self, config: Config, port: int) -> None:
        """Bring zeroconf, the browser and the publisher in line with `config`."""
        assert self._lock is not None
        async with self._lock:
            if self._closing:
                return
            self._last = (config, port)
            await self._follow(config, port)
            self.identity = self_identity(self.instance_id, config, port, self.interfaces)
            if self._browser is not None:
                self._browser.set_identity(self.identity)
            self._report_loops(upstream_loops(config, self.identity, self.directory))

    def _report_loops(self, loops: dict[tuple[str, str], str]) -> None:
        """Say once (log and `ProblemReported`) when an upstream is homeproxy itself, and once when
        it no longer is."""
        for key, message in loops.items():
            if key not in self._loops:
                log.warning("%s", message)
                self.bus.publish(ProblemReported(self.clock(), f"site {key[0]}", message))
        for (site, upstream), _message in self._loops.items():
            if (site, upstream) not in loops:
                message = f"The site {site} no longer forwards to homeproxy itself ({upstream})."
                log.info("%s", message)
                self.bus.publish(ProblemReported(self.clock(), f"site {site}", message, solved=True))
        self._loops = loops

    async def _follow(self, config: Config, port: int) -> None:
        """`_reconcile`'s work, under its lock."""
        d = config.discovery
        self.directory.max_services = d.max_services
        refs = mdns_refs(config)
        wanted = wanted_names(config, port)
        if not (d.browse or wanted or refs):
            await self._shutdown(forget=True)
            for service in self.directory.snapshot():  # left by an earlier zeroconf, if any
                if self.directory.remove(service.name) is not None:
                    self.bus.publish(ServiceLost(service))
            self.error = ""
            return
        try:
            chosen = choose_interfaces(d.interfaces)
        except ValueError as e:
            await self._shutdown(forget=False)
            self._fail(str(e))
            return
        if self._aiozc is not None and chosen != self.interfaces:
            await self._change_interfaces(chosen)
        if self._aiozc is None and not await self._open(chosen):
            return
        assert self._browser is not None
        self.running = True
        self.error = ""
        self._browser.configure(
            d.service_types if d.browse else (), browse_all_types=d.browse and d.browse_all_types, refs=refs
        )
        self._want_published(wanted=wanted)

    async def _open(self, chosen: tuple[Interface, ...]) -> bool:
        """Start zeroconf on `chosen` with a browser and a publisher; False (and `error`) if it fails."""
        where = ", ".join(str(i) for i in chosen)
        try:
            aiozc = AsyncZeroconf(interfaces=zeroconf_addresses(chosen))
        except Exception as e:
            self._fail(f"mDNS could not start on {where}: {e}")
            return False
        try:
            await asyncio.wait_for(aiozc.zeroconf.async_wait_for_start(), START_TIMEOUT - 1)
        except Exception as e:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(aiozc.async_close(), 1.0)
            self._fail(f"mDNS could not start on {where}: {e or type(e).__name__}")
            return False
        self._aiozc = aiozc
        self.interfaces = chosen
        self._browser = Browser(aiozc, self.directory, self.bus.publish, clock=self.clock, identity=self.identity)
        self._publisher = Publisher(
            aiozc, self.bus.publish, addresses_of(chosen), clock=self.clock, instance_id=self.instance_id
        )
        self._pub_wanted = None
        self._pub_addresses = None
        assert self._pub_wake is not None
        self._pub_task = asyncio.get_running_loop().create_task(self._publish_worker(), name="homeproxy-mdns-publish")
        log.info("mDNS: running on %s", where)
        return True

    async def _change_interfaces(self, chosen: tuple[Interface, ...]) -> None:
        """Move the running zeroconf to other interfaces (it re-announces what it holds); restart it if
        that fails."""
        assert self._aiozc is not None
        where = ", ".join(str(i) for i in chosen)
        try:
            await asyncio.wait_for(
                self._aiozc.zeroconf.async_update_interfaces(zeroconf_addresses(chosen)), START_TIMEOUT
            )
        except Exception as e:
            log.info("mDNS: restarting on %s (%s)", where, e or type(e).__name__)
            await self._shutdown(forget=False)
            return
        log.info("mDNS: now on %s", where)
        self.interfaces = chosen
        self._want_published(addresses=addresses_of(chosen))

    async def _shutdown(self, *, forget: bool) -> None:
        """Close the publisher (goodbyes), the browser and zeroconf; with `forget`, the browser's
        services leave the directory."""
        task, self._pub_task = self._pub_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 0.5)
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                await asyncio.wait_for(publisher.close(), 1.5)
            except Exception as e:
                log.warning("mDNS: goodbyes not all sent: %s", e or type(e).__name__)
        browser, self._browser = self._browser, None
        if browser is not None:
            await browser.close(forget=forget)
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is not None:
            try:
                await asyncio.wait_for(aiozc.async_close(), 1.0)
            except Exception as e:
                log.warning("mDNS: closing zeroconf: %s", e or type(e).__name__)
            log.info("mDNS: stopped")
        self.running = False
        self.interfaces = ()

    async def _stop(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        task = self._apply_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 0.5)
        assert self._lock is not None
        async with self._lock:
            await self._shutdown(forget=False)
