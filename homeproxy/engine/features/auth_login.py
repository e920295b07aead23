"""auth, login mode: homeproxy's own sign-in form and a signed session cookie.

For apps that use the Authorization header themselves (Basic auth would break
them): the app's Authorization passes untouched, and homeproxy's identity
travels in its own cookie, which the upstream never sees.

- A browser (`text/html` in Accept) asking with GET or HEAD and no valid session
  gets a small, self-contained sign-in form (no external assets, everything
  escaped, its own strict Content-Security-Policy, not frameable), status 401.
  Other requests get the plain 401. Both carry
  `WWW-Authenticate: Cookie realm="...", form-action="/.homeproxy/login", cookie-name="homeproxy_session"`
  (the scheme of draft-broyer-http-cookie-auth; a 401 must name one, RFC 9110 section 15.5.2).
- The form posts to `/.homeproxy/login` on the same host with a `next` field, a
  relative path on this site (anything else becomes `/`: no open redirect).
  Cross-site posts are refused (Sec-Fetch-Site, then Origin, then Referer must
  name this host; the cookie is SameSite=Lax besides). Wrong passwords count
  toward the client's back-off like Basic auth's (429 with Retry-After).
- Success sets `homeproxy_session` = `v1.<payload>.<mac>`: the payload holds the
  user, issue and expiry times and the scope (this site, or `cookie_domain`);
  the MAC is HMAC-SHA256 under the key in `<data dir>/session.key` (32 random
  bytes made on first use, 0600, the dir 0700) over the payload and the user's
  stored hash, so changing a password or removing a user ends their sessions,
  and a site with other users for the same name does not accept the cookie.
  Shortening `session_ttl` shortens live sessions too. The cookie is
  `HttpOnly; SameSite=Lax; Path=/; Max-Age=session_ttl`, plus `Domain=` for
  `cookie_domain` (one login for every site under it that has the same users)
  and `Secure` when the browser's connection is HTTPS (TLS here, or a trusted
  proxy's X-Forwarded-Proto).
- `/.homeproxy/logout` (GET or POST) clears the cookie and sends the browser to `/`.
  Sessions are not stored server-side: a copied cookie stays good until it
  expires; delete `session.key` to end every session at once.
"""

from __future__ import annotations

import asyncio
import binascii
import hmac
import json
import logging
import math
from html import escape
from urllib.parse import parse_qs, urlsplit

from multidict import CIMultiDict

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.features.access import client_group
from homeproxy.engine.features.auth_check import PasswordCheck, quoted, too_many
from homeproxy.engine.features.auth_login_page import (
    _FORM,
    _FORM_HEADERS,
    LOGIN_PATH,
    LOGOUT_PATH,
    _redirect,
    safe_next,
    wants_html,
)
from homeproxy.engine.features.auth_session import COOKIE, _mac, _unb64, cookie_values, load_or_create_key, make_token
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply

log = logging.getLogger(__name__)

#: Bigger login posts are refused unread (413).
MAX_FORM = 16 * 1024
#: Longer cookie values are not even parsed.
MAX_TOKEN = 4096
#: Seconds a client has to send the login form's body.
FORM_TIMEOUT = 10.0
_STATE_KEY = "auth.session_key"


