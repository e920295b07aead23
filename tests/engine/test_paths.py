"""`engine/paths.py` alone: the normal form routes are matched on, and the target sent upstream."""

from __future__ import annotations

import pytest

from homeproxy.engine.paths import NormalPath, is_plain, match_prefix, normalize_path, upstream_target


@pytest.mark.parametrize(
    ("raw", "normal", "dotted"),
    [
        ("/", "/", False),
        ("/admin/x", "/admin/x", False),
        ("//admin/x", "/admin/x", False),
        ("/admin//x/", "/admin/x/", False),
        ("/./admin", "/admin", True),
        ("/public/../admin", "/admin", True),
        ("/public/%2e%2e/admin", "/admin", True),
        ("/public/%2E%2E/admin", "/admin", True),
        ("/public/..%2fadmin/x", "/admin/x", True),
        ("/public/..%2Fadmin/x", "/admin/x", True),
        ("/public\\..\\admin", "/admin", True),
        ("/public%5c..%5Cadmin", "/admin", True),
        ("/%61dmin/", "/admin/", False),
        ("/admin%2f..", "/", True),
        ("/admin/..", "/", True),
        ("/a/b/.", "/a/b/", True),
        ("/a/b/..", "/a/", True),
        ("/a%20b/%7e%2D", "/a%20b/~-", False),  # only unreserved characters are decoded
        ("/a%2b%zz%", "/a%2B%zz%", False),  # other escapes upper-cased; broken ones left alone
        ("/a%252e%252e/b", "/a%252e%252e/b", False),  # decoded once, never twice
        ("/public/..x/y", "/public/..x/y", False),  # not a dot segment
        ("*", "*", False),
    ],
)
def test_normal_forms(raw: str, normal: str, dotted: bool) -> None:
    assert normalize_path(raw) == NormalPath(normal, dotted)


@pytest.mark.parametrize(
    "raw", ["/..", "/../admin", "/public/../../admin", "/%2e%2e/admin", "/a/..%2f..%5cb", "\\..\\x"]
)
def test_climbing_above_the_root_has_no_normal_form(raw: str) -> None:
    assert normalize_path(raw) is None


def test_a_plain_path_is_its_own_normal_form() -> None:
    assert is_plain("/static/app.3f9a.js")
    for odd in ("/a%20", "/a/./b", "/a//b", "/a\\b", "/.hidden"):
        assert not is_plain(odd), odd


def test_route_prefixes_are_compared_in_normal_form() -> None:
    assert match_prefix("/api/") == "/api/"
    assert match_prefix("/%61pi//v1/") == "/api/v1/"
    assert match_prefix("/../x/") == "/../x/"  # no normal form: kept (it then matches nothing odd)


@pytest.mark.parametrize(
    ("target", "prefix", "rewrite", "sent"),
    [
        # No prefix change: as sent, unless dot segments were resolved.
        ("/a%20b?x=1", "", None, "/a%20b?x=1"),
        ("/x/../a%2fb?x=/../", "", None, "/a/b?x=/../"),  # the query is never touched
        ("/%61pi/users", "", None, "/%61pi/users"),
        # The prefix spelled plainly is cut from the path as sent, keeping its escapes.
        ("/api/a%2Fb?q", "/api", "", "/a%2Fb?q"),
        ("/api/a%2Fb", "/api", "/v2", "/v2/a%2Fb"),
        # Spelled otherwise: cut from the normal form.
        ("/%61pi/users?q=1", "/api", "", "/users?q=1"),
        ("//api/users", "/api", "", "/users"),
        ("/api%2fusers", "/api", "/v2", "/v2/users"),
        ("/x/../api/users", "/api", "/v2", "/v2/users"),
        ("/%61pi", "/api", "", "/"),
        # Not this route's path: left alone.
        ("/other/%20", "/api", "", "/other/%20"),
    ],
)
def test_upstream_targets(target: str, prefix: str, rewrite: str | None, sent: str) -> None:
    path = target.partition("?")[0]
    assert upstream_target(target, path, prefix, rewrite) == sent
