"""Resolving the names a `Browser` keeps: a task per name, coalesced updates, back-off while unresolved."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace

from zeroconf import BadTypeInNameException, DNSQuestionType, Zeroconf

from homeproxy.discovery.directory import ServiceDirectory
from homeproxy.discovery.events import ServiceFound, ServiceUpdated
from homeproxy.discovery.resolved import _service_info, service_from_info
from homeproxy.discovery.service import DiscoveredService, SelfIdentity

log = logging.getLogger("homeproxy.discovery.browse")  # one logger name for the whole browser

Publish = Callable[[object], None]

MAX_RETRY_DELAY = 600.0


class _Resolving:
    """The `Browser` part that resolves names into the directory (on zeroconf's loop; never waits there)."""

    directory: ServiceDirectory
    resolve_timeout: float
    retry_delay: float
    _zc: Zeroconf
    _loop: asyncio.AbstractEventLoop
    _publish: Publish
    _clock: Callable[[], float]
    _identity: SelfIdentity | None
    _types: frozenset[str]
    _all: bool
    _revealed: set[str]
    _refs: dict[str, str]
    _known: dict[str, tuple[str, str]]
    _tasks: dict[str, asyncio.Task[None]]
    _dirty: set[str]
    _retries: dict[str, asyncio.TimerHandle]
    _attempts: dict[str, int]
    _sem: asyncio.Semaphore
    _closed: bool

    def _mark(self, service: DiscoveredService) -> DiscoveredService:
        own = self._identity is not None and self._identity.recognizes(service)
        return service if own == service.own else replace(service, own=own)

    def _keeps(self, type_: str, key: str) -> bool:
        return type_ in self._types or (self._all and type_ in self._revealed) or key in self._refs

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