class LoginMode:
    """The login-page auth mode (see the module docstring)."""

    def __init__(self, site: Site, ctx: FeatureContext, check: PasswordCheck) -> None:
        settings = site.auth
        self.check = check
        self.ctx = ctx
        self.realm = settings.realm
        self.ttl = max(1, int(settings.session_ttl))
        self.domain = settings.cookie_domain.lower().strip(".")
        self.site_scope = f"s:{site.name}"
        self.scopes = frozenset({self.site_scope} | ({f"d:{self.domain}"} if self.domain else set()))
        self.challenge = (
            f"Cookie realm={quoted(self.realm)}, form-action={quoted(LOGIN_PATH)}, cookie-name={quoted(COOKIE)}"
        )

    # --- the chain ------------------------------------------------------------------------

    def strip(self, ex: Exchange) -> None:
        """Remove homeproxy's session cookie from the request (the rest of Cookie stays)."""
        lines = ex.headers.getall("Cookie", ())
        if not cookie_values(lines):
            return
        kept = []
        for line in lines:
            for part in line.split(";"):
                if part.strip() and part.strip().partition("=")[0].strip() != COOKIE:
                    kept.append(part.strip())
        headers = ex.edit_headers()
        headers.popall("Cookie", None)
        if kept:
            # Several Cookie lines become one, as RFC 9113 section 8.2.3 says to for HTTP/1.1.
            headers["Cookie"] = "; ".join(kept)

    async def __call__(self, ex: Exchange, nxt: Handler) -> Reply:
        path = ex.request.path
        if path == LOGIN_PATH:
            return await self._login(ex)
        if path == LOGOUT_PATH:
            return self._logout(ex)
        key = await self._key(ex)
        if key is None:
            return error_reply(500, ex.request)
        if self._session_user(ex, key) is not None:
            self.strip(ex)
            return await nxt(ex)
        if ex.request.method in ("GET", "HEAD") and wants_html(ex):
            return self._form(401, next_path=ex.request.raw_path)
        reply = error_reply(401, ex.request)
        reply.headers["WWW-Authenticate"] = self.challenge
        return reply

    # --- sessions -------------------------------------------------------------------------

    async def _key(self, ex: Exchange) -> bytes | None:
        key = self.ctx.state.get(_STATE_KEY)
        if isinstance(key, bytes):
            return key
        try:
            key = await asyncio.to_thread(load_or_create_key, self.ctx.data_dir)
        except (OSError, ValueError) as e:
            log.error("login pages cannot work without the session key: %s", e)
            ex.error = "auth: session key unusable"
            return None
        self.ctx.state[_STATE_KEY] = key
        return key

    def _session_user(self, ex: Exchange, key: bytes) -> str | None:
        now = self.ctx.clock()
        for value in cookie_values(ex.request.headers.getall("Cookie", ())):
            user = self._valid(key, value, now)
            if user is not None:
                return user
        return None

    def _valid(self, key: bytes, token: str, now: float) -> str | None:
        """The user of `token` if it is genuine, unexpired and for this site; else None."""
        if len(token) > MAX_TOKEN:
            return None
        version, _, rest = token.partition(".")
        encoded, _, mac = rest.partition(".")
        if version != "v1" or not encoded or not mac:
            return None
        try:
            payload = _unb64(encoded)
            user, issued, expires, scope = json.loads(payload)
            given = _unb64(mac)
        except (binascii.Error, ValueError, TypeError):
            return None
        if not (
            isinstance(user, str) and isinstance(issued, int) and isinstance(expires, int) and isinstance(scope, str)
        ):
            return None
        stored = self.check.stored_hash(user)
        if stored is None or not hmac.compare_digest(_mac(key, payload, stored), given):
            return None
        if now >= expires or now >= issued + self.ttl or scope not in self.scopes:
            return None
        return user

    def _cookie_scope(self, ex: Exchange) -> tuple[str, str]:
        """(scope, Domain attribute) for a cookie set on this request's host."""
        if self.domain and (ex.host == self.domain or ex.host.endswith("." + self.domain)):
            return f"d:{self.domain}", f"; Domain={self.domain}"
        return self.site_scope, ""

    def _secure(self, ex: Exchange) -> str:
        proto = ex.request.headers.get("X-Forwarded-Proto", "") if ex.trusted_peer else ""
        return "; Secure" if ex.request.secure or proto.strip().lower() == "https" else ""

    def _set_cookie(self, ex: Exchange, key: bytes, user: str, stored: str) -> str:
        now = math.floor(self.ctx.clock())
        scope, domain = self._cookie_scope(ex)
        token = make_token(key, user, now, now + self.ttl, scope, stored)
        return f"{COOKIE}={token}; Path=/; Max-Age={self.ttl}{domain}; HttpOnly; SameSite=Lax{self._secure(ex)}"

    # --- the reserved paths ---------------------------------------------------------------

    async def _login(self, ex: Exchange) -> Reply:
        request = ex.request
        if request.method in ("GET", "HEAD"):
            next_path = safe_next(request.query.get("next", "/"))
            key = await self._key(ex)
            if key is None:
                return error_reply(500, request)
            if self._session_user(ex, key) is not None:
                return _redirect(next_path)
            return self._form(200, next_path=next_path)
        if request.method != "POST":
            reply = error_reply(405, request)
            reply.headers["Allow"] = "GET, HEAD, POST"
            return reply
        if not self._same_site(ex):
            ex.error = "auth: cross-site login post refused"
            return error_reply(403, request)
        form = await self._read_form(ex)
        if isinstance(form, Reply):
            return form
        next_path = safe_next(form.get("next", "/"))
        user, password = form.get("username", ""), form.get("password", "")
        if not user or not password:
            return self._form(401, next_path=next_path, message="Enter your user name and password.", user=user)
        verdict = await self.check.verify(client_group(ex.client), user, password.encode("utf-8"))
        if verdict.retry_after:
            reply = too_many(ex, verdict)
            if wants_html(ex):
                reply = self._form(
                    429, next_path, f"Too many attempts. Try again in {verdict.retry_after} s.", user=user
                )
                reply.headers["Retry-After"] = str(verdict.retry_after)
            return reply
        if not verdict.ok:
            ex.error = "auth: wrong user name or password"
            return self._form(401, next_path, "Wrong user name or password.", user=user)
        key = await self._key(ex)
        stored = self.check.stored_hash(user)
        if key is None or stored is None:
            return error_reply(500, request)
        reply = _redirect(next_path)
        reply.headers.add("Set-Cookie", self._set_cookie(ex, key, user, stored))
        return reply

    def _logout(self, ex: Exchange) -> Reply:
        reply = _redirect("/")
        secure = self._secure(ex)
        gone = f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}"
        reply.headers.add("Set-Cookie", gone)
        _, domain = self._cookie_scope(ex)
        if domain:
            reply.headers.add("Set-Cookie", f"{COOKIE}=; Path=/; Max-Age=0{domain}; HttpOnly; SameSite=Lax{secure}")
        return reply

    def _same_site(self, ex: Exchange) -> bool:
        """The login post comes from a page on this host (CSRF protection for the form).

        Browsers send Sec-Fetch-Site and Origin with every POST; Referer is the fallback
        for old ones. A client that sends none of them is not a browser that could be
        tricked into posting, so it may log in."""
        headers = ex.request.headers
        fetch_site = headers.get("Sec-Fetch-Site", "").lower()
        if fetch_site and fetch_site not in ("same-origin", "none"):
            return False
        hosts = {headers.get("Host", "").lower()}
        if ex.trusted_peer and "X-Forwarded-Host" in headers:
            hosts.add(headers["X-Forwarded-Host"].lower())
        hosts.discard("")
        origin = headers.get("Origin")
        if origin is not None:
            return urlsplit(origin).netloc.lower() in hosts if origin != "null" else False
        referer = headers.get("Referer")
        if referer is not None:
            return urlsplit(referer).netloc.lower() in hosts
        return True

    async def _read_form(self, ex: Exchange) -> dict[str, str] | Reply:
        """The login form's fields (each given once), or the reply that says what is wrong."""
        request = ex.request
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            ex.error = "auth: login post is not a form"
            return error_reply(400, request)
        if (request.content_length or 0) > MAX_FORM:
            ex.error = "auth: login post too large"
            return error_reply(413, request)
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.send_continue()
        body = b""
        try:
            async with asyncio.timeout(FORM_TIMEOUT):
                while len(body) <= MAX_FORM:
                    chunk = await request.content.read(MAX_FORM + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
        except TimeoutError:
            ex.error = "auth: login post too slow"
            return error_reply(400, request)
        ex.bytes_in = len(body)
        if len(body) > MAX_FORM:
            ex.error = "auth: login post too large"
            return error_reply(413, request)
        try:
            fields = parse_qs(
                body.decode("ascii"), keep_blank_values=True, max_num_fields=16, encoding="utf-8", errors="strict"
            )
        except (UnicodeDecodeError, ValueError):
            ex.error = "auth: login post malformed"
            return error_reply(400, request)
        if any(len(v) != 1 for v in fields.values()):
            ex.error = "auth: login post repeats a field"
            return error_reply(400, request)
        return {k: v[0] for k, v in fields.items()}

    def _form(self, status: int, next_path: str, message: str = "", *, user: str = "") -> Reply:
        html = _FORM.format(
            realm=escape(self.realm),
            message=f'<p class="error" role="alert">{escape(message)}</p>' if message else "",
            action=escape(LOGIN_PATH),
            next=escape(safe_next(next_path)),
            user=escape(user),
            autofocus_user="" if user else " autofocus",
            autofocus_pw=" autofocus" if user else "",
        )
        headers: CIMultiDict[str] = CIMultiDict(_FORM_HEADERS)
        if status == 401:
            headers["WWW-Authenticate"] = self.challenge
        return Reply(status, headers, html.encode("utf-8"))
