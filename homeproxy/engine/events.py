"""Events and the `EventBus` that fans them out.

Events are frozen, slotted dataclasses of primitives with past-tense names.
The bus never makes the proxy wait: `publish()` appends to one bounded queue
per subscriber (dropping the oldest event and counting the drop when full).
Subscribers drain their queue in batches, either themselves (the TUI, on a
timer) or through a `Consumer` thread that calls a handler; a handler that
raises is logged and detached, never able to hurt the proxy.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """One finished request (or WebSocket session), as the proxy saw it."""

    time: float
    """Wall-clock time the request started (seconds since the epoch)."""
    client: str
    """The client's IP (from the socket, or from X-Forwarded-For of a trusted proxy)."""
    site: str
    """Name of the site that answered, or "" for an unknown host."""
    host: str
    """The Host the client asked for (port removed, lower case)."""
    method: str
    path: str
    """The request target as sent (path and query)."""
    status: int
    bytes_in: int
    """Request body bytes read from the client."""
    bytes_out: int
    """Response body bytes written to the client."""
    duration: float
    """Seconds from the request's arrival to its last byte."""
    upstream: str
    """The upstream URL used, or "" when none was contacted."""
    cache: str = ""
    """Cache status (HIT, MISS, ...); "" while no cache is on the path."""
    error: str = ""
    """What went wrong, if anything (e.g. "upstream unreachable")."""
    request_headers: tuple[tuple[str, str], ...] = ()
    """The request's headers as the client sent them (for the TUI's request detail)."""
    response_headers: tuple[tuple[str, str], ...] = ()
    """The response's headers as homeproxy sent them."""


@dataclass(frozen=True, slots=True)
class ProblemReported:
    """Something homeproxy cannot do now that its user should know about (the access log's disk
    is full), or, with `solved`, that it can again. Published once per change, never per request."""

    time: float
    source: str
    """What has the problem: "access log"."""
    message: str
    """The whole sentence, in homeproxy's words."""
    solved: bool = False


Event = object
"""Anything frozen: `RequestCompleted` from the engine; discovery publishes its own kinds."""


class Subscription:
    """A bounded queue of events for one subscriber."""

    def __init__(
        self, name: str, maxlen: int, *, headers: bool = False, kinds: tuple[type, ...] = (RequestCompleted,)
    ) -> None:
        self.name = name
        self.kinds = frozenset(kinds)
        """The event classes this subscriber receives (by default only `RequestCompleted`)."""
        self.maxlen = maxlen
        self.headers = headers
        """This subscriber shows request and response headers (the engine copies them only then)."""
        self.dropped = 0
        """Events lost because the subscriber fell behind."""
        self._queue: deque[Event] = deque(maxlen=maxlen)

    def put(self, event: Event) -> None:
        # deque.append is atomic under the GIL; with maxlen it drops the oldest.
        if len(self._queue) >= self.maxlen:
            self.dropped += 1
        self._queue.append(event)

    def drain(self) -> list[Event]:
        """Take every queued event, oldest first."""
        out: list[Event] = []
        pop = self._queue.popleft
        try:
            while True:
                out.append(pop())
        except IndexError:
            return out


class EventBus:
    """Fans events out to subscribers without blocking the publisher."""

    def __init__(self) -> None:
        self._subs: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()
        self.wants_headers = False
        """Some subscriber shows headers: only then does the engine copy them into events."""

    def subscribe(
        self, name: str, maxlen: int = 10_000, *, headers: bool = False, kinds: tuple[type, ...] = (RequestCompleted,)
    ) -> Subscription:
        """A new subscription receiving the events of `kinds` published from now on (`headers`:
        with the request's and response's headers, which cost a copy per request)."""
        sub = Subscription(name, maxlen, headers=headers, kinds=kinds)
        with self._lock:
            self._subs = (*self._subs, sub)
            self.wants_headers = any(s.headers for s in self._subs)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
            self.wants_headers = any(s.headers for s in self._subs)

    def publish(self, event: Event) -> None:
        """Queue `event` for every subscriber. Never blocks, never raises."""
        kind = type(event)
        for sub in self._subs:
            if kind in sub.kinds:
                sub.put(event)


E = TypeVar("E")


class Consumer(Generic[E]):
    """A daemon thread that hands a subscription's events to `handler` in batches.

    `E` is what the handler takes; `kinds` must name only classes of that type
    (the bus delivers nothing else to this subscription)."""

    def __init__(
        self,
        bus: EventBus,
        name: str,
        handler: Callable[[Sequence[E]], None],
        *,
        interval: float = 0.1,
        maxlen: int = 10_000,
        kinds: tuple[type, ...] = (RequestCompleted,),
    ) -> None:
        self.bus = bus
        self.handler = handler
        self.interval = interval
        self.subscription = bus.subscribe(name, maxlen, kinds=kinds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"homeproxy-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after handing over what is queued."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.interval)
            batch = self.subscription.drain()
            if batch:
                try:
                    self.handler(cast("list[E]", batch))
                except Exception:
                    log.exception("event subscriber %s failed and was detached", self.subscription.name)
                    self.bus.unsubscribe(self.subscription)
                    return
            if stopping:
                return
