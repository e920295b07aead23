"""`RequestRows`: the request log's filtered view of a `RequestBuffer`, a bounded ring (pure Python, no Textual)."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from homeproxy.engine import RequestCompleted

if TYPE_CHECKING:
    from homeproxy.tui.bridge import RequestBuffer  # the module also holds Textual messages

Row = tuple[int, RequestCompleted]
"""A request in the view: its sequence number in the buffer, and the event."""


class RequestRows:
    """The requests of a `RequestBuffer` that a filter matched, as big as the buffer at most.

    It holds the events themselves, so a paused or scrolled-back view keeps
    what it shows while the buffer moves on.
    """

    def __init__(self, source: RequestBuffer) -> None:
        self.source = source
        # Two parallel deques rather than one of (seq, event) tuples: ints are not
        # tracked by the garbage collector, and ten thousand short-lived tuples
        # that live long enough to reach the oldest generation make its (slow,
        # GIL-holding) collections frequent.
        self.seqs: deque[int] = deque(maxlen=source.maxlen)
        self.events: deque[RequestCompleted] = deque(maxlen=source.maxlen)
        self.next = source.first
        """Sequence number of the first request not looked at yet."""
        self.floor = 0
        """Requests before this sequence number were cleared."""

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, index: int) -> Row:
        return self.seqs[index], self.events[index]

    @property
    def rows(self) -> list[Row]:
        """The rows (a copy), oldest first."""
        return list(zip(self.seqs, self.events, strict=True))

    @property
    def waiting(self) -> int:
        """Requests in the buffer not taken in yet (while paused)."""
        return max(0, self.source.total - max(self.next, self.floor))

    def take(self, matches: Callable[[RequestCompleted], bool]) -> tuple[list[int], int]:
        """Take in the matching requests that arrived since the last call: their sequence numbers,
        and how many requests left the buffer before they could be looked at."""
        src = self.source
        missed = 0
        start = max(self.next, self.floor)
        if start < src.first:
            missed = src.first - start
            start = src.first
        end = src.total
        seqs: list[int] = []
        if start < end:
            first = src.first
            seqs = [seq for seq in range(start, end) if matches(src[seq - first])]
            self.next = end
        return seqs, missed

    def extend(self, seqs: list[int]) -> int:
        """Append these requests of the buffer; how many old rows fell off the front."""
        src = self.source
        first = src.first
        maxlen = self.seqs.maxlen
        assert maxlen is not None
        dropped = max(0, len(self.seqs) + len(seqs) - maxlen)
        self.seqs.extend(seqs)
        self.events.extend(src[seq - first] for seq in seqs)
        return dropped

    def rebuild(self, matches: Callable[[RequestCompleted], bool], paused: bool) -> None:
        """Rebuild from the buffer (the filter changed)."""
        src = self.source
        start = max(src.first, self.floor)
        end = self.next if paused else src.total
        first = src.first
        seqs = [seq for seq in range(start, end) if matches(src[seq - first])]
        self.seqs = deque(seqs, maxlen=src.maxlen)
        self.events = deque((src[seq - first] for seq in seqs), maxlen=src.maxlen)
        self.next = max(self.next, end)

    def index(self, seq: int) -> int | None:
        """Where the request `seq` is, if it is shown."""
        index = bisect_left(self.seqs, seq)
        return index if index < len(self.seqs) and self.seqs[index] == seq else None

    def clear(self, paused: bool) -> None:
        """Forget the rows (the buffer keeps them); newer requests still come in."""
        self.floor = self.next if paused else self.source.total
        self.seqs.clear()
        self.events.clear()
