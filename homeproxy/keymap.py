"""The ids of the TUI's key bindings, their default keys and the spelling of a key, for
`[tui.keymap]` in the config.

Textual-free, so the config loader can check a keymap (file, line and key in the error) without
importing the TUI; `tests/tui/test_keymap.py` keeps `DEFAULT_KEYS` equal to the ids and keys the
TUI's `BINDINGS` really carry, so the two cannot drift apart.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from types import MappingProxyType

#: Every binding id a keymap may remap (each is `Binding(..., id=...)` somewhere in homeproxy/tui/),
#: with its default key(s) as its `Binding` spells them.
DEFAULT_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "quit": "q",
        "reload": "ctrl+r",
        "theme": "ctrl+t",
        "screen.dashboard": "1",
        "screen.sites": "2",
        "screen.traffic": "3",
        "screen.settings": "4",
        "screen.discovery": "5",
        "screen.certificates": "6",
        "screen.help": "question_mark",
        "screen.help.f1": "f1",
        "certificates.export": "x",
        "certificates.renew": "r",
        "certificates.trust": "t",
        "confirm.cancel": "escape",
        "confirm.no": "n",
        "confirm.yes": "y",
        "dashboard.upstreams": "u",
        "discovery.add": "a",
        "discovery.clear-filter": "escape",
        "discovery.filter": "slash",
        "repair.save": "ctrl+s",
        "repair.editor": "ctrl+e",
        "repair.quit": "ctrl+q",
        "request-detail.close": "escape",
        "request-log.details": "enter",
        "request-log.down": "down,j",
        "request-log.first": "home,g",
        "request-log.last": "end,G",
        "request-log.page-down": "pagedown",
        "request-log.page-up": "pageup",
        "request-log.up": "up,k",
        "settings.restore": "r",
        "settings.revert": "escape",
        "settings.save_all": "ctrl+s",
        "site-editor.close": "escape",
        "site-editor.save": "ctrl+s",
        "site-form.next": "tab",
        "site-form.previous": "shift+tab",
        "sites.add": "a",
        "sites.delete": "x,delete",
        "sites.duplicate": "d",
        "sites.edit": "e",
        "sites.edit.enter": "enter",
        "sites.maintenance": "m",
        "sites.purge": "p",
        "sites.toggle": "space",
        "sites.upstreams": "u",
        "traffic.clear": "c",
        "traffic.clear-filters": "escape",
        "traffic.filter": "slash",
        "traffic.follow": "f",
        "traffic.method": "m",
        "traffic.pause": "space,p",
        "traffic.site": "s",
        "traffic.status": "x",
        "trust-root.close": "escape,t",
        "upstreams.add": "ctrl+n",
        "upstreams.close": "escape",
        "upstreams.down": "alt+down",
        "upstreams.remove": "ctrl+delete",
        "upstreams.up": "alt+up",
    }
)

BINDING_IDS = frozenset(DEFAULT_KEYS)
"""The ids a `[tui.keymap]` may name."""

#: Ids whose bindings are the app's own (the rest are named `<owner>.<action>`).
APP_IDS = frozenset({"quit", "reload", "theme"})


def _owner(binding_id: str) -> str:
    """Which screen, widget or app a binding id belongs to (its bindings share one `BindingsMap`)."""
    owner = binding_id.split(".", 1)[0]
    return "app" if owner == "screen" or binding_id in APP_IDS else owner


def key_names(keys: str) -> list[str]:
    """The keys in `keys` ("?, ctrl+s") by the names Textual gives them ("question_mark", "ctrl+s")."""
    return [_key_name(key.strip()) for key in keys.split(",")]


def _key_name(key: str) -> str:
    # As Textual's keys._character_to_key: a lone character that is not a letter or digit goes by its name.
    if len(key) != 1 or key.isalnum():
        return key
    try:
        name = unicodedata.name(key).lower().replace("-", "_").replace(" ", "_")
    except ValueError:
        return key
    return _SHORT_NAMES.get(name, name)


_SHORT_NAMES = {
    "solidus": "slash",
    "reverse_solidus": "backslash",
    "commercial_at": "at",
    "hyphen_minus": "minus",
    "plus_sign": "plus",
    "low_line": "underscore",
}


def full_keymap(user: Mapping[str, str]) -> dict[str, str]:
    """The keymap to hand Textual's `set_keymap`: the user's keys, and every other id at its default key.

    Textual moves each binding the keymap names to the end of its node's bindings, and the footer
    shows them in that order: a lone remap (Traffic on "t") would leave its place (the "screens"
    group) for the end of the footer. Naming every id re-adds them all, in the order they are
    declared, so the footer keeps its order under any remap. A default key that the user gave to
    another binding of the same owner is left out, so the user's key wins, as it would without it.
    """
    taken = {(_owner(i), key) for i, keys in user.items() for key in key_names(keys)}
    keymap = {
        binding_id: keys
        for binding_id, keys in DEFAULT_KEYS.items()
        if binding_id not in user and not any((_owner(binding_id), key) in taken for key in key_names(keys))
    }
    keymap.update(user)
    return keymap


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
