"""homeproxy's own small responses: 400, 404, 502, 504.

They say what happened and what to check, in plain words, and reveal nothing
about the configured sites or the upstream addresses (those are in the access
log and the TUI, for the owner).
"""

from __future__ import annotations

from html import escape

from multidict import CIMultiDict

from homeproxy.engine.reply import Reply, reason_phrase
from homeproxy.engine.request import Request

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
    return Reply(status, headers, body)


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
