"""The claims register: each section of the security page, and each row of the CLI reference's
exit-code and error tables, names the tests that prove it; each named test exists and is not
skipped, and an error row's test expects the row's message, so a claim cannot outlive its
proof or drift from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers.paths import REPO

SECURITY_PAGE = REPO / "docs" / "security.md"
CLI_PAGE = REPO / "docs" / "cli.md"
NAMED = re.compile(r"`tests/((?:\w+/)*test_\w+\.py)::(test_\w+)`")
PLACEHOLDER = re.compile(r"\bX\b|\.\.\.|[()`]")
"""What an error row writes for a value that varies (a name: X; an elided part: ...), and the
punctuation a test may leave out of what it expects."""


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


def _module(file_name: str, tests: Path) -> ast.Module:
    path = tests / file_name
    return ast.parse(path.read_text()) if path.exists() else ast.Module(body=[], type_ignores=[])


def named_test_problems(where: str, text: str, tests: Path = REPO / "tests") -> list[str]:
    """What is wrong with the tests ``text`` names: none named, one that does not exist or is
    always skipped."""
    named = NAMED.findall(text)
    if not named:
        return [f"{where} names no test"]
    found = []
    for file_name, test_name in named:
        functions = [
            node
            for node in _module(file_name, tests).body
            if isinstance(node, ast.FunctionDef) and node.name == test_name
        ]
        if not functions:
            found.append(f"{where}: tests/{file_name}::{test_name} does not exist")
        elif _skipped_unconditionally(functions[0]):
            found.append(f"{where}: tests/{file_name}::{test_name} is skipped")
    return found


def problems(page: str) -> list[str]:
    """What is wrong with the security page's register, section by section."""
    parts = re.split(r"^## (.+)$", page, flags=re.MULTILINE)
    found: list[str] = []
    for title, text in zip(parts[1::2], parts[2::2], strict=True):
        found += named_test_problems(f"section {title!r}", text)
    return found


def table_rows(page: str, section: str) -> list[list[str]]:
    """The cells of each body row of the first table under ``## section``."""
    text = f"\n{page}".split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    cells = [re.split(r"(?<!\\)\|", row.strip())[1:-1] for row in rows[2:]]
    return [[cell.strip() for cell in row] for row in cells]


def _strings(file_name: str, tests: Path) -> list[str]:
    """Every string constant of a test file (implicitly joined literals are one)."""
    return [
        node.value
        for node in ast.walk(_module(file_name, tests))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def message_problems(
    where: str, message_cell: str, tests_cell: str, tests: Path = REPO / "tests"
) -> list[str]:
    """A row's message that none of its tests expects: each literal part of the message (what
    is left between its placeholders) must be in a string of a named test's file, or contain
    one of at least 20 characters (a test may expect the message's beginning only)."""
    quoted = re.fullmatch(r"(`+) ?(.+?) ?\1(?!`).*", message_cell)
    if quoted is None or not NAMED.search(tests_cell):
        return []  # not a message (e.g. "nothing: a closed stdout ends quietly"), or no test
    strings = [s for f, _ in NAMED.findall(tests_cell) for s in _strings(f, tests)]
    found = []
    for part in (p.strip() for p in PLACEHOLDER.split(quoted.group(2))):
        if len(part) < 12:
            continue  # too short to tell one message from another
        if not any(part in s or (len(s) >= 20 and s in part) for s in strings):
            found.append(f"{where}: no named test expects {part!r}")
    return found


def cli_problems(page: str, tests: Path = REPO / "tests") -> list[str]:
    found: list[str] = []
    for code, _meaning, named in table_rows(page, "Exit codes"):
        found += named_test_problems(f"exit code {code}", named, tests)
        files = {f for f, _ in NAMED.findall(named)}
        if not any(re.search(rf"\b{code}\b", (tests / f).read_text()) for f in files):
            found.append(f"exit code {code}: no named test file mentions {code}")
    for row in table_rows(page, "Errors"):
        flag, _exit, message, named = row
        found += named_test_problems(f"error row {flag}", named, tests)
        found += message_problems(f"error row {flag}", message, named, tests)
    return found


def test_every_security_claim_names_tests_that_exist_and_run() -> None:
    page = SECURITY_PAGE.read_text()
    assert page.count("\n## ") >= 9
    assert problems(page) == []


def test_every_exit_code_and_error_row_names_tests_that_expect_it() -> None:
    page = CLI_PAGE.read_text()
    assert len(table_rows(page, "Exit codes")) == 7
    assert len(table_rows(page, "Errors")) >= 20
    assert cli_problems(page) == []


def test_the_register_reports_a_claim_without_proof() -> None:
    page = (
        "## Proved\n\nTests: "
        "`tests/project/test_claims.py::test_the_register_reports_a_claim_without_proof`.\n"
        "## Gone\n\nTests: `tests/constructs/test_security.py::test_a_claim_nobody_proves`.\n"
        "## Unproved\n\nA claim with no test.\n"
    )
    assert problems(page) == [
        "section 'Gone': tests/constructs/test_security.py::test_a_claim_nobody_proves "
        "does not exist",
        "section 'Unproved' names no test",
    ]


def test_the_register_reports_an_error_row_its_tests_do_not_expect(tmp_path: Path) -> None:
    # GIVEN a test file that expects one message, and a CLI page whose rows claim others
    (tmp_path / "test_x.py").write_text(
        "def test_refused():\n"
        "    assert err.startswith('error: --array-size must be from 2 to 10,000')\n"
        "    assert code == 252\n"
    )
    named = "`tests/test_x.py::test_refused`"
    page = (
        "## Exit codes\n\n| code | meaning | test |\n| --- | --- | --- |\n"
        f"| 252 | invalid input | {named} |\n"
        f"| 254 | AWS said no | {named} |\n"
        "\n## Errors\n\n| input | exit | message begins | test |\n| --- | --- | --- | --- |\n"
        f"| `--array-size 1` | 252 | `error: --array-size must be from 2 to 10,000` | {named} |\n"
        f"| `--array-size X` | 252 | `error: --array-size must be whole` | {named} |\n"
        "| `--limit 0` | 252 | `error: --limit must be at least 1` | no test |\n"
    )
    # THEN the agreeing row passes and each other claim is reported
    assert cli_problems(page, tmp_path) == [
        "exit code 254: no named test file mentions 254",
        "error row `--array-size X`: no named test expects 'error: --array-size must be whole'",
        "error row `--limit 0` names no test",
    ]
