"""The four packages point one way: topics <- policies <- workers <- infra.

A lower package never imports a higher one, not even inside a function or under
``TYPE_CHECKING``: the runtime receives plain specs it defines itself. And no two
modules import each other at module level, so every module can be read (and
imported) after the ones it names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("topics", "policies", "workers", "infra")
RANK = {name: rank for rank, name in enumerate(LAYERS)}


def _modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path, module_level_only: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every import of one of the four packages in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from package import module`` names the module; ``from module import name`` the module
            for alias in node.names:
                named = f"{node.module}.{alias.name}"
                found.append((node.lineno, named if named in MODULES else node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in RANK]


def test_every_package_is_found() -> None:
    assert {name.split(".")[0] for name in MODULES} == set(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    own = RANK[module.split(".")[0]]
    upward = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {name}"
        for line, name in _imports(MODULES[module], module_level_only=False)
        if RANK[name.split(".")[0]] > own
    ]
    assert not upward, "; ".join(upward)


def test_no_two_modules_import_each_other_at_module_level() -> None:
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges[module] = {name for _, name in _imports(path, module_level_only=True) if name in MODULES} - {module}
    cycles = sorted(
        f"{a} <-> {b}" for a, targets in edges.items() for b in targets if a < b and a in edges.get(b, set())
    )
    assert not cycles, ", ".join(cycles)
