"""Layering is law: the engine and the config never import the TUI or Textual, and no two modules of
engine/features/ import each other."""

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


FEATURES = ROOT / "engine" / "features"


def _modules(folder: Path, package: str) -> dict[str, Path]:
    """The dotted name of every module in `folder` (the package `package`), subpackages included."""
    modules: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _targets(path: Path, name: str) -> set[str]:
    """Every module `path` (the module `name`) may import, wherever the import is: at the top, in a
    function, under TYPE_CHECKING. `from p import x` names `p` and `p.x` (x may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `.` is this module's package, each further dot one up
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return targets


def _import_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """Which modules of the package each of its modules imports.

    A package's `__init__` importing its own submodules is left out: that is where the parts are
    put together (`features/__init__.py` builds the chain from every feature, lazily, and the
    features take `FeatureContext` from it; `cache/__init__.py` re-exports its parts)."""
    modules = _modules(folder, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = name + "." if path.name == "__init__.py" else None
        graph[name] = {
            t for t in _targets(path, name) if t in modules and t != name and not (own and t.startswith(own))
        }
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a longer circle."""
    reach: dict[str, set[str]] = {}
    for start in graph:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(graph[node])
        reach[start] = seen
    circles = {frozenset({a, *(b for b in reach[a] if a in reach[b])}) for a in graph if a in reach[a]}
    return sorted(sorted(c) for c in circles)


def test_no_two_features_import_each_other() -> None:
    graph = _import_graph(FEATURES, "homeproxy.engine.features")
    assert "homeproxy.engine.features.auth" in graph, sorted(graph)
    assert not _circles(graph), f"modules under engine/features/ import each other: {_circles(graph)}"


def test_the_checker_sees_an_import_circle(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("def build():\n    from pkg import a\n")
    (package / "a.py").write_text("from pkg import Context\n\ndef f():\n    from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import C\n"
    )
    (package / "c.py").write_text("import pkg.a\n")
    graph = _import_graph(package, "pkg")
    assert graph["pkg.a"] == {"pkg", "pkg.sub", "pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert _circles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    (package / "c.py").write_text("import pkg\n")
    assert _circles(_import_graph(package, "pkg")) == []


TUI_PARTS = sorted([*(ROOT / "tui" / "screens").rglob("*.py"), *(ROOT / "tui" / "widgets").rglob("*.py")])


def _imports_anywhere(path: Path, package: str) -> set[str]:
    """Every module `path` (a module of `package`) imports, wherever the import is (at the top, in a
    function, under TYPE_CHECKING), relative imports resolved; `from p import x` names `p` and `p.x`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _package_of(path: Path) -> str:
    return ".".join(["homeproxy", *path.parent.relative_to(ROOT).parts])


def test_the_tui_parts_exist() -> None:
    assert len(TUI_PARTS) >= 10, TUI_PARTS


@pytest.mark.parametrize("path", TUI_PARTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_screens_and_widgets_do_not_import_the_app(path: Path) -> None:
    found = _imports_anywhere(path, _package_of(path))
    bad = sorted(n for n in found if n == "homeproxy.tui.app" or n.startswith("homeproxy.tui.app."))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: take what it needs from `Services` instead"


def test_the_checker_sees_the_app_imported(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from homeproxy.tui.app import HomeproxyApp\n"
    )
    assert "homeproxy.tui.app" in _imports_anywhere(probe, "homeproxy.tui.screens")
    probe.write_text("def f():\n    from .. import app\n")
    assert "homeproxy.tui.app" in _imports_anywhere(probe, "homeproxy.tui.screens")
    probe.write_text("from homeproxy.tui import app as a\n")
    assert "homeproxy.tui.app" in _imports_anywhere(probe, "homeproxy.tui.widgets")
    probe.write_text("from homeproxy.tui.format import safe_text\n")
    assert "homeproxy.tui.app" not in _imports_anywhere(probe, "homeproxy.tui.widgets")
