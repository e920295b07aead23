"""Request paths as routes see them: `normalize_path`, and `upstream_target`, the target sent upstream.

Routes are matched on a normalised path, so that no spelling of a path reaches a route that
its plain spelling would not (RFC 3986 section 6.2.2):

- `%XX` escapes of unreserved characters (letters, digits, `-._~`) are decoded: `/%61dmin`
  is `/admin`; other escapes stay escaped, in upper case (`%2f` is not data but a separator,
  below).
- `/`, `\\`, `%2F` and `%5C` all separate segments (servers on Windows, and frameworks that
  decode `%2F` before they route, read them so), and runs of separators count as one.
- `.` segments go, and `..` removes the segment before it (also as `%2e%2e`); a `..` that
  would climb above the root makes the path invalid (the engine answers 400, as nginx does).

What goes upstream is the path as the client sent it, unless it had dot segments: then the
normalised path goes instead, so the upstream cannot resolve them into another route's prefix.
A route that cuts its prefix (`strip_prefix`, `rewrite`) cuts it from the path as sent when
the prefix is there as it is, else from the normalised path (`/%61pi/users` with a route for
`/api/` goes as `/users`).

A plain path (no `%`, `\\`, `//` or `/.`: nearly every request) is its own normal form; the
callers test that with `is_plain` and never come here. The rest is cached (bounded).
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


class NormalPath(NamedTuple):
    """A path in its normal form, and whether that took resolving dot segments."""

    path: str
    dotted: bool
    """It had `.` or `..` segments: the normal form is what goes upstream."""


def is_plain(path: str) -> bool:
    """`path` is its own normal form (nearly every request's: then `normalize_path` is not called)."""
    return not ("%" in path or "/." in path or "//" in path or "\\" in path)


def _unescape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    if char in _UNRESERVED:
        return char
    if char in "/\\":
        return "/"
    return "%" + match.group(1).upper()


@functools.lru_cache(maxsize=1024)
def normalize_path(path: str) -> NormalPath | None:
    """The normal form of a request's path (still percent-encoded), or None when a `..`
    climbs above the root. A target that is not a path (`*`) is left as it is."""
    if not path.startswith(("/", "\\")):
        return NormalPath(path, False)
    text = _ESCAPE.sub(_unescape, path) if "%" in path else path
    segments = text.replace("\\", "/").split("/")
    out: list[str] = []
    dotted = False
    for segment in segments[1:]:
        if segment == "..":
            dotted = True
            if not out:
                return None
            out.pop()
        elif segment == ".":
            dotted = True
        elif segment:
            out.append(segment)
    trailing = segments[-1] in ("", ".", "..") and bool(out)
    return NormalPath("/" + "/".join(out) + ("/" if trailing else ""), dotted)


def match_prefix(prefix: str) -> str:
    """A route's configured path in the normal form request paths are compared in."""
    normal = normalize_path(prefix) if not is_plain(prefix) else None
    return normal.path if normal is not None else prefix


def _cut(path: str, prefix: str) -> str | None:
    """`path` after `prefix` when it starts with it at a segment boundary, else None."""
    if path.startswith(prefix):
        rest = path[len(prefix) :]
        if not rest or rest[0] == "/":
            return rest
    return None


def upstream_target(target: str, path: str, prefix: str, rewrite: str | None) -> str:
    """The target sent upstream for a request whose `path` is not plain (`target` is its path,
    query and fragment as sent): see the module's docstring. `prefix` (no trailing `/`) is
    replaced by `rewrite` unless that is None."""
    normal = normalize_path(path)
    if normal is None:  # the engine refused it already (400)
        return target
    rest = target[len(path) :]  # the query (and any fragment) as sent
    sent = normal.path if normal.dotted else path
    if rewrite is None:
        return sent + rest
    cut = _cut(sent, prefix)
    if cut is None:  # the prefix is spelled otherwise (`/%61pi/`, `//api/`): cut the normal form
        if not normal.path.startswith(prefix):  # not this route's path (no route chose it)
            return sent + rest
        cut = normal.path[len(prefix) :]
    return rewrite + (cut if cut.startswith("/") else "/" + cut) + rest
