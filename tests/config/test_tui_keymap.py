"""`[tui.keymap]`: binding ids to keys, as the loader reads and checks them."""

from __future__ import annotations

import pytest

from homeproxy.config import ConfigInvalid
from homeproxy.config.load import parse_config
from homeproxy.keymap import key_problem

FILE = "/srv/homeproxy/config.toml"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as caught:
        parse_config(text, FILE)
    return [str(e) for e in caught.value.errors]


def test_no_table_is_no_keymap() -> None:
    assert parse_config("", FILE).tui.keymap == ()


def test_quoted_and_dotted_ids_are_the_same() -> None:
    text = '[tui.keymap]\n"sites.add" = "n"\nsites.toggle = "t"\n"screen.traffic" = "ctrl+3, 3"\n'
    assert parse_config(text, FILE).tui.keymap == (
        ("screen.traffic", "ctrl+3,3"),
        ("sites.add", "n"),
        ("sites.toggle", "t"),
    )


def test_an_unknown_id_is_an_error_with_file_line_and_key() -> None:
    text = '[server]\nhttp_port = 8080\n\n[tui.keymap]\n"sites.toggle" = "t"\n"sites.toggle_cach" = "c"\n'
    assert errors(text) == [
        f'{FILE}:6: tui.keymap.sites.toggle_cach: no binding has this id (did you mean "sites.toggle"?)'
    ]


def test_a_bad_key_is_an_error() -> None:
    text = '[tui.keymap]\nsites.add = "control+n"\n"sites.edit" = 5\n'
    assert errors(text) == [
        f'{FILE}:2: tui.keymap.sites.add: "control" in "control+n" is not a modifier '
        "(use ctrl, shift, alt, meta, super, hyper)",
        f'{FILE}:3: tui.keymap.sites.edit: expected a key as a string, such as "ctrl+k", got 5',
    ]


def test_unknown_tui_keys_are_errors() -> None:
    assert errors("[tui]\nkeymaps = {}\n") == [f'{FILE}:2: tui.keymaps: unknown key "keymaps"; did you mean "keymap"?']


@pytest.mark.parametrize("keys", ["c", "ctrl+k", "x,delete", "question_mark", "?", "f12", "shift+tab", "slash", "G"])
def test_keys_textual_knows(keys: str) -> None:
    assert key_problem(keys) is None


@pytest.mark.parametrize("keys", ["", "ctrl+bananas", "control+k", "f99", "two words"])
def test_keys_it_does_not(keys: str) -> None:
    assert key_problem(keys) is not None
