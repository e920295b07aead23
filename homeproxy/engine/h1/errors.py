"""What can go wrong with an upstream connection, in homeproxy's own words."""

from __future__ import annotations


class UpstreamError(Exception):
    """An upstream exchange failed; `str()` is our own sentence."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made (refused, unreachable, DNS): the next upstream may be tried."""

    def __init__(self, message: str, os_error: OSError | None = None) -> None:
        super().__init__(message)
        self.os_error = os_error


class UpstreamCertError(UpstreamError):
    """An https upstream's certificate was refused (never a silent failover)."""


class UpstreamLost(UpstreamError):
    """The connection closed before the response began (reset, EOF, broken pipe)."""

    def __init__(self, message: str, *, reused: bool, unsent: bool = False) -> None:
        super().__init__(message)
        self.reused = reused
        """The connection came from the pool (it had served a request before)."""
        self.unsent = unsent
        """Nothing of the request was written (the connection was found closed first)."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer could not be framed unambiguously (never passed on)."""


#: The event error when an https upstream's certificate is refused (ours, so tests and users see
#: the same words whatever the TLS library says), and what to do about it.
UPSTREAM_CERT_REFUSED = "upstream's TLS certificate was not accepted"
CERT_REFUSED_ERROR = f"{UPSTREAM_CERT_REFUSED}; set verify_upstream = false for self-signed LAN gear"
