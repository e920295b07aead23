"""auth: the password check Basic and login modes share, with its per-client back-off.

- `PasswordCheck`: passwords are stored only as scrypt hashes.
  A check costs about 0.1 s of CPU, so it runs in a thread, never on the loop;
  concurrent checks of the same credentials share one run; a few are allowed at
  once (each takes 32 MiB), more get 429. Credentials that verified are
  remembered for a while as an HMAC under a per-process random key (with the
  stored hash in the MAC, so a changed password stops matching), compared in
  constant time, so a browser's every request does not pay for scrypt again.
  An unknown user costs the same scrypt run as a known one (no user enumeration
  by timing), and user names are compared in constant time too.
- Failed checks are counted per client (in `FeatureContext.state`, so a config
  apply does not reset them), an IPv4 address or an IPv6 /64 (`client_group`: a
  host that holds a /64 could take a fresh address per guess): after `FREE_FAILURES` the client waits 1 s, then
  2, 4, ... up to `MAX_BACKOFF`, and its attempts meanwhile get 429 with
  Retry-After, without a check (even credentials that would be right: a
  throttled client learns nothing). A success forgets the client's failures.

`too_many` (the 429 for a throttled or busy check) and `quoted` (a challenge's realm) are here
too, since both modes use them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from homeproxy.config.model import Site
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply
from homeproxy.passwords import verify_password

#: Failed checks a client may make before it has to wait.
FREE_FAILURES = 5
#: The longest wait after repeated failures, in seconds.
MAX_BACKOFF = 300.0
#: Failures older than this (seconds, counted from the last one) are forgotten.
FAILURE_WINDOW = 900.0
#: Clients whose failures are remembered, per site (the least recently failed go first).
MAX_TRACKED = 10_000
#: How long verified credentials are remembered, in seconds.
VERIFIED_TTL = 600.0
#: Verified credentials remembered per site.
MAX_VERIFIED = 1024
#: scrypt runs at once, over all sites (each needs 32 MiB), and per client.
MAX_CHECKS = 4
MAX_CHECKS_PER_CLIENT = 2

#: Keys the verified-credentials MACs; new every process, never stored.
_PROCESS_KEY = secrets.token_bytes(32)
#: What an unknown user's password is checked against, so that it costs the same as a known one.
_DUMMY_HASH = "scrypt$32768$8$1$Zf7gSnuI4aUanklZewhCtA$QlIpisEe4Tzdfao0Kj5ZQW013VRZblLE+oDgG33JNrk"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a password check."""

    ok: bool
    retry_after: int = 0
    """Seconds the client must wait (429) when it is throttled or homeproxy is busy; 0 otherwise."""
    busy: bool = False
    """The 429 is because too many checks run at once, not because of this client's failures."""


class FailureThrottle:
    """Failed checks per client: (count, time of the last failure, blocked until)."""

    def __init__(self, max_tracked: int = MAX_TRACKED) -> None:
        self.max_tracked = max_tracked
        self._table: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def wait(self, key: str, now: float) -> float:
        """Seconds `key` must still wait before its next check (0.0: it may go ahead)."""
        self._forget_idle(now)
        entry = self._table.get(key)
        return max(0.0, entry[2] - now) if entry is not None else 0.0

    def fail(self, key: str, now: float) -> None:
        count, last, until = self._table.pop(key, (0, now, now))
        if now - last > FAILURE_WINDOW:
            count = 0
        count += 1
        if count >= FREE_FAILURES:
            until = now + min(MAX_BACKOFF, 2.0 ** (count - FREE_FAILURES))
        self._table[key] = (count, now, until)
        while len(self._table) > self.max_tracked:
            self._table.popitem(last=False)

    def clear(self, key: str) -> None:
        self._table.pop(key, None)

    def _forget_idle(self, now: float) -> None:
        """Drop the oldest entries whose window has passed and who wait no more (a few per call)."""
        for _ in range(8):
            if not self._table:
                return
            key, (_, last, until) = next(iter(self._table.items()))
            if now - last <= FAILURE_WINDOW or until > now:
                return
            del self._table[key]


