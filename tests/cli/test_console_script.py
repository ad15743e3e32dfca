"""``array-job-pipeline``, the console script the package installs, is the command line of
``python -m pipeline.submit``: the same commands, messages and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "array-job-pipeline"


def _run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *arguments], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_console_script_is_the_command_line() -> None:
    # GIVEN the installed console script and `python -m pipeline.submit`
    # WHEN each is given the same bad input
    script = _run("status", "--local", "--limit", "0")
    module = subprocess.run(
        [sys.executable, "-m", "pipeline.submit", "status", "--local", "--limit", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # THEN both refuse it the same way: one line, exit code 252
    assert (script.returncode, script.stderr) == (module.returncode, module.stderr)
    assert script.returncode == 252
    assert script.stderr == "error: --limit must be at least 1; got 0\n"


def test_its_help_names_it() -> None:
    shown = _run("--help")
    assert shown.returncode == 0
    assert shown.stdout.startswith("usage: array-job-pipeline ")
