"""The ids of the TUI's key bindings and the spelling of a key, for `[tui.keymap]` in the config.

Textual-free, so the config loader can check a keymap (file, line and key in the error) without
importing the TUI; `tests/tui/test_keymap.py` keeps `BINDING_IDS` equal to the ids the TUI's
`BINDINGS` really carry, so the two cannot drift apart.
"""

from __future__ import annotations

import unicodedata

#: Every binding id a keymap may remap (each is `Binding(..., id=...)` somewhere in homeproxy/tui/).
BINDING_IDS = frozenset(
    {
        "quit",
        "reload",
        "theme",
        "screen.dashboard",
        "screen.sites",
        "screen.traffic",
        "screen.settings",
        "screen.discovery",
        "screen.certificates",
        "screen.help",
        "screen.help.f1",
        "certificates.export",
        "certificates.renew",
        "certificates.trust",
        "confirm.cancel",
        "confirm.no",
        "confirm.yes",
        "dashboard.upstreams",
        "discovery.add",
        "discovery.clear-filter",
        "discovery.filter",
        "repair.save",
        "repair.editor",
        "repair.quit",
        "request-detail.close",
        "request-log.details",
        "request-log.down",
        "request-log.first",
        "request-log.last",
        "request-log.page-down",
        "request-log.page-up",
        "request-log.up",
        "settings.restore",
        "settings.revert",
        "settings.save_all",
        "site-editor.close",
        "site-editor.save",
        "site-form.next",
        "site-form.previous",
        "sites.add",
        "sites.delete",
        "sites.duplicate",
        "sites.edit",
        "sites.edit.enter",
        "sites.maintenance",
        "sites.purge",
        "sites.toggle",
        "sites.upstreams",
        "traffic.clear",
        "traffic.clear-filters",
        "traffic.filter",
        "traffic.follow",
        "traffic.method",
        "traffic.pause",
        "traffic.site",
        "traffic.status",
        "trust-root.close",
        "upstreams.add",
        "upstreams.close",
        "upstreams.down",
        "upstreams.remove",
        "upstreams.up",
    }
)

MODIFIERS = ("ctrl", "shift", "alt", "meta", "super", "hyper")

#: Keys with a name of their own (Textual's names; a printable character is also its own key,
#: or its Unicode name in lower case with underscores, such as "question_mark").
NAMED_KEYS = frozenset(
    {
        "escape",
        "enter",
        "tab",
        "space",
        "backspace",
        "delete",
        "insert",
        "home",
        "end",
        "pageup",
        "pagedown",
        "up",
        "down",
        "left",
        "right",
        *(f"f{n}" for n in range(1, 25)),
        # Textual's short names for some characters (its KEY_NAME_REPLACEMENTS).
        "slash",
        "backslash",
        "at",
        "minus",
        "plus",
        "underscore",
    }
)


def key_problem(keys: str) -> str | None:
    """Why `keys` (one key, or several separated by commas, each with optional `ctrl+`, `shift+`,
    `alt+`... modifiers) is not a key Textual knows, or None if it is."""
    if not keys.strip():
        return 'expected a key, such as "c" or "ctrl+k"'
    for key in keys.split(","):
        *modifiers, name = key.strip().split("+") if key.strip() != "+" else ["+"]
        if name == "" and modifiers:  # "ctrl++": the plus key
            name = "+"
            modifiers = modifiers[:-1]
        unknown = [m for m in modifiers if m not in MODIFIERS]
        if unknown:
            return f'"{unknown[0]}" in "{key.strip()}" is not a modifier (use {", ".join(MODIFIERS)})'
        if not _is_key_name(name):
            return f'"{key.strip()}" is not a key (use one character, or a name such as "f1", "escape", "pageup")'
    return None


def _is_key_name(name: str) -> bool:
    if len(name) == 1:
        return name.isprintable() and name not in " ,"
    if name in NAMED_KEYS:
        return True
    try:
        char = unicodedata.lookup(name.replace("_", " "))
    except KeyError:
        return False
    return len(char) == 1 and char.isprintable()
