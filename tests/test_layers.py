"""The package layers import downwards only, with no cycle and no import hidden in a function.

Layers, lowest first (README "Layout"). A package may import its own layer (without a
cycle) and any layer below; never one above.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "healthforms"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {
            "__init__",
            "errors",
            "config",
            "clock",
            "files",
            "images",
            "languages",
            "logs",
            "metrics",
            "processes",
        }
    ),
    frozenset({"redis", "db", "crypto", "email"}),
    frozenset({"security", "outbox"}),
    frozenset({"state"}),
    frozenset({"audit"}),
    frozenset({"http"}),
    frozenset(
        {
            "identity",
            "forms",
            "responses",
            "submissions",
            "pdf",
            "health",
            "web",
            "alerts",
            "retention",
            "exports",
            "patient_requests",
            "branding",
            "uploads",
            "webhooks",
            "fhir",
            "backup",
        }
    ),
    frozenset({"app", "cli", "migrations", "__main__"}),
)
LAYER_OF = {name: depth for depth, layer in enumerate(LAYERS) for name in layer}


def _imported_modules(node: ast.AST, path: Path, root: Path) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against the file's package
            base = list(path.relative_to(root.parent).with_suffix("").parts[: -node.level])
            yield ".".join([*base, node.module] if node.module else base)
        elif node.module:
            yield node.module


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Top-level package -> the other top-level packages it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        me = path.relative_to(root).parts[0].removesuffix(".py")
        graph.setdefault(me, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for module in _imported_modules(node, path, root):
                parts = module.split(".")
                if parts[0] == "healthforms" and len(parts) > 1 and parts[1] != me:
                    graph[me].add(parts[1])
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    return [
        f"{source} (layer {LAYER_OF[source]}) imports {target} (layer {LAYER_OF[target]})"
        for source, targets in sorted(graph.items())
        for target in sorted(targets)
        if LAYER_OF[target] > LAYER_OF[source]
    ]


def test_every_package_has_a_layer() -> None:
    assert set(import_graph()) - set(LAYER_OF) == set()


def test_packages_import_each_other_in_no_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_packages_import_downwards_only() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_of_our_own_modules_hides_in_a_function() -> None:
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                if any(m.startswith("healthforms") for m in _imported_modules(node, path, PACKAGE)):
                    hidden.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert hidden == []


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """A deliberately added cycle (security -> audit -> security) fails the checks above."""
    root = tmp_path / "healthforms"
    (root / "security").mkdir(parents=True)
    (root / "audit").mkdir()
    (root / "security" / "ratelimit.py").write_text("from healthforms.audit import events\n")
    (root / "audit" / "events.py").write_text("import healthforms.security.principal\n")
    graph = import_graph(root)
    assert graph == {"audit": {"security"}, "security": {"audit"}}
    assert find_cycle(graph) == ["audit", "security", "audit"]
    assert upward_imports(graph) == ["security (layer 2) imports audit (layer 4)"]


@pytest.mark.parametrize("relative", ["from . import x", "from ..state import AppState"])
def test_relative_imports_are_resolved(tmp_path: Path, relative: str) -> None:
    root = tmp_path / "healthforms"
    (root / "http").mkdir(parents=True)
    (root / "http" / "edge.py").write_text(relative + "\n")
    expected = {"state"} if "state" in relative else set()
    assert import_graph(root) == {"http": expected}
