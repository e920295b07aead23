"""`ChallengeStore`: ACME HTTP-01 key authorizations, put by the issuer's thread, read by the engine."""

from __future__ import annotations

import threading


class ChallengeStore:
    """token -> key authorization, thread-safe (the issuer runs in a thread, the engine on its loop)."""

    def __init__(self) -> None:
        self._items: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> str | None:
        return self._items.get(token)

    def put(self, token: str, keyauth: str) -> None:
        with self._lock:
            self._items[token] = keyauth

    def remove(self, token: str) -> None:
        with self._lock:
            self._items.pop(token, None)

    def __len__(self) -> int:
        return len(self._items)
