"""Where each key of a TOML text is, and which keys it sets twice: a structural scanner.

The parsers tell us the values; they do not tell us the line of every key, and
neither of them names the key a text sets twice (tomlkit 0.15.3 says only
"Cannot overwrite a value", 0.15.2 named the key, tomllib names the line). This
scanner walks the text's structure itself (table headers, keys, dotted keys,
inline tables, arrays, strings and comments; values are skipped, not decoded),
so that homeproxy's own messages say where a key is and, for a repeat, where it
was first set: `config.toml:5: sites[0].name: set twice (first on line 2); keep one`.

It is a locator, not a validator: on text it cannot follow it stops and keeps
what it found so far, and the parsers remain the judge of what is valid TOML.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field

KeyPath = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}#\n\r \t")


@dataclass(frozen=True, slots=True)
class Repeat:
    """A key, or a `[table]`, that the text defines a second time."""

    path: KeyPath
    line: int
    first: int
    """The line of the first definition."""
    header: str = ""
    """For a table header defined twice, the header as written (`[server]`); empty for a key."""

    @property
    def message(self) -> str:
        if self.header:
            return f"table {self.header} defined twice (first on line {self.first}); merge the two into one"
        return f"set twice (first on line {self.first}); keep one"


@dataclass(slots=True)
class TomlScan:
    """What the scanner found: the line of each key path, and the repeats."""

    lines: dict[KeyPath, int] = field(default_factory=dict)
    repeats: list[Repeat] = field(default_factory=list)


class _Stop(Exception):
    """The scanner met text it cannot follow; what it found so far stands."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.newlines = [n for n, ch in enumerate(text) if ch == "\n"]
        self.out = TomlScan()
        # What each path is, and the line that made it so:
        # "value" (key = ...), "table" ([header] or an array element), "implicit" (a parent
        # named only by a header), "dotted" (a parent made by a dotted key), "array" ([[...]]).
        self.kinds: dict[KeyPath, tuple[str, int]] = {}
        self.aot: dict[KeyPath, int] = {}
        self.table: KeyPath = ()

    # --- position -------------------------------------------------------------------

    def line(self, at: int | None = None) -> int:
        return bisect.bisect_left(self.newlines, self.i if at is None else at) + 1

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def skip_comment(self) -> None:
        if self.peek() == "#":
            end = self.s.find("\n", self.i)
            self.i = len(self.s) if end < 0 else end

    def skip_blank(self) -> None:
        """Whitespace, newlines and comments (between array items)."""
        while self.i < len(self.s):
            self.skip_ws()
            self.skip_comment()
            if self.peek() in ("\n", "\r"):
                self.i += 1
            else:
                return

    # --- statements ------------------------------------------------------------------

    def run(self) -> TomlScan:
        try:
            while True:
                self.skip_blank()
                if self.i >= len(self.s):
                    break
                self.statement()
                self.skip_ws()
                self.skip_comment()
                if self.i < len(self.s) and self.peek() not in ("\n", "\r"):
                    raise _Stop
        except _Stop:
            pass
        return self.out

    def statement(self) -> None:
        line = self.line()
        if self.peek(2) == "[[":
            start = self.i
            self.i += 2
            names = self.key()
            if self.peek(2) != "]]":
                raise _Stop
            self.i += 2
            self.array_header(names, line, self.s[start : self.i])
        elif self.peek() == "[":
            start = self.i
            self.i += 1
            names = self.key()
            if self.peek() != "]":
                raise _Stop
            self.i += 1
            self.header(names, line, self.s[start : self.i])
        else:
            names = self.key()
            if self.peek() != "=":
                raise _Stop
            self.i += 1
            self.define(self.table, names, line)
            self.value(self.table + names)

    def key(self) -> tuple[str, ...]:
        """A (dotted) key; leaves the position after the trailing whitespace."""
        parts: list[str] = []
        while True:
            self.skip_ws()
            ch = self.peek()
            if ch == '"':
                start = self.i
                self.basic_string()
                raw = self.s[start : self.i]
                try:
                    parts.append(json.loads(raw))
                except ValueError:  # a TOML-only escape (\e, \UXXXXXXXX): the raw text names it well enough
                    parts.append(raw[1:-1])
            elif ch == "'":
                end = self.s.find("'", self.i + 1)
                if end < 0:
                    raise _Stop
                parts.append(self.s[self.i + 1 : end])
                self.i = end + 1
            else:
                start = self.i
                while self.i < len(self.s) and self.s[self.i] in _BARE:
                    self.i += 1
                if self.i == start:
                    raise _Stop
                parts.append(self.s[start : self.i])
            self.skip_ws()
            if self.peek() != ".":
                return tuple(parts)
            self.i += 1

    # --- definitions -----------------------------------------------------------------

    def repeat(self, path: KeyPath, line: int, header: str = "") -> None:
        self.out.repeats.append(Repeat(path, line, self.kinds[path][1], header))

    def define(self, base: KeyPath, names: tuple[str, ...], line: int) -> None:
        """`a.b.c = ...` inside `base`: a and a.b become tables, a.b.c a value."""
        for n in range(1, len(names)):
            parent = base + names[:n]
            kind = self.kinds.get(parent)
            if kind is None:
                self.kinds[parent] = ("dotted", line)
            elif kind[0] == "value":
                self.repeat(parent, line)
        path = base + names
        if path in self.kinds:
            self.repeat(path, line)
        else:
            self.kinds[path] = ("value", line)
        self.out.lines[path] = line

    def resolve(self, names: tuple[str, ...]) -> KeyPath:
        """A header's path, with the current index after each array-of-tables name."""
        out: KeyPath = ()
        for name in names:
            out = out + (name,)
            if out in self.aot:
                out = out + (self.aot[out],)
        return out

    def mark_parents(self, path: KeyPath, line: int) -> None:
        for n in range(1, len(path)):
            self.kinds.setdefault(path[:n], ("implicit", line))

    def header(self, names: tuple[str, ...], line: int, written: str) -> None:
        path = self.resolve(names)
        self.mark_parents(path, line)
        kind = self.kinds.get(path)
        if kind is None or kind[0] == "implicit":
            self.kinds[path] = ("table", line)
        elif kind[0] in ("table", "dotted"):
            self.repeat(path, line, written)
        else:  # a key set with a value, now a [table] as well
            self.repeat(path, line)
        self.out.lines[path] = line
        self.table = path

    def array_header(self, names: tuple[str, ...], line: int, written: str) -> None:
        key = self.resolve(names[:-1]) + (names[-1],)
        self.mark_parents(key, line)
        kind = self.kinds.get(key)
        if kind is None:
            self.kinds[key] = ("array", line)
        elif kind[0] != "array":
            self.repeat(key, line, written if kind[0] == "table" else "")
        idx = self.aot.get(key, -1) + 1
        self.aot[key] = idx
        # A new [[sites]] restarts the numbering of the arrays nested in it.
        for k in [k for k in self.aot if len(k) > len(key) and k[: len(key)] == key]:
            del self.aot[k]
        self.table = key + (idx,)
        self.kinds[self.table] = ("table", line)
        self.out.lines.setdefault(key, line)
        self.out.lines[self.table] = line

    # --- values (skipped, but inline tables and arrays are walked for their keys) ---

    def value(self, path: KeyPath) -> None:
        self.skip_ws()
        ch = self.peek()
        if self.peek(3) in ('"""', "'''"):
            self.multiline_string()
        elif ch == '"':
            self.basic_string()
        elif ch == "'":
            end = self.s.find("'", self.i + 1)
            if end < 0 or "\n" in self.s[self.i : end]:
                raise _Stop
            self.i = end + 1
        elif ch == "[":
            self.i += 1
            idx = 0
            while True:
                self.skip_blank()
                if self.peek() == "]":
                    self.i += 1
                    return
                self.value(path + (idx,))
                idx += 1
                self.skip_blank()
                if self.peek() == ",":
                    self.i += 1
                elif self.peek() == "]":
                    self.i += 1
                    return
                else:
                    raise _Stop
        elif ch == "{":
            self.i += 1
            self.kinds[path] = ("value", self.kinds.get(path, ("", self.line()))[1])
            while True:
                self.skip_blank()
                if self.peek() == "}":
                    self.i += 1
                    return
                line = self.line()
                names = self.key()
                if self.peek() != "=":
                    raise _Stop
                self.i += 1
                self.define(path, names, line)
                self.value(path + names)
                self.skip_blank()
                if self.peek() == ",":
                    self.i += 1
                elif self.peek() == "}":
                    self.i += 1
                    return
                else:
                    raise _Stop
        else:
            start = self.i
            while self.i < len(self.s) and self.s[self.i] not in _SCALAR_END:
                self.i += 1
            if self.i == start:
                raise _Stop

    def basic_string(self) -> None:
        i = self.i + 1
        while i < len(self.s):
            ch = self.s[i]
            if ch == "\\":
                i += 2
            elif ch == '"':
                self.i = i + 1
                return
            elif ch == "\n":
                break
            else:
                i += 1
        raise _Stop

    def multiline_string(self) -> None:
        quote = self.peek(3)
        i = self.i + 3
        while i < len(self.s):
            if quote == '"""' and self.s[i] == "\\":
                i += 2
                continue
            if self.s.startswith(quote, i):
                # Up to two more quotes may close the string's content (`""""a""""`).
                i += 3
                while i < len(self.s) and self.s[i] == quote[0] and self.s.startswith(quote, i - 2):
                    i += 1
                self.i = i
                return
            i += 1
        raise _Stop


def scan_toml(text: str) -> TomlScan:
    """The line of every key path in `text` and the keys and tables it defines twice."""
    return _Scanner(text).run()


def locate_keys(text: str) -> dict[KeyPath, int]:
    """Map key paths to their 1-based line numbers (table headers, keys, and keys inside inline tables)."""
    return scan_toml(text).lines
