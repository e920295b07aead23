"""Layering is law: the engine and the config never import the TUI or Textual."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "homeproxy"
FORBIDDEN = ("textual", "rich", "homeproxy.tui")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


LAYERED = sorted([*(ROOT / "engine").rglob("*.py"), *(ROOT / "config").rglob("*.py")])


def test_the_layers_exist() -> None:
    assert len(LAYERED) >= 10, LAYERED


@pytest.mark.parametrize("path", LAYERED, ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_and_config_do_not_import_the_ui(path: Path) -> None:
    bad = [n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "config").rglob("*.py")), ids=lambda p: p.name)
def test_config_does_not_import_the_engine(path: Path) -> None:
    bad = [n for n in _imports(path) if n.startswith("homeproxy.engine")]
    assert not bad, f"config/{path.name} imports {bad}"


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from textual.app import App\nimport rich.text\n")
    assert _imports(probe) == ["textual.app", "rich.text"]
