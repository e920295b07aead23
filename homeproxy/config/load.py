"""TOML text -> `Config`, with errors that name the file, the line and the key.

`parse_config(text, file)` returns a `Config` or raises `ConfigInvalid`
carrying *every* error found (not just the first), each as
`path:line: key.path: what was wrong, what was expected`.
"""

from __future__ import annotations

import logging
import re
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions

from homeproxy.config.errors import ConfigError as ConfigError
from homeproxy.config.errors import ConfigInvalid as ConfigInvalid
from homeproxy.config.errors import format_key as format_key
from homeproxy.config.load_build import _build
from homeproxy.config.load_check import _Checker
from homeproxy.config.model import Config
from homeproxy.config.toml_scan import KeyPath, scan_toml


def build_config(
    data: Mapping[str, Any],
    file: str = "<config>",
    lines: Mapping[KeyPath, int] | None = None,
    warnings: list[ConfigError] | None = None,
) -> Config:
    """Validate plain TOML data (as parsed) and build the model, or raise `ConfigInvalid`.

    Problems that do not stop the config (a host its own certificate does not cover) are
    appended to `warnings` when given, else logged on the `homeproxy.config` logger.
    """
    c = _Checker(file, lines or {})
    try:
        return _build(c, data)
    finally:
        _report_warnings(c.warnings, warnings)


#: Warnings already logged (bounded): a config parsed again and again (live validation in the
#: site editor, every reload) logs each distinct warning once.
_LOGGED: dict[str, None] = {}
_LOGGED_LOCK = threading.Lock()


def _report_warnings(found: list[ConfigError], out: list[ConfigError] | None) -> None:
    if out is not None:
        out.extend(found)  # the caller reports them (`homeproxy check`, the site editor)
        return
    for w in found:
        text = str(w)
        with _LOGGED_LOCK:
            if text in _LOGGED:
                continue
            _LOGGED[text] = None
            if len(_LOGGED) > 256:
                del _LOGGED[next(iter(_LOGGED))]
        logging.getLogger("homeproxy.config").warning("%s", text)


def decode_config(data: bytes, file: str = "<config>") -> str:
    """The file's bytes as text; TOML is UTF-8, anything else is a `ConfigInvalid` naming the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigInvalid(
            [ConfigError(file, line, "", f"not UTF-8 text (byte 0x{data[e.start]:02x}): save the file as UTF-8")]
        ) from None


def parse_config(text: str, file: str = "<config>", warnings: list[ConfigError] | None = None) -> Config:
    """Parse TOML text and build the model, or raise `ConfigInvalid` with every error.

    A key or table defined twice is found by homeproxy's own scanner, so the
    message names the key and both lines whatever the TOML library's wording;
    the standard library's parser confirms the text is invalid before we say so.
    Warnings (the config still loads) go to `warnings` when given, else to the log.
    """
    scan = scan_toml(text)
    if scan.repeats and not _is_valid_toml(text):
        raise ConfigInvalid([ConfigError(file, r.line, format_key(r.path), r.message) for r in scan.repeats])
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as e:
        raise ConfigInvalid([_malformed(text, file, e)]) from None
    return build_config(doc.unwrap(), file, scan.lines, warnings)


def _malformed(text: str, file: str, err: Exception) -> ConfigError:
    """The clearest report of a TOML syntax error.

    tomlkit's messages can be cryptic and some carry no line; the standard
    library's parser always knows the line. Use its line and message.
    """
    line: int | None = getattr(err, "line", None)
    msg = re.sub(r" at line \d+ col \d+$", "", str(err))
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"^(.*) \((?:at line (\d+), column (\d+)|at end of document)\)$", str(e))
        if m:
            line = int(m.group(2)) if m.group(2) else len(text.splitlines()) or 1
            msg = m.group(1) + (f" (column {m.group(3)})" if m.group(3) else " (at the end of the file)")
    return ConfigError(file, line, "", f"malformed TOML: {msg}")


def _is_valid_toml(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def load_file(path: Path, warnings: list[ConfigError] | None = None) -> Config:
    """Read and parse the config file at `path` (OSError if unreadable, ConfigInvalid if invalid)."""
    return parse_config(decode_config(path.read_bytes(), str(path)), str(path), warnings)
