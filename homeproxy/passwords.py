"""Password hashes for Basic auth and the login page: scrypt from the standard library.

The config stores only `scrypt$N$r$p$<salt>$<hash>` strings (base64, no padding);
`homeproxy passwd` makes them. Verification is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

PREFIX = "scrypt$"
# N=2**15, r=8, p=1: about 32 MiB and a few tens of milliseconds per check (OWASP's floor is 2**17
# at r=8 for interactive logins on servers; home servers are small, and checks are throttled).
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 128 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """A salted scrypt hash of `password`, as stored in the config."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"{PREFIX}{n}${r}${p}${_b64(salt)}${_b64(digest)}"


def parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, digest) of a stored hash; ValueError if it is not one."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt hash")
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range")
    salt, digest = _unb64(parts[4]), _unb64(parts[5])
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("salt or hash too short")
    return n, r, p, salt, digest


def is_hash(stored: str) -> bool:
    try:
        parse_hash(stored)
    except (ValueError, TypeError):
        return False
    return True


def verify_password(password: str | bytes, stored: str) -> bool:
    """Whether `password` matches `stored`, compared in constant time."""
    try:
        n, r, p, salt, digest = parse_hash(stored)
    except (ValueError, TypeError):
        return False
    raw = password.encode("utf-8") if isinstance(password, str) else password
    candidate = hashlib.scrypt(raw, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=len(digest))
    return hmac.compare_digest(candidate, digest)
