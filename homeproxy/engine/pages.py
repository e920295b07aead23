"""homeproxy's own small responses: 400, 404, 502, 504.

They say what happened and what to check, in plain words, and reveal nothing
about the configured sites or the upstream addresses (those are in the access
log and the TUI, for the owner). A site's `error_pages` replace their bodies
with its own files (`load_error_pages`, `own_page`); an upstream's own error
pages pass through untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from html import escape
from pathlib import Path

from multidict import CIMultiDict

from homeproxy.config.model import Site
from homeproxy.engine.reply import Reply, reason_phrase
from homeproxy.engine.request import Request

log = logging.getLogger(__name__)

MAX_PAGE_BYTES = 1024 * 1024
"""The largest `error_pages` file kept (in memory); a larger one is not used."""

_TITLES = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    508: "Loop Detected",
}

_TEXT = {
    400: "The request could not be understood.",
    408: "The request took too long to arrive.",
    414: "The address asked for is too long.",
    431: "The request's headers are too large.",
    501: "This kind of request is not supported.",
    401: "This site needs you to sign in.",
    403: "You are not allowed to use this site from here.",
    404: "There is no site at this address.",
    429: "Too many requests. Wait a moment and try again.",
    502: "The service behind this address could not be reached. It may be down or restarting; try again shortly.",
    503: "The service behind this address is not available right now.",
    504: "The service behind this address took too long to answer.",
    508: "This site's upstream is this proxy itself: the request went round in a loop.",
}

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{status} {title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:15vh auto;padding:0 1em;color:#333}}
h1{{font-size:1.4em}}small{{color:#888}}</style></head>
<body><h1>{status} {title}</h1><p>{text}</p><p><small>homeproxy</small></p></body></html>
"""


def title(status: int) -> str:
    """The page's title for `status`, also the reason phrase of the server's own refusals."""
    return _TITLES.get(status) or reason_phrase(status, "Error")


def _render(status: int, request: Request | None, text: str | None = None) -> tuple[bytes, str]:
    heading = title(status)
    text = text or _TEXT.get(status, heading)
    accept = request.headers.get("Accept", "") if request is not None else ""
    if "text/html" in accept:
        body = _HTML.format(status=status, title=escape(heading), text=escape(text))
        return body.encode(), "text/html; charset=utf-8"
    return f"{status} {heading}\n{text}\n".encode(), "text/plain; charset=utf-8"


def error_reply(status: int, request: Request | None = None, text: str | None = None) -> Reply:
    """homeproxy's page for `status` as a `Reply`: HTML for browsers, plain text otherwise;
    `text` says what happened in place of the status's usual sentence."""
    body, content_type = _render(status, request, text)
    headers = CIMultiDict({"Content-Type": content_type, "Cache-Control": "no-store"})
    return Reply(status, headers, body, own=True)


def plain_page(status: int) -> bytes:
    """The plain-text page for `status` (for answers given before a request could be parsed)."""
    return _render(status, None)[0]


MAINTENANCE_RETRY_AFTER = 300
"""Seconds a maintenance page tells clients to wait (`Retry-After`)."""


def maintenance_reply(request: Request | None = None) -> Reply:
    """The 503 of a site with `maintenance = true`, with `Retry-After`."""
    reply = error_reply(503, request, "This site is down for maintenance. Try again in a few minutes.")
    reply.headers["Retry-After"] = str(MAINTENANCE_RETRY_AFTER)
    return reply


def load_error_pages(site: Site) -> dict[int, bytes]:
    """Read `site.error_pages` (blocking: called when a config is applied, off the loop). A file
    that cannot be read, or is over `MAX_PAGE_BYTES`, is logged and left out: that status keeps
    homeproxy's page, and the apply goes on."""
    pages: dict[int, bytes] = {}
    for status, name in site.error_pages:
        try:
            with Path(name).expanduser().open("rb") as f:
                body = f.read(MAX_PAGE_BYTES + 1)
        except OSError as e:
            log.warning("site %s: error page for %d not used: %s", site.name, status, e)
            continue
        if len(body) > MAX_PAGE_BYTES:
            log.warning("site %s: error page for %d not used: %s is over 1 MiB", site.name, status, name)
            continue
        pages[status] = body
    return pages


def own_page(reply: Reply, pages: Mapping[int, bytes]) -> Reply:
    """`reply` with the site's page for its status in place of homeproxy's own (when it is one of
    homeproxy's own pages and the site has a page for it); status and other headers are kept."""
    body = pages.get(reply.status) if reply.own else None
    if body is not None and isinstance(reply.body, bytes):
        headers = reply.headers
        headers.popall("Content-Encoding", None)  # compression may have encoded homeproxy's page
        headers.popall("Content-Length", None)
        headers["Content-Type"] = "text/html; charset=utf-8"
        reply.body = body
    return reply
