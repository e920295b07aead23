"""compression: which coding a client gets, from its Accept-Encoding (RFC 9110 section 12.5.3)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

#: Only the first this many Accept-Encoding elements are read (real clients send under 10).
MAX_CODINGS = 64
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
#: RFC 9110 section 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
#: Single-line Accept-Encoding values up to this length have their choice cached.
_CACHE_MAX_LEN = 256


def parse_accept_encoding(lines: Iterable[str]) -> dict[str, int]:
    """The codings of Accept-Encoding header lines, each with its weight in thousandths (0-1000).

    Codings are lower-cased and `x-gzip` counts as `gzip` (RFC 9110 section 8.4.1.3).
    Lenient the way servers are: an element whose qvalue breaks the grammar (`q=abc`,
    `q=2`, `q=-1`, `q=0.0001`) is ignored as if absent; parameters other than `q` are
    ignored; the first element for a coding wins over later repeats; only the first
    `MAX_CODINGS` elements (over all lines) are read, so a huge value costs no more
    than a short one.
    """
    weights: dict[str, int] = {}
    budget = MAX_CODINGS
    for line in lines:
        if budget <= 0:
            break
        elements = line.split(",", budget)
        if len(elements) > budget:
            del elements[budget:]
        budget -= len(elements)
        for element in elements:
            coding, _, params = element.partition(";")
            coding = coding.strip().lower()
            if not coding or not _TOKEN.fullmatch(coding):
                continue
            weight = _weight(params)
            if weight is None:
                continue
            weights.setdefault("gzip" if coding == "x-gzip" else coding, weight)
    return weights


def _weight(params: str) -> int | None:
    """The q parameter in thousandths (1000 without one), or None if it is malformed."""
    if not params:
        return 1000
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        value = value.strip()
        if not _QVALUE.fullmatch(value):
            return None
        whole, _, fraction = value.partition(".")
        return int(whole) * 1000 + int((fraction + "000")[:3])
    return 1000


def negotiate(weights: dict[str, int], algorithms: Sequence[str]) -> str | None:
    """The coding to send given the client's `weights`, or None for identity.

    The highest weight above 0 wins; among equal weights, the first in `algorithms`
    (the site's preference). `*` stands for every coding not named, identity included
    (RFC 9110 section 12.5.3). If the client names identity (or `*`) with a higher
    weight than every coding we have, it gets identity. When nothing is acceptable,
    identity is sent anyway (the caller never answers 406).
    """
    star = weights.get("*", 0)
    best: str | None = None
    best_weight = 0
    for coding in algorithms:
        weight = weights.get(coding, star)
        if weight > best_weight:
            best, best_weight = coding, weight
    if best is None:
        return None
    identity = weights.get("identity", weights.get("*"))
    if identity is not None and identity > best_weight:
        return None
    return best


@functools.lru_cache(maxsize=256)
def _negotiate_cached(value: str, algorithms: tuple[str, ...]) -> str | None:
    return negotiate(parse_accept_encoding((value,)), algorithms)


def choose_coding(lines: Sequence[str], algorithms: tuple[str, ...]) -> str | None:
    """The coding for a request with these Accept-Encoding lines, or None for identity.

    No Accept-Encoding at all means identity: RFC 9110 would allow any coding, but
    no server compresses for a client that did not ask, and neither does homeproxy.
    """
    if not lines:
        return None
    if len(lines) == 1 and len(lines[0]) <= _CACHE_MAX_LEN:
        return _negotiate_cached(lines[0], algorithms)
    return negotiate(parse_accept_encoding(lines), algorithms)
