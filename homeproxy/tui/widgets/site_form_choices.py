"""The site form's fixed choices and texts: what each Select offers, and the verify-upstream warning (no Textual)."""

from __future__ import annotations

from rich.text import Text

from homeproxy.config.model import BALANCE_POLICIES

#: The three states of a site's `publish` (None: as `[discovery] publish_hostnames` says).
PUBLISH_CHOICES: tuple[tuple[Text, str], ...] = (
    (Text("as the discovery settings say"), "default"),
    (Text("announce them"), "on"),
    (Text("do not announce them"), "off"),
)
PUBLISH_VALUES: dict[str, bool | None] = {"default": None, "on": True, "off": False}

#: Under "Verify upstream" when it is off and an upstream speaks TLS.
VERIFY_OFF_HINT = "⚠ not checked: right for self-signed gear on your LAN, not for servers across the internet"

#: Where a TLS site's certificate comes from; "default" is `[tls] issuer` (its label says which).
ISSUER_CHOICES = (
    ("homeproxy's local CA", "internal"),
    ("ACME (Let's Encrypt or another CA)", "acme"),
    ("my own certificate files", "files"),
)

#: How a request picks one of several upstreams (`balance`), as the Select offers them.
BALANCE_CHOICES: tuple[tuple[str, str], ...] = (
    ("round robin: each in turn", "round_robin"),
    ("weighted: by their weight", "weighted"),
    ("least busy: fewest requests now", "least_conn"),
    ("client IP: the same one per client", "ip_hash"),
    ("cookie: the same one per browser", "cookie"),
    ("first: failover in the listed order", "first"),
    ("random two: the less busy of two", "random_two"),
)
assert tuple(v for _, v in BALANCE_CHOICES) == BALANCE_POLICIES

#: How a request to the site is authenticated (`auth.mode`), as the Select offers them.
AUTH_MODES = (
    ("off", "off"),
    ("Basic auth", "basic"),
    ("login page", "login"),
    ("forward auth service", "forward"),
)
