"""The layout's rules, read from the code: every module of ``pipeline/`` (the job programs
included) sits on a floor, imports only from its own floor's package or floors below, no
module imports another's private names, and there is no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipeline"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

FLOORS: tuple[tuple[str, ...], ...] = (
    ("pipeline.errors", "pipeline.batch_facts"),
    ("pipeline.contract", "pipeline.limits", "pipeline.step_imports"),
    ("pipeline.steps",),
    ("pipeline.spec", "pipeline.instances"),
    ("pipeline.document", "pipeline.failure_events", "pipeline.trigger_events"),
    ("pipeline.jobs",),
    ("pipeline.runs", "pipeline.local", "pipeline.constructs"),
    ("pipeline.backends", "pipeline.stacks"),
    ("pipeline.cli",),
    ("pipeline.submit", "pipeline.__main__", "pipeline.starter", "pipeline"),
)
"""Floors, lowest first. A module belongs to the longest name here that it is or is inside."""


def floor_of(module: str) -> tuple[int, str]:
    """(floor, the name on it) of ``module``."""
    found = [
        (number, name)
        for number, names in enumerate(FLOORS)
        for name in names
        if module == name or (name != "pipeline" and module.startswith(f"{name}."))
    ]
    assert found, f"{module} is on no floor: add it to FLOORS in tests/project/test_architecture.py"
    return max(found, key=lambda f: len(f[1]))


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
            names = [f"{node.module}.{a.name}" for a in node.names]
            if not any(name in MODULES for name in names):  # names from a module, not modules
                names = [node.module]
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


def test_the_walk_sees_the_package_and_the_job_programs() -> None:
    assert {
        "pipeline.spec",
        "pipeline.runs.engine",
        "pipeline.local.batch.models",
        "pipeline.jobs.job_a",
        "pipeline.cli.commands",
    } <= set(GRAPH)
    assert "pipeline.cli.commands" in GRAPH["pipeline.submit"]


def test_every_module_is_on_a_floor() -> None:
    for module in MODULES:
        floor_of(module)


def test_no_import_cycle_in_pipeline() -> None:
    assert _cycles() == []


def test_a_cycle_would_be_found() -> None:
    GRAPH["pipeline.spec"].add("pipeline.submit")
    try:
        assert _cycles()
    finally:
        GRAPH["pipeline.spec"].discard("pipeline.submit")


def upward_imports() -> set[str]:
    """Imports of a package on the same floor or of a floor above."""
    wrong = set()
    for module, targets in GRAPH.items():
        floor, name = floor_of(module)
        for target in targets:
            target_floor, target_name = floor_of(target)
            if target_name != name and target_floor >= floor:
                wrong.add(f"{module} (floor {floor}) imports {target} (floor {target_floor})")
    return wrong


def test_every_import_goes_down() -> None:
    assert upward_imports() == set()


def test_an_upward_import_would_be_found() -> None:
    GRAPH["pipeline.runs.engine"].add("pipeline.cli.commands")
    try:
        assert "pipeline.runs.engine (floor 6) imports pipeline.cli.commands (floor 8)" in (
            upward_imports()
        )
    finally:
        GRAPH["pipeline.runs.engine"].discard("pipeline.cli.commands")


@pytest.mark.parametrize("module", ["pipeline.errors", "pipeline.batch_facts"])
def test_the_ground_imports_nothing_of_ours(module: str) -> None:
    assert GRAPH[module] == set()


def private_imports() -> set[str]:
    """``from pipeline.x import _name``: a private name used outside its module."""
    found = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                for alias in node.names:
                    if alias.name.startswith("_") and node.module != module:
                        found.add(f"{module} imports {node.module}.{alias.name}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    assert private_imports() == set()


def test_no_module_is_over_600_lines() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


ENGINE = "pipeline.local.batch"
ENGINE_MAY_IMPORT = {"pipeline.errors", "pipeline.batch_facts"}


def engine_imports_outside() -> set[str]:
    """What the engine's modules import of the library beyond itself, errors and the facts."""
    return {
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module == ENGINE or module.startswith(f"{ENGINE}.")
        for target in targets
        if target not in ENGINE_MAY_IMPORT and not target.startswith(f"{ENGINE}.")
    }


def test_the_engine_imports_only_errors_and_the_batch_facts() -> None:
    assert engine_imports_outside() == set()


def test_an_engine_import_of_the_pipeline_would_be_found() -> None:
    GRAPH["pipeline.local.batch.scheduler"].add("pipeline.contract")
    try:
        assert engine_imports_outside() == {
            "pipeline.local.batch.scheduler imports pipeline.contract"
        }
    finally:
        GRAPH["pipeline.local.batch.scheduler"].discard("pipeline.contract")


def test_the_engine_knows_no_pipeline_name() -> None:
    # GIVEN every source line of the engine package
    engine = PACKAGE / "local" / "batch"
    named = {
        f"{path.name}:{number}: {line.strip()}"
        for path in engine.glob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for name in ("PIPELINE_", "pipeline.jobs", "ProdQueue", "JobA", "JobB", "JobE")
        if name in line
    }
    # THEN none names the pipeline's variables, programs, queue or jobs
    assert named == set()
