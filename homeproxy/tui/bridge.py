"""The one place where engine events cross into Textual.

The app drains its bus subscription on a timer (10 times a second) and turns
each non-empty batch into one `RequestsArrived` message: never one message per
request, so a busy proxy cannot flood the UI, and the proxy never waits for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual.message import Message

from homeproxy.config import ConfigEvent
from homeproxy.engine import RequestCompleted, Subscription


@dataclass
class RequestsArrived(Message):
    """A batch of finished requests."""

    events: Sequence[RequestCompleted]
    dropped: int
    """Events the UI's queue lost so far because it fell behind."""


@dataclass
class ConfigEventArrived(Message):
    """The store applied a change or rejected an outside edit (posted from any thread)."""

    event: ConfigEvent


def drain(subscription: Subscription) -> RequestsArrived | None:
    """The batch waiting in `subscription`, as a message, or None."""
    batch = subscription.drain()
    return RequestsArrived(batch, subscription.dropped) if batch else None
