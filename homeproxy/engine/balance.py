"""How a site with several upstreams orders them for one request: a small table of policies.

`Balancer.order(candidates, client, sticky)` puts the indexes of the upstreams that may take
the request now (up, not backups unless every primary is down: the `Forwarder` chooses the
candidates) in the order to try them, the one to use first at the front; the `Forwarder`
goes down the list while upstreams refuse, so every policy fails over the same way.
`load(i)` is upstream `i`'s requests in flight now; `sticky` is the value of the `cookie`
policy's cookie, if the client sent one.
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable, Sequence

Load = Callable[[int], int]


def sticky_value(url: str) -> str:
    """What the `cookie` policy's cookie says for upstream `url`: a short hash (not the address)."""
    return f"{zlib.crc32(url.encode()):08x}"


class Balancer:
    """One site's (or route's) policy over its upstreams."""

    def __init__(self, policy: str, urls: Sequence[str], weights: Sequence[int], load: Load) -> None:
        self.load = load
        self.weights = tuple(weights)
        self._turn = itertools.count()
        self._current = [0] * len(urls)
        """`weighted`: each upstream's running score (smooth weighted round robin)."""
        self._hashes = tuple(url.encode() for url in urls)
        self.sticky = {sticky_value(url): i for i, url in enumerate(urls)}
        """`cookie`: the cookie's value -> the upstream's index."""
        self.policy = policy
        self._policy = _POLICIES[policy]

    def order(self, candidates: list[int], client: str, sticky: str = "") -> list[int]:
        if len(candidates) < 2:
            return candidates
        return self._policy(self, candidates, client, sticky)

    def _rotated(self, candidates: list[int]) -> list[int]:
        start = next(self._turn) % len(candidates)
        return candidates[start:] + candidates[:start]

    # --- the policies ------------------------------------------------------------------------

    def round_robin(self, candidates: list[int], client: str, sticky: str) -> list[int]:
        """Each in turn."""
        return self._rotated(candidates)

    def weighted(self, candidates: list[int], client: str, sticky: str) -> list[int]:
        """In proportion to the weights, evenly spread (nginx's smooth weighted round robin):
        weights 3 and 1 give a a b a, a a b a, ... The rest follow, heaviest first."""
        current, weights = self._current, self.weights
        total = 0
        for i in candidates:
            current[i] += weights[i]
            total += weights[i]
        best = max(candidates, key=current.__getitem__)
        current[best] -= total
        return [best, *sorted((i for i in candidates if i != best), key=lambda i: -weights[i])]

    def first(self, candidates: list[int], client: str, sticky: str) -> list[int]:
        """The first listed that takes the connection: the others are the backups, in order."""
        return candidates

    def least_conn(self, candidates: list[int], client: str, sticky: str) -> list[int]:
        """The fewest requests in flight first; ties in turn (so idle upstreams share the load)."""
        return sorted(self._rotated(candidates), key=self.load)

    def ip_hash(self, candidates: list[int], client: str, sticky: str) -> list[int]:
        """The same client address to the same upstream. Rendezvous hashing: when one goes
        down, only its clients move, and they come back when it does."""
        key = client.encode()
        return sorted(candidates, key=lambda i: -zlib.crc32(self._hashes[i], zlib.crc32(key)))

    def cookie(self, candidates: list[int], client: str, sticky: str) -> list[int]:
        """The upstream the browser's cookie names, while it is a candidate; else in turn
        (the `Forwarder` then sets the cookie to the one that answered)."""
        order = self._rotated(candidates)
        chosen = self.sticky.get(sticky)
        if chosen is not None and chosen in candidates:
            order.remove(chosen)
            order.insert(0, chosen)
        return order

    def random_two(self, candidates: list[int], client: str, sticky: str) -> list[int]:
        """Two at random, the less busy first (the power of two choices); then the rest in turn."""
        a, b = random.sample(candidates, 2)
        best = a if self.load(a) <= self.load(b) else b
        return [best, *(i for i in self._rotated(candidates) if i != best)]


_POLICIES: dict[str, Callable[[Balancer, list[int], str, str], list[int]]] = {
    "round_robin": Balancer.round_robin,
    "weighted": Balancer.weighted,
    "first": Balancer.first,
    "least_conn": Balancer.least_conn,
    "ip_hash": Balancer.ip_hash,
    "cookie": Balancer.cookie,
    "random_two": Balancer.random_two,
}
