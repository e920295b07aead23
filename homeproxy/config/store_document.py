"""Edits to the tomlkit document that keep the user's comments in place: find a site, set a key, remove a site."""

from __future__ import annotations

from typing import Any

import tomlkit
from tomlkit.items import AoT, Array, Comment, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from homeproxy.config.model import (
    AuthSettings,
    CacheSettings,
    CompressionSettings,
    Config,
    HeaderRules,
    Site,
)
from homeproxy.config.store_toml import _toml_value


def _find_site(doc: TOMLDocument, name: str) -> Table:
    for table in doc.get("sites", []):
        if table.get("name") == name:
            return table  # type: ignore[no-any-return]
    raise KeyError(f'no site named "{name}"')


def _model_site(config: Config, name: str) -> Site:
    site = config.site(name)
    if site is None:
        raise KeyError(f'no site named "{name}"')
    return site


def _is_default_settings(value: Any) -> bool:
    settings = (CacheSettings, CompressionSettings, AuthSettings, HeaderRules)
    return isinstance(value, settings) and value == type(value)()


def _trailing_start(table: Table) -> int:
    """Index in `table`'s body where its trailing comments and blank lines start.

    tomlkit files the comments above a `[[sites]]` heading under the table
    before it; edits must keep them where the user sees them, above the heading.
    """
    body = table.value.body
    i = len(body)
    while i > 0 and body[i - 1][0] is None and isinstance(body[i - 1][1], (Comment, Whitespace)):
        i -= 1
    return i


def _set_key(table: Table, key: str, value: Any) -> None:
    """Set one key, keeping comments: an existing array is edited in place, a new key
    goes after the table's last key (not under the next table's heading comment)."""
    if (key == "routes" and not value) or value is None or _is_default_settings(value):
        table.pop(key, None)  # back to the default: the key goes (e.g. auth turned off)
        return
    new = _toml_value(key, value)
    old = table.get(key)
    if isinstance(old, Array) and isinstance(new, list) and not isinstance(new, AoT):
        for i in reversed(range(len(old))):
            if old[i] not in new:
                del old[i]
        for v in new:
            if v not in old:
                old.append(v)
        if list(old) == new:
            return
    at = _trailing_start(table)
    if key in table or key == "routes" or at >= len(table.value.body):
        table[key] = new
        return
    table.value._insert_at(at, key, tomlkit.item(new))


def _remove_table(doc: TOMLDocument, sites: AoT, index: int) -> None:
    """Delete `sites[index]`, moving the comments that head the next table (or end the
    file), which tomlkit keeps inside the deleted one, to where they belong."""
    table = sites[index]
    start = _trailing_start(table)
    carried = table.value.body[start:]
    # The blank lines that separated the deleted table from what follows go with it.
    while carried and isinstance(carried[0][1], Whitespace):
        carried = carried[1:]
    del table.value.body[start:]
    del sites[index]
    if not carried:
        return
    if index > 0:
        target = sites[index - 1].value
        for _, item in carried:
            target.append(None, item)
    elif not len(sites):
        for _, item in carried:
            doc.append(None, item)
    else:
        # They head what is now the first table: put them in the document, above the array.
        body = doc.body
        pos = next(i for i, (k, v) in enumerate(body) if v is sites)
        for n, (_, item) in enumerate(carried):
            body.insert(pos + n, (None, item))
        shift = len(carried)
        # tomlkit's key -> body index map must follow the insertion.
        for k, v in doc._map.items():
            doc._map[k] = (
                tuple(i + shift if i >= pos else i for i in v)
                if isinstance(v, tuple)
                else (v + shift if v >= pos else v)
            )