class _Gauge:
    """How many scrypt checks run right now (shared by every site of an engine)."""

    __slots__ = ("running",)

    def __init__(self) -> None:
        self.running = 0


class PasswordCheck:
    """Checks user names and passwords against a site's scrypt hashes; see the module docstring."""

    def __init__(self, site: Site, ctx: FeatureContext) -> None:
        self._users = tuple((name.encode("utf-8"), stored) for name, stored in site.auth.users)
        self._clock = ctx.clock
        throttle = ctx.state.setdefault(f"auth.throttle:{site.name}", FailureThrottle())
        verified = ctx.state.setdefault(f"auth.verified:{site.name}", OrderedDict())
        gauge = ctx.state.setdefault("auth.checks", _Gauge())
        assert isinstance(throttle, FailureThrottle) and isinstance(gauge, _Gauge)
        self.throttle = throttle
        self._verified: OrderedDict[str, tuple[bytes, float]] = verified
        self._gauge = gauge
        self._pending: dict[bytes, asyncio.Task[bool]] = {}
        self._per_client: dict[str, int] = {}

    def stored_hash(self, user: str) -> str | None:
        """The stored hash of `user` (None if there is no such user); names compared in constant time."""
        wanted = user.encode("utf-8")
        found = None
        for name, stored in self._users:
            if hmac.compare_digest(name, wanted):
                found = stored
        return found

    async def verify(self, client: str, user: str, password: bytes) -> Verdict:
        """Whether `password` is `user`'s, as seen from `client` (a key from `client_group`)."""
        now = self._clock()
        wait = self.throttle.wait(client, now)
        if wait > 0.0:
            return Verdict(False, max(1, math.ceil(wait)))
        stored = self.stored_hash(user)
        mac = hmac.new(
            _PROCESS_KEY, b"\0".join((user.encode("utf-8"), password, (stored or "").encode())), hashlib.sha256
        ).digest()
        if stored is not None:
            seen = self._verified.get(user)
            if seen is not None and hmac.compare_digest(seen[0], mac) and seen[1] > now:
                return Verdict(True)
        task = self._pending.get(mac)
        if task is None:
            if self._gauge.running >= MAX_CHECKS or self._per_client.get(client, 0) >= MAX_CHECKS_PER_CLIENT:
                return Verdict(False, 1, busy=True)
            # Counted from now (not when the task first runs), and released by a done callback,
            # which runs even for a task cancelled before it started.
            self._gauge.running += 1
            self._per_client[client] = self._per_client.get(client, 0) + 1
            task = asyncio.ensure_future(self._check(client, user, password, stored, mac))
            task.add_done_callback(lambda _: self._release(client, mac))
            self._pending[mac] = task
        # shield: one waiter going away must not cancel the check the others wait for.
        return Verdict(await asyncio.shield(task))

    async def _check(self, client: str, user: str, password: bytes, stored: str | None, mac: bytes) -> bool:
        matched = await asyncio.to_thread(verify_password, password, stored or _DUMMY_HASH)
        now = self._clock()
        ok = matched and stored is not None
        if ok:
            self.throttle.clear(client)
            self._verified.pop(user, None)
            self._verified[user] = (mac, now + VERIFIED_TTL)
            while len(self._verified) > MAX_VERIFIED:
                self._verified.popitem(last=False)
        else:
            self.throttle.fail(client, now)
        return ok

    def _release(self, client: str, mac: bytes) -> None:
        self._gauge.running -= 1
        left = self._per_client.pop(client, 1) - 1
        if left > 0:
            self._per_client[client] = left
        self._pending.pop(mac, None)


def too_many(ex: Exchange, verdict: Verdict) -> Reply:
    """429 with Retry-After, for a throttled client (or when too many checks run at once)."""
    ex.error = "auth: too many password checks at once" if verdict.busy else "auth: too many failed logins"
    reply = error_reply(429, ex.request)
    reply.headers["Retry-After"] = str(verdict.retry_after)
    return reply


def quoted(text: str) -> str:
    """`text` as an HTTP quoted-string (RFC 9110 section 5.6.4)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
