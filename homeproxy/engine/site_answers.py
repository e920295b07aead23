"""What a site answers without asking an upstream: a maintenance page, or a redirect.

Each is the terminal handler of the site's chain in place of the `Forwarder`, so the rest
of the chain (allow/deny, auth, headers) still runs before it, and the upstreams are left
alone.
"""

from __future__ import annotations

from multidict import CIMultiDict

from homeproxy.config.model import Site
from homeproxy.engine.chain import Handler
from homeproxy.engine.exchange import Exchange
from homeproxy.engine.pages import maintenance_reply
from homeproxy.engine.reply import Reply


def site_answer(site: Site) -> Handler | None:
    """The handler that answers for `site` itself, or None when it forwards."""
    if site.maintenance:
        return _maintenance
    if site.redirect:
        return Redirect(site.redirect, site.redirect_code, keep_path=site.keep_path)
    return None


async def _maintenance(ex: Exchange) -> Reply:
    return maintenance_reply(ex.request)


class Redirect:
    """Sends every request to `url` (plus the request's path and query with `keep_path`)."""

    def __init__(self, url: str, code: int, *, keep_path: bool) -> None:
        self.url = url  # the loader removed any trailing "/"
        self.code = code
        self.keep_path = keep_path

    async def __call__(self, ex: Exchange) -> Reply:
        # path_qs is the target as the client sent it, percent-encoded; llhttp refused any CR, LF or
        # non-ASCII byte in it, so it cannot break out of the Location header.
        location = self.url + (ex.request.path_qs if self.keep_path else "/")
        headers = CIMultiDict({"Location": location, "Content-Type": "text/plain; charset=utf-8"})
        return Reply(self.code, headers, f"This site has moved to {location}\n".encode())
