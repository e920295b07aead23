"""auth: who may use a site. HTTP Basic auth here; the login page and forward auth in
`auth_login.py` and `auth_forward.py`. Second in the chain, after allow/deny.

All three modes share:

- `bypass`: clients in these networks need no login (the LAN). What the upstream
  must never see is still removed for them (basic: the Authorization header
  unless `pass_authorization`; login: homeproxy's session cookie; forward: the
  client's own copies of `forward_headers`).
- `PasswordCheck` (basic and login), in `auth_check.py`: scrypt off the loop, a
  bounded cache of verified credentials, and per-client back-off after failures.

Basic mode (RFC 7617): no or bad credentials get 401 with
`WWW-Authenticate: Basic realm="...", charset="UTF-8"`. Malformed Authorization
headers (not Basic, bad base64, no colon, not UTF-8, over 4 KiB) are a plain
401 without a check; several Authorization headers are a 400 (which one would
count?). The Authorization header is removed before the upstream unless
`pass_authorization`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable
from typing import Protocol

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler, Middleware
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.features.access import Networks, client_address, client_group
from homeproxy.engine.features.auth_check import PasswordCheck, quoted, too_many
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply

#: Longer Authorization values are refused without decoding.
MAX_AUTHORIZATION = 4096


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
