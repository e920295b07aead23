"""auth, forward mode: ask an auth service (Authelia, Authentik, oauth2-proxy...) about
every request, as Traefik's ForwardAuth, Caddy's forward_auth and nginx's auth_request do.

- homeproxy sends the auth service a GET with the client's headers (minus hop-by-hop
  ones and the body's) and says what the original request was:
  `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`, `-For` (the client IP homeproxy
  believes, alone), `X-Real-IP`, `X-Original-URL` and `X-Original-Method`. A client's
  own copies of these are replaced (a trusted proxy's Proto and Host are believed,
  as when forwarding). The path in `X-Forwarded-Uri` and `X-Original-URL` is the normal
  form routes are matched on (`paths.normalize_path`; the query as sent): an auth rule for
  `/admin` also sees `/%61dmin`, `//admin` and `/x/../admin`, which reach the same route.
  The client's cookies and Authorization go along: they are how the auth service knows
  the user.
- A 2xx answer lets the request through, with the `forward_headers`
  (Remote-User, Remote-Groups, ...) of the answer set on it. The client's own
  copies of those headers are always removed first, so a client can never
  claim to be someone (not even from a `bypass` network).
- Any other answer goes back to the client as it is (401 with WWW-Authenticate,
  302 to the login portal with its Location and Set-Cookie, 403...), body
  included, up to 64 KiB.
- An auth service that cannot be reached, times out, or answers too much is a
  502: the request never goes through unchecked.

One pooled `ClientSession` (no cookie jar: it serves every client) is made on
the engine's loop at the first request and closed by the engine when it stops,
through the `on_stop` hooks in `FeatureContext.state`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.features import FeatureContext
from homeproxy.engine.hop import HOP_BY_HOP, connection_tokens
from homeproxy.engine.pages import error_reply
from homeproxy.engine.paths import is_plain, normalize_path
from homeproxy.engine.reply import Reply

#: The auth service's answers are read whole; larger ones are a 502.
MAX_ANSWER = 64 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=10.0, sock_connect=3.0)
#: Request headers homeproxy sets itself on the question to the auth service.
_OWN = frozenset(
    {
        "x-forwarded-method",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-uri",
        "x-forwarded-for",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "forwarded",
        "x-real-ip",
        "x-original-url",
        "x-original-uri",
        "x-original-method",
        "host",
        "content-length",
        "expect",
    }
)
_STATE_KEY = "auth.forward_client"
_ON_STOP = "on_stop"


class ForwardClient:
    """The HTTP client for auth services: one pooled session, made on the engine's loop when first used."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
                # SECURITY: this session asks on behalf of every client; it must keep no cookies.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=TIMEOUT,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def shared_client(ctx: FeatureContext) -> ForwardClient:
    """The engine's one `ForwardClient`, registered to be closed when the engine stops."""
    client = ctx.state.get(_STATE_KEY)
    if not isinstance(client, ForwardClient):
        client = ForwardClient()
        ctx.state[_STATE_KEY] = client
    hooks: dict[str, Callable[[], Awaitable[None]]] = ctx.state.setdefault(_ON_STOP, {})
    hooks[_STATE_KEY] = client.close
    return client


def route_uri(path: str, path_qs: str) -> str:
    """`path_qs` with its `path` in normal form: what the auth service is asked about."""
    # SECURITY: the auth service must judge the path the route was chosen by; asked about the
    # path as sent, a rule for `/admin` would not match `/%61dmin`, which reaches the same route.
    if is_plain(path):
        return path_qs
    normal = normalize_path(path)
    if normal is None:  # a `..` above the root: refused with a 400 before any feature runs
        return path_qs
    return normal.path + path_qs[len(path) :]


def question_headers(ex: Exchange) -> CIMultiDict[str]:
    """The headers of the question to the auth service about `ex`'s request."""
    request = ex.request
    src = request.headers
    drop = HOP_BY_HOP | _OWN | connection_tokens(src)
    headers: CIMultiDict[str] = CIMultiDict((k, v) for k, v in src.items() if k.lower() not in drop)
    trusted = ex.trusted_peer
    proto = (src.get("X-Forwarded-Proto") if trusted else None) or request.scheme
    host = (src.get("X-Forwarded-Host") if trusted else None) or src.get("Host") or ex.host
    uri = route_uri(request.path, request.path_qs)
    headers["X-Forwarded-Method"] = request.method
    headers["X-Forwarded-Proto"] = proto
    headers["X-Forwarded-Host"] = host
    headers["X-Forwarded-Uri"] = uri
    headers["X-Forwarded-For"] = ex.client
    headers["X-Real-IP"] = ex.client
    headers["X-Original-URL"] = f"{proto}://{host}{uri}"
    headers["X-Original-Method"] = request.method
    return headers


def _answer_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    drop = HOP_BY_HOP | connection_tokens(headers) | {"content-length"}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


class ForwardMode:
    """The forward-auth mode (see the module docstring)."""

    def __init__(self, site: Site, ctx: FeatureContext) -> None:
        self.url = site.auth.forward
        self.forward_headers = tuple(site.auth.forward_headers)
        self.client = shared_client(ctx)

    def strip(self, ex: Exchange) -> None:
        """Remove the client's own copies of the headers that only the auth service may set."""
        if any(name in ex.headers for name in self.forward_headers):
            headers = ex.edit_headers()
            for name in self.forward_headers:
                headers.popall(name, None)

    async def __call__(self, ex: Exchange, nxt: Handler) -> Reply:
        try:
            refused = await self._ask(ex)
        except TimeoutError:
            ex.error = "auth: the auth service timed out"
            return error_reply(502, ex.request)
        except (aiohttp.ClientError, OSError) as e:
            ex.error = f"auth: the auth service is unreachable: {type(e).__name__}"
            return error_reply(502, ex.request)
        # The answer is released before the request goes on: no auth connection is held meanwhile.
        return refused if refused is not None else await nxt(ex)

    async def _ask(self, ex: Exchange) -> Reply | None:
        """None if the auth service lets `ex` through (its headers set on it), else the reply for the client."""
        async with self.client.session.get(self.url, headers=question_headers(ex), allow_redirects=False) as answer:
            if 200 <= answer.status < 300:
                self.strip(ex)
                granted = [(n, v) for n in self.forward_headers for v in answer.headers.getall(n, ())]
                if granted:
                    headers = ex.edit_headers()
                    for name, value in granted:
                        headers.add(name, value)
                return None
            body = await _read_bounded(answer.content, MAX_ANSWER)
            if body is None:
                ex.error = "auth: the auth service's answer is too large"
                return error_reply(502, ex.request)
            if answer.status >= 500:
                ex.error = f"auth: the auth service failed ({answer.status})"
            return Reply(answer.status, _answer_headers(answer.headers), body, reason=answer.reason)


async def _read_bounded(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body if it is at most `limit` bytes, else None."""
    body = b""
    while True:
        chunk = await content.read(limit + 1 - len(body))
        if not chunk:
            return body
        body += chunk
        if len(body) > limit:
            return None
