"""`Exchange`: one request's state as it travels the chain (what ends up in its event)."""

from __future__ import annotations

from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

from homeproxy.engine.request import Request


@dataclass(slots=True)
class Exchange:
    """The request plus what the proxy learns while handling it."""

    request: Request
    client: str
    """The client IP used for logging and access rules."""
    host: str
    """Normalised Host: lower case, no port."""
    trusted_peer: bool = False
    """The socket peer is a configured trusted proxy (its X-Forwarded-* are believed)."""
    site: str = ""
    upstream: str = ""
    bytes_in: int = 0
    bytes_out: int | None = None
    """Body bytes written by a streamed response; None lets the engine take the body's length."""
    cache: str = ""
    error: str = ""
    status: int = 0
    """The status sent (0 until `send()`)."""
    response_headers: CIMultiDict[str] | None = None
    """The headers sent (not copied: the event copies them only for a subscriber that shows them)."""
    headers: CIMultiDictProxy[str] | CIMultiDict[str] = field(default_factory=CIMultiDict)
    """The request headers the upstream will be sent (before hop-by-hop and X-Forwarded-*
    handling): the client's, unless a middleware edited them through `edit_headers()`."""

    def __post_init__(self) -> None:
        if not self.headers:
            self.headers = self.request.headers

    def edit_headers(self) -> CIMultiDict[str]:
        """A private, editable copy of the request headers for upstream (copied once)."""
        if not isinstance(self.headers, CIMultiDict):
            self.headers = CIMultiDict(self.headers)
        return self.headers
