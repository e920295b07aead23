"""Every stored snapshot belongs to a test that still exists.

syrupy fails a run that leaves a snapshot unused, but not under pytest-xdist (which pyproject's
addopts turns on): this keeps that check whichever way the suite runs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

SNAPSHOTS = Path(__file__).parent / "__snapshots__"


def _ids(function: object) -> set[str]:
    """The ids of the `parametrize` marks on a test function."""
    ids: set[str] = set()
    for mark in getattr(function, "pytestmark", []):
        if mark.name == "parametrize":
            ids.update(str(i) for i in mark.kwargs.get("ids", ()))
    return ids


@pytest.mark.parametrize("path", sorted(SNAPSHOTS.glob("*/*.svg")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_snapshot_has_its_test(path: Path) -> None:
    module = importlib.import_module(f"tests.tui.{path.parent.name}")
    match = re.fullmatch(r"(?P<name>test_\w+)(\[(?P<id>[^\]]+)\])?", path.stem)
    assert match is not None, f"{path.name} is not a test's snapshot"
    function = getattr(module, match["name"], None)
    assert callable(function), f"{path.parent.name}/{path.name} has no test: remove it"
    if match["id"] is not None:
        assert match["id"] in _ids(function), f"{path.parent.name}/{path.name}: no such parameter"


def test_there_are_snapshots() -> None:
    assert len(list(SNAPSHOTS.glob("*/*.svg"))) > 10
