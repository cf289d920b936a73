"""The package layout: no import cycle inside vmaudit, and no stage importing a later one.

The graph is read from the source (every ``import``, module-level or inside a function;
``if TYPE_CHECKING:`` blocks never run and are left out). ``from PKG import NAME`` is an
import of the submodule ``PKG.NAME`` when there is one, else of ``PKG`` itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vmaudit"

# Stages in pipeline order: a module may import its own stage and the ones before it.
LAYERS: list[tuple[str, ...]] = [
    (
        "vmaudit",
        "vmaudit.models",
        "vmaudit.errors",
        "vmaudit.timeutil",
        "vmaudit.clikit",
        "vmaudit.xdg",
        "vmaudit.text",
        "vmaudit.versions",
    ),
    ("vmaudit.discover",),
    ("vmaudit.guest",),
    ("vmaudit.collect",),
    ("vmaudit.judge",),
    ("vmaudit.baseline",),
    ("vmaudit.feeds",),
    ("vmaudit.state",),
    ("vmaudit.run",),
    ("vmaudit.report",),
    # The pipelines: a scan, a watch, a power-on decision or a repair drives every stage.
    ("vmaudit.scan", "vmaudit.watch", "vmaudit.act"),
    ("vmaudit.cli",),
]
# Formatters only render: they read the models and the judge's vocabulary, nothing else.
REPORT_MAY_IMPORT = (
    "vmaudit",
    "vmaudit.models",
    "vmaudit.errors",
    "vmaudit.timeutil",
    "vmaudit.text",
    "vmaudit.judge",
    "vmaudit.report",
)


@cache
def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


@cache
def source(path: Path) -> str:
    return path.read_text()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


@cache
def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(source(path), str(path))):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                if base not in modules:
                    continue
                for alias in node.names:
                    graph[name].add(
                        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    )
    for name in graph:
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "vmaudit" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = number, len(prefix)
    return best


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_a_cycle_is_found_when_there_is_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_every_module_belongs_to_a_stage() -> None:
    assert [name for name in module_names() if layer_of(name) < 0] == []


@pytest.mark.parametrize("module", sorted(module_names()))
def test_no_module_imports_a_later_stage(module: str) -> None:
    upward = sorted(
        target for target in import_graph()[module] if layer_of(target) > layer_of(module)
    )
    assert upward == [], f"{module} imports later stages"


def test_formatters_import_only_models_and_the_judge() -> None:
    graph = import_graph()
    reaching = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("vmaudit.report")
        for target in targets
        if not any(
            target == allowed or target.startswith(allowed + ".")
            for allowed in REPORT_MAY_IMPORT
            if allowed != "vmaudit"
        )
        and target != "vmaudit"
    }
    assert sorted(reaching) == []
