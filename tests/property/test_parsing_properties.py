"""Property tests for what homeproxy parses from the network (issue 14): Accept-Encoding,
Basic credentials, Host names and host routing. Any input gives an answer or our own
refusal, never an exception, and the answers keep their promises."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from homeproxy.config import build_config
from homeproxy.engine.features.auth import BadCredentials, parse_basic
from homeproxy.engine.features.compression import negotiate, parse_accept_encoding
from homeproxy.engine.routing import compile_table, normalize_host

ALGORITHMS = ("br", "zstd", "gzip")
codings = st.sampled_from(["gzip", "x-gzip", "br", "zstd", "identity", "*", "deflate", "GZIP", "compress"])
qvalues = st.sampled_from(["", ";q=0", ";q=1", ";q=0.5", ";q=0.001", ";q=1.000", ";q=2", ";q=abc", ";Q=0.3", ";x=1"])
elements = st.builds(lambda c, q: c + q, codings, qvalues)
headers = st.one_of(st.lists(elements, max_size=8).map(", ".join), st.text(max_size=80))


@settings(max_examples=300, deadline=None)
@given(st.lists(headers, max_size=3))
def test_accept_encoding_never_raises_and_negotiates_something_offered(lines: list[str]) -> None:
    weights = parse_accept_encoding(lines)
    assert all(0 <= w <= 1000 for w in weights.values())
    assert all(c == c.lower() for c in weights)
    chosen = negotiate(weights, ALGORITHMS)
    assert chosen is None or chosen in ALGORITHMS
    if chosen is not None:
        assert weights.get(chosen, weights.get("*", 0)) > 0  # never a coding the client refused


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ALGORITHMS), st.lists(elements, max_size=4))
def test_a_coding_alone_at_full_weight_is_chosen(coding: str, noise: list[str]) -> None:
    others = [e for e in noise if not e.lower().startswith((coding, "*", "identity"))]
    assert negotiate(parse_accept_encoding([", ".join([coding, *others])]), (coding,)) == coding


users = st.text(min_size=0, max_size=20).filter(lambda u: ":" not in u)


@settings(max_examples=300, deadline=None)
@given(users, st.text(max_size=40))
def test_basic_credentials_round_trip(user: str, password: str) -> None:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert parse_basic(f"Basic {token}") == (user, password.encode())
    assert parse_basic(f"basic   {token} ") == (user, password.encode())


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: "Basic " + base64.b64encode(b).decode())))
def test_any_authorization_value_is_credentials_or_our_refusal(value: str) -> None:
    try:
        user, password = parse_basic(value)
    except BadCredentials as e:
        assert str(e)
    else:
        assert ":" not in user and isinstance(password, bytes)


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), names))
def test_normalize_host_is_idempotent_and_lower_case(raw: str) -> None:
    host = normalize_host(raw)
    assert normalize_host(host) == host or host.startswith("[")
    assert host == host.lower()
    assert not host.endswith(".")


@settings(max_examples=200, deadline=None)
@given(names, st.lists(names, min_size=1, max_size=5, unique=True), st.sampled_from(["", ":8080", ".", ".:443"]))
def test_the_most_specific_site_wins(host: str, patterns: list[str], suffix: str) -> None:
    """For any set of exact names and wildcards, a host goes to its exact site if there is one,
    else to the longest wildcard that covers it, else to no site."""
    hosts = [p if i % 2 == 0 else "*." + p for i, p in enumerate(patterns)]
    sites = [{"name": f"s{i}", "hosts": [h], "upstreams": ["http://10.0.0.1"]} for i, h in enumerate(hosts)]
    table = compile_table(build_config({"sites": sites}), lambda site, route: lambda ex: None)  # type: ignore[arg-type,return-value]
    found = table.lookup(normalize_host(host.upper() + suffix))
    exact = [h for h in hosts if h == host]
    covering = sorted((h for h in hosts if h.startswith("*.") and host.endswith(h[1:])), key=len, reverse=True)
    expected = exact[0] if exact else covering[0] if covering else None
    assert (found.site.hosts[0] if found else None) == expected
