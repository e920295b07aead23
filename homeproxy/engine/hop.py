"""Hop-by-hop headers (RFC 9110 section 7.6.1): what a proxy never passes on as it is."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

#: RFC 9110 section 7.6.1, plus the non-standard Proxy-Connection.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Header names listed in `Connection` (they are hop-by-hop too)."""
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def forwarded_for(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str:
    """X-Forwarded-For as one list, however many header lines carry it (RFC 9110 section 5.3)."""
    return ", ".join(headers.getall("X-Forwarded-For", ()))


def without_hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """A copy without the hop-by-hop headers and those named in Connection."""
    drop = HOP_BY_HOP | connection_tokens(headers)
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in drop)
