"""auth: who may use a site. HTTP Basic auth here; the login page and forward auth in
`auth_login.py` and `auth_forward.py`. Second in the chain, after allow/deny.

All three modes share:

- `bypass`: clients in these networks need no login (the LAN). What the upstream
  must never see is still removed for them (basic: the Authorization header
  unless `pass_authorization`; login: homeproxy's session cookie; forward: the
  client's own copies of `forward_headers`).
- `PasswordCheck` (basic and login): passwords are stored only as scrypt hashes.
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

Basic mode (RFC 7617): no or bad credentials get 401 with
`WWW-Authenticate: Basic realm="...", charset="UTF-8"`. Malformed Authorization
headers (not Basic, bad base64, no colon, not UTF-8, over 4 KiB) are a plain
401 without a check; several Authorization headers are a 400 (which one would
count?). The Authorization header is removed before the upstream unless
`pass_authorization`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import secrets
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.features.access import Networks, client_address, client_group
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
#: Longer Authorization values are refused without decoding.
MAX_AUTHORIZATION = 4096

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


class BadCredentials(ValueError):
    """An Authorization header that is not usable Basic credentials (the message says why)."""


def parse_basic(value: str) -> tuple[str, bytes]:
    """(user, password) from a Basic Authorization value (RFC 7617), or `BadCredentials`."""
    if len(value) > MAX_AUTHORIZATION:
        raise BadCredentials("Authorization header too long")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        raise BadCredentials("Authorization is not Basic")
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadCredentials("Basic credentials are not base64") from None
    user, colon, password = raw.partition(b":")
    if not colon:
        raise BadCredentials("Basic credentials have no colon")
    try:
        # We announce charset="UTF-8" (RFC 7617 section 2.1); anything else is refused, not guessed.
        password.decode("utf-8")
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        raise BadCredentials("Basic credentials are not UTF-8") from None


class Mode(Protocol):
    """One auth mode: checks a request, and cleans one that skips the check (bypass)."""

    def strip(self, ex: Exchange) -> None:
        """Remove from the request what the upstream must never see."""

    def __call__(self, ex: Exchange, nxt: Handler, /) -> Awaitable[Reply]: ...


class _Basic:
    """HTTP Basic auth (RFC 7617)."""

    def __init__(self, site: Site, ctx: FeatureContext) -> None:
        self.check = PasswordCheck(site, ctx)
        self.pass_authorization = site.auth.pass_authorization
        self.challenge = f'Basic realm={quoted(site.auth.realm)}, charset="UTF-8"'

    def strip(self, ex: Exchange) -> None:
        if not self.pass_authorization and "Authorization" in ex.headers:
            ex.edit_headers().popall("Authorization", None)

    def unauthorized(self, ex: Exchange, why: str = "") -> Reply:
        ex.error = why
        reply = error_reply(401, ex.request)
        reply.headers["WWW-Authenticate"] = self.challenge
        return reply

    async def __call__(self, ex: Exchange, nxt: Handler) -> Reply:
        values = ex.request.headers.getall("Authorization", ())
        if not values:
            return self.unauthorized(ex)
        if len(values) > 1:
            ex.error = "auth: several Authorization headers"
            return error_reply(400, ex.request)
        try:
            user, password = parse_basic(values[0])
        except BadCredentials as e:
            return self.unauthorized(ex, f"auth: {e}")
        verdict = await self.check.verify(client_group(ex.client), user, password)
        if verdict.retry_after:
            return too_many(ex, verdict)
        if not verdict.ok:
            # The user name is not logged: people type passwords into it.
            return self.unauthorized(ex, "auth: wrong user name or password")
        self.strip(ex)
        return await nxt(ex)


def make_auth(site: Site, ctx: FeatureContext) -> Middleware:
    """The auth middleware of `site`, in its `site.auth.mode`."""
    settings = site.auth
    mode: Mode
    if settings.mode == "basic":
        mode = _Basic(site, ctx)
    elif settings.mode == "login":
        from homeproxy.engine.features.auth_login import LoginMode

        mode = LoginMode(site, ctx, PasswordCheck(site, ctx))
    elif settings.mode == "forward":
        from homeproxy.engine.features.auth_forward import ForwardMode

        mode = ForwardMode(site, ctx)
    else:
        raise ValueError(f"unknown auth mode {settings.mode!r}")
    bypass = Networks(settings.bypass)
    if not bypass:
        return mode

    async def auth(ex: Exchange, nxt: Handler) -> Reply:
        if bypass.contains(client_address(ex.client)):
            mode.strip(ex)
            return await nxt(ex)
        return await mode(ex, nxt)

    return auth
