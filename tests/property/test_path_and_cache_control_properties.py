"""Property tests (issue 14) for the request path's normal form and for Cache-Control parsing."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from homeproxy.engine.features.cache.policy import Directives
from homeproxy.engine.paths import normalize_path

# Path pieces an attacker would combine: dot segments in every spelling, separators in every
# spelling, escapes of letters, a NUL, the names of routes.
pieces = st.sampled_from(
    ["/", "//", "\\", "%2f", "%2F", "%5c", ".", "..", "%2e", "%2E%2e", ".%2e", "admin", "public", "%61dmin",
     "api", "a", "%00", "%25", "x.y", "~u", "%7E", "?"]
)  # fmt: skip
paths = st.lists(pieces, min_size=1, max_size=12).map(lambda p: "/" + "".join(p))


def decoded(path: str) -> str:
    """What a server that decodes everything and resolves dots would make of `path`."""
    text = unquote(path).replace("\\", "/")
    return posixpath.normpath("/" + text.lstrip("/"))  # (normpath keeps a leading "//")


@settings(max_examples=600, deadline=None)
@given(paths)
def test_a_normal_form_is_stable_and_never_climbs_above_the_root(path: str) -> None:
    normal = normalize_path(path)
    if normal is None:
        return  # a `..` above the root: the engine answers 400
    again = normalize_path(normal.path)
    assert again is not None and again.path == normal.path  # idempotent
    assert normal.path.startswith("/")
    assert "//" not in normal.path and "/./" not in normal.path and "/../" not in normal.path
    assert not normal.path.endswith(("/.", "/.."))


@settings(max_examples=600, deadline=None)
@given(paths, st.sampled_from(["/admin/", "/api/", "/public/"]))
def test_a_path_reaches_a_route_only_if_its_fully_decoded_form_is_under_it(path: str, route: str) -> None:
    """The route chosen for the normal form agrees with what a server that decodes every escape
    and resolves every dot would see: no spelling gets into a route, or out of one, unseen."""
    normal = normalize_path(path)
    if normal is None or "%00" in path.lower() or "%25" in path or "?" in path:
        return  # refused, or escapes that stay escaped on purpose (NUL, a literal %)
    in_route = normal.path.startswith(route) or normal.path == route.rstrip("/")
    full = decoded(path)
    in_decoded = (full + "/").startswith(route) or full == route.rstrip("/")
    assert in_route == in_decoded, (path, normal.path, full)


tokens = st.sampled_from(
    ["max-age", "s-maxage", "no-cache", "no-store", "private", "public", "must-revalidate", "immutable", "X-Y"]
)
values = st.one_of(st.none(), st.integers(-5, 10**12).map(str), st.text(max_size=6), st.just('"a, b"'))
directive = st.builds(lambda t, v: t if v is None else f"{t}={v}", tokens, values)
headers = st.one_of(st.lists(directive, max_size=6).map(", ".join), st.text(max_size=40))


@settings(max_examples=500, deadline=None)
@given(st.lists(headers, max_size=3))
def test_any_cache_control_parses_and_answers_conservatively(lines: list[str]) -> None:
    cc = Directives(lines)
    for name in ("max-age", "s-maxage"):
        seconds = cc.seconds(name)
        assert seconds is None or seconds >= -1  # -1: invalid or conflicting, read as "stale"
    for name in ("private", "no-cache"):
        fields = cc.fields(name)
        assert fields is None or all(f == f.strip().lower() and f for f in fields)


@given(st.integers(0, 2**31 - 1))
def test_a_plain_max_age_reads_back(n: int) -> None:
    assert Directives([f"public, max-age={n}"]).seconds("max-age") == n
