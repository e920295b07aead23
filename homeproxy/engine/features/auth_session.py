"""auth, login mode: the session key on disk and the signed session cookie's token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

COOKIE = "homeproxy_session"
KEY_FILE = "session.key"
KEY_BYTES = 32
_KEY_LOCK = threading.Lock()
_MAC_LABEL = b"homeproxy-session-v1\0"


def load_or_create_key(data_dir: Path) -> bytes:
    """The session key in `data_dir`, made (32 random bytes, mode 0600, the dir 0700) if missing.
    Blocking: call it in a thread."""
    path = data_dir / KEY_FILE
    with _KEY_LOCK:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it just now
                fd = os.open(path, os.O_RDONLY)
            else:
                try:
                    os.write(fd, secrets.token_bytes(KEY_BYTES))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                fd = os.open(path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_mode & 0o077:
                log.warning("%s was readable by others; making it 0600", path)
                os.fchmod(fd, 0o600)
            key = os.read(fd, 4096)
        finally:
            os.close(fd)
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path} is damaged (shorter than {KEY_BYTES} bytes); delete it and homeproxy makes a new one")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes, stored_hash: str) -> bytes:
    return hmac.new(key, _MAC_LABEL + payload + b"\0" + stored_hash.encode(), hashlib.sha256).digest()


def make_token(key: bytes, user: str, issued: int, expires: int, scope: str, stored_hash: str) -> str:
    """A session cookie value."""
    payload = json.dumps([user, issued, expires, scope], separators=(",", ":")).encode()
    return f"v1.{_b64(payload)}.{_b64(_mac(key, payload, stored_hash))}"


def cookie_values(lines: Iterable[str]) -> list[str]:
    """Every `homeproxy_session` value in these Cookie header lines (at most a few)."""
    out: list[str] = []
    for line in lines:
        for part in line.split(";"):
            name, eq, value = part.strip().partition("=")
            if eq and name.strip() == COOKIE:
                out.append(value.strip().strip('"'))
                if len(out) >= 4:
                    return out
    return out
