"""auth, login mode: the sign-in page, its reserved paths, and the redirects that leave it."""

from __future__ import annotations

from urllib.parse import urlsplit

from multidict import CIMultiDict

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.reply import Reply

LOGIN_PATH = "/.homeproxy/login"
LOGOUT_PATH = "/.homeproxy/logout"
#: Longer `next` values become "/".
MAX_NEXT = 2048


def safe_next(value: str) -> str:
    """`value` if it is a relative path on this site, else "/" (no open redirect)."""
    if (
        not value
        or len(value) > MAX_NEXT
        or not value.startswith("/")
        or value.startswith("//")  # protocol-relative: another host
        or "\\" in value  # browsers read "/\evil.example" as "//evil.example"
        or any(not 0x21 <= ord(c) <= 0x7E for c in value)  # controls, spaces, non-ASCII
    ):
        return "/"
    if urlsplit(value).path in (LOGIN_PATH, LOGOUT_PATH):
        return "/"
    return value


def wants_html(ex: Exchange) -> bool:
    return "text/html" in ",".join(ex.request.headers.getall("Accept", ())).lower()


_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>Sign in: {realm}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:22em;margin:15vh auto;padding:0 1em;color:#333}}
h1{{font-size:1.4em}}label{{display:block;margin:.8em 0}}input{{display:block;width:100%;box-sizing:border-box;
padding:.4em;font:inherit}}button{{margin-top:.6em;padding:.4em 1.2em;font:inherit}}
.error{{color:#a00}}small{{color:#888}}</style></head>
<body><main><h1>{realm}</h1>{message}
<form method="post" action="{action}">
<input type="hidden" name="next" value="{next}">
<label>User name<input name="username" autocomplete="username" autocapitalize="none" required{autofocus_user}
 value="{user}"></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required{autofocus_pw}></label>
<button type="submit">Sign in</button>
</form><p><small>homeproxy</small></p></main></body></html>
"""

#: The form's own headers: it is never cached, framed, sniffed, or able to load anything.
_FORM_HEADERS = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)


def _redirect(location: str) -> Reply:
    """303 See Other to a (validated) path on this host."""
    headers: CIMultiDict[str] = CIMultiDict({"Location": location, "Cache-Control": "no-store"})
    return Reply(303, headers, b"")
