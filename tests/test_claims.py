"""The claims register: each section of the security page names the tests that prove it, and
each named test exists and is not skipped, so a claim cannot outlive its proof."""

from __future__ import annotations

import ast
import re

from conftest import REPO

PAGE = REPO / "docs" / "security.md"
NAMED = re.compile(r"`tests/(test_\w+\.py)::(test_\w+)`")


def _skipped_unconditionally(function: ast.FunctionDef) -> bool:
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if ast.unparse(target) == "pytest.mark.skip":
            return True
    first = function.body[0] if function.body else None
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Call)
        and ast.unparse(first.value.func) == "pytest.skip"
    )


def problems(page: str) -> list[str]:
    """What is wrong with the page's register: a section that names no test, a named test that
    does not exist or is always skipped."""
    parts = re.split(r"^## (.+)$", page, flags=re.MULTILINE)
    found: list[str] = []
    for title, text in zip(parts[1::2], parts[2::2], strict=True):
        named = NAMED.findall(text)
        if not named:
            found.append(f"section {title!r} names no test")
        for file_name, test_name in named:
            path = REPO / "tests" / file_name
            tree = ast.parse(path.read_text()) if path.exists() else ast.Module(body=[])
            functions = [
                node
                for node in tree.body
                if isinstance(node, ast.FunctionDef) and node.name == test_name
            ]
            if not functions:
                found.append(f"{title}: tests/{file_name}::{test_name} does not exist")
            elif _skipped_unconditionally(functions[0]):
                found.append(f"{title}: tests/{file_name}::{test_name} is skipped")
    return found


def test_every_security_claim_names_tests_that_exist_and_run() -> None:
    page = PAGE.read_text()
    assert page.count("\n## ") >= 9
    assert problems(page) == []


def test_the_register_reports_a_claim_without_proof() -> None:
    page = (
        "## Proved\n\nTests: "
        "`tests/test_claims.py::test_the_register_reports_a_claim_without_proof`.\n"
        "## Gone\n\nTests: `tests/test_security.py::test_a_claim_nobody_proves`.\n"
        "## Unproved\n\nA claim with no test.\n"
    )
    assert problems(page) == [
        "Gone: tests/test_security.py::test_a_claim_nobody_proves does not exist",
        "section 'Unproved' names no test",
    ]
