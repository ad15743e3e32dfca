"""The layout's rules, read from the code: data flows spec -> constructs -> stacks and
spec -> runs -> backends, with the CLI on top; no import cycle anywhere in ``pipeline/``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pipeline"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(module: str) -> set[str]:
    """Every ``pipeline`` module this one imports, at any level (functions and
    ``TYPE_CHECKING`` blocks included: a lazy import is still a dependency)."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {name for name in names if name in MODULES and name != module}
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in GRAPH[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_package() -> None:
    assert {"pipeline.spec", "pipeline.runs.engine", "pipeline.local.batch"} <= set(GRAPH)
    assert "pipeline.runs.engine" in GRAPH["pipeline.submit"]


def test_no_import_cycle_in_pipeline() -> None:
    assert _cycles() == []


def test_a_cycle_would_be_found() -> None:
    GRAPH["pipeline.spec"].add("pipeline.submit")
    try:
        assert _cycles()
    finally:
        GRAPH["pipeline.spec"].discard("pipeline.submit")


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        (
            "pipeline.runs",
            ("pipeline.submit", "pipeline.constructs", "pipeline.stacks", "pipeline.local"),
        ),
        ("pipeline.local", ("pipeline.submit", "pipeline.constructs", "pipeline.stacks")),
        ("pipeline.constructs", ("pipeline.submit", "pipeline.runs", "pipeline.local")),
        ("pipeline.spec", ("pipeline.",)),
        (
            "pipeline.document",
            ("pipeline.submit", "pipeline.runs", "pipeline.local", "pipeline.constructs"),
        ),
        (
            "pipeline.trigger_events",
            ("pipeline.submit", "pipeline.runs", "pipeline.local", "pipeline.constructs"),
        ),
        (
            "pipeline.starter",
            ("pipeline.submit", "pipeline.local", "pipeline.constructs", "pipeline.stacks"),
        ),
        ("pipeline.aws", ("pipeline.submit", "pipeline.local", "pipeline.constructs")),
    ],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    wrong = {
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module == layer or module.startswith(f"{layer}.")
        for target in targets
        if target.startswith(forbidden)
    }
    assert wrong == set()
