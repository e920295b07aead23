"""The one place where engine events cross into Textual.

The app drains its bus subscription on a timer (10 times a second) into a
bounded `RequestBuffer` and turns each non-empty batch into one
`RequestsArrived` message: never one message per request, so a busy proxy
cannot flood the UI, and the proxy never waits for it. Discovery's events
(services found, updated or lost; names announced or in conflict) come down
the same subscription and leave as one `DiscoveryEventsArrived` per batch, and
the engine's upstream health changes as one `UpstreamHealthArrived`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from textual.message import Message

from homeproxy.config import ConfigEvent
from homeproxy.discovery.events import DiscoveryEvent
from homeproxy.engine import ProblemReported, RequestCompleted, Subscription, UpstreamHealthChanged


class RequestBuffer:
    """The last `maxlen` requests, each with a sequence number that never repeats.

    Views keep the sequence number of the last request they showed, so they can
    tell how many arrived since (and whether some fell off the front).
    """

    def __init__(self, maxlen: int = 10_000) -> None:
        self.maxlen = maxlen
        self._events: deque[RequestCompleted] = deque(maxlen=maxlen)
        self.total = 0
        """Requests ever added (the sequence number of the next one)."""

    def extend(self, events: Sequence[RequestCompleted]) -> None:
        self._events.extend(events)
        self.total += len(events)

    def clear(self) -> None:
        self._events.clear()

    @property
    def first(self) -> int:
        """Sequence number of the oldest request still held."""
        return self.total - len(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, index: int) -> RequestCompleted:
        return self._events[index]

    def __iter__(self) -> Iterator[RequestCompleted]:
        return iter(self._events)


@dataclass
class RequestsArrived(Message, bubble=False):
    """A batch of finished requests (already in the app's buffer)."""

    events: Sequence[RequestCompleted]
    dropped: int
    """Events the UI's queue lost so far because it fell behind."""


@dataclass
class DiscoveryEventsArrived(Message, bubble=False):
    """A batch of discovery events, oldest first (the directory already holds their services)."""

    events: Sequence[DiscoveryEvent]


@dataclass
class UpstreamHealthArrived(Message, bubble=False):
    """A batch of upstream health changes, oldest first (the app's `health` book already has them)."""

    events: Sequence[UpstreamHealthChanged]


@dataclass
class ConfigEventArrived(Message, bubble=False):
    """The store applied a change or rejected an outside edit (posted from any thread)."""

    event: ConfigEvent


@dataclass(frozen=True, slots=True)
class Drained:
    """One drain of the subscription, by kind (None for a kind with no events)."""

    requests: RequestsArrived | None = None
    discovered: DiscoveryEventsArrived | None = None
    health: UpstreamHealthArrived | None = None
    problems: tuple[ProblemReported, ...] = ()


def drain(subscription: Subscription) -> Drained:
    """The batch waiting in `subscription`, split into requests, discovery events and health changes."""
    batch = subscription.drain()
    if not batch:
        return Drained()
    requests = [e for e in batch if isinstance(e, RequestCompleted)]
    if len(requests) == len(batch):  # the usual case: nothing else to look for
        return Drained(RequestsArrived(requests, subscription.dropped))
    found = [e for e in batch if isinstance(e, DiscoveryEvent)]
    health = [e for e in batch if isinstance(e, UpstreamHealthChanged)]
    return Drained(
        RequestsArrived(requests, subscription.dropped) if requests else None,
        DiscoveryEventsArrived(found) if found else None,
        UpstreamHealthArrived(health) if health else None,
        tuple(e for e in batch if isinstance(e, ProblemReported)),
    )
