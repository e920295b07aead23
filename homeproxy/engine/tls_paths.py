"""What the engine answers itself because of TLS: ACME challenges, the root download, the HTTPS redirect.

All three are plain `Reply`s, decided before routing (the well-known paths, for any Host) or
right after it (the redirect), so none of them depends on how HTTP is parsed.
"""

from __future__ import annotations

from multidict import CIMultiDict

from homeproxy.certs.challenges import ChallengeStore
from homeproxy.certs.manager import RootDownload
from homeproxy.engine.pages import error_reply
from homeproxy.engine.reply import Reply
from homeproxy.engine.request import Request

WELL_KNOWN = "/.well-known/"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
ROOT_DIR = "/.well-known/homeproxy/"
ROOT_URL_PATH = ROOT_DIR + "root.crt"
"""Where the plain-HTTP listener serves the local CA's root (PEM), on any Host."""

_ROOT_FILES = {
    "root.crt": ("pem", "application/x-x509-ca-cert", "homeproxy-root.crt"),
    "root.pem": ("pem", "application/x-pem-file", "homeproxy-root.pem"),
    "root.der": ("der", "application/x-x509-ca-cert", "homeproxy-root.cer"),
    "root.mobileconfig": ("mobileconfig", "application/x-apple-aspen-config", "homeproxy-root.mobileconfig"),
}


def well_known(path: str, request: Request, challenges: ChallengeStore, root: RootDownload | None) -> Reply | None:
    """The reply for an ACME challenge or a root download on plain HTTP, else None (route as usual)."""
    if path.startswith(CHALLENGE_PREFIX):
        token = path[len(CHALLENGE_PREFIX) :]
        keyauth = challenges.get(token) if token and "/" not in token else None
        if keyauth is None:
            return None  # not ours: the site may run its own ACME client (e.g. Nextcloud's)
        headers = CIMultiDict({"Content-Type": "text/plain", "Cache-Control": "no-store"})
        return Reply(200, headers, keyauth.encode())
    if path.startswith(ROOT_DIR):
        name = path[len(ROOT_DIR) :].split("?", 1)[0]
        spec = _ROOT_FILES.get(name)
        if spec is None:
            return None
        if root is None:
            return error_reply(404, request)
        attr, content_type, filename = spec
        headers = CIMultiDict(
            {
                "Content-Type": content_type,
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            }
        )
        body: bytes = getattr(root, attr)
        return Reply(200, headers, b"" if request.method == "HEAD" else body)
    return None


def https_redirect(request: Request, host: str, https_port: int) -> Reply:
    """308 to the same host, path and query on HTTPS (the method and body are kept by 308)."""
    authority = host if https_port == 443 else f"{_bracketed(host)}:{https_port}"
    target = request.path_qs
    location = f"https://{authority}{target}"
    headers = CIMultiDict(
        {"Location": location, "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
    )
    return Reply(308, headers, f"This site is served over HTTPS: {location}\n".encode())


def misdirected(request: Request) -> Reply:
    """421: an HTTPS connection made for one site asking for another that is not served over TLS."""
    return error_reply(421, request)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
