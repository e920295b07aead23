"""How a site with several upstreams orders them for one request: a small table of policies.

`Balancer.order(client)` gives the indexes of the site's (or route's) upstreams, the one to
use first at the front; the `Forwarder` goes down the list while upstreams refuse the
connection, so every policy fails over the same way. `load(i)` is upstream `i`'s requests in
flight now (the pool's count, shared by every site that reaches that upstream).
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable

Load = Callable[[int], int]


def _rotated(start: int, n: int) -> list[int]:
    return [(start + k) % n for k in range(n)]


class Balancer:
    """One site's (or route's) policy over `n` upstreams."""

    def __init__(self, policy: str, n: int, load: Load) -> None:
        self.n = n
        self.load = load
        self._turn = itertools.count()
        self._policy = _POLICIES[policy]

    def order(self, client: str) -> list[int]:
        if self.n == 1:
            return [0]
        return self._policy(self, client)

    # --- the policies ------------------------------------------------------------------------

    def round_robin(self, client: str) -> list[int]:
        """Each in turn."""
        return _rotated(next(self._turn) % self.n, self.n)

    def first(self, client: str) -> list[int]:
        """The first listed that takes the connection: the others are the backups, in order."""
        return list(range(self.n))

    def least_conn(self, client: str) -> list[int]:
        """The fewest requests in flight first; ties in turn (so idle upstreams share the load)."""
        return sorted(self.round_robin(client), key=self.load)

    def ip_hash(self, client: str) -> list[int]:
        """The same client address to the same upstream (while the list is the same)."""
        return _rotated(zlib.crc32(client.encode()) % self.n, self.n)

    def random_two(self, client: str) -> list[int]:
        """Two at random, the less busy first (the power of two choices); then the rest in turn."""
        a, b = random.sample(range(self.n), 2)
        best = a if self.load(a) <= self.load(b) else b
        return [best, *(i for i in self.round_robin(client) if i != best)]


_POLICIES: dict[str, Callable[[Balancer, str], list[int]]] = {
    "round_robin": Balancer.round_robin,
    "first": Balancer.first,
    "least_conn": Balancer.least_conn,
    "ip_hash": Balancer.ip_hash,
    "random_two": Balancer.random_two,
}
