"""``python -m pipeline.submit`` as a user runs it: a process of its own, with no AWS
configuration of the machine's and a local state folder of its own. The one subprocess
harness of the command line (``helpers.batch.cli_in_process`` runs it in this process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers.paths import REPO


def cli_env(home: Path) -> dict[str, str]:
    """This machine's environment without AWS settings, local runs kept under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHONPATH"))}
    env["AWS_CONFIG_FILE"] = str(home / "none")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "none")
    env["PIPELINE_LOCAL_STATE_DIR"] = str(home / "state")
    return env


def run_cli(
    home: Path,
    *args: str,
    python: str = sys.executable,
    cwd: Path = REPO,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run the command line to its end; (exit code, stdout, stderr) in the result."""
    return subprocess.run(
        [python, "-m", "pipeline.submit", *args],
        cwd=cwd,
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_cli(home: Path, *args: str, cwd: Path = REPO) -> subprocess.Popen[str]:
    """Start the command line in ``cwd`` and return at once (its output is piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.submit", *args],
        cwd=cwd,
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def serving(
    cwd: Path, env: dict[str, str], *arguments: str
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """``python -m pipeline.local serve --json ARGUMENTS`` in a session of its own, in ``cwd``
    with ``env``; yields its process and what it printed when ready (endpoint, region,
    credentials), and stops it on the way out."""
    services = subprocess.Popen(
        [sys.executable, "-m", "pipeline.local", "serve", "--json", *arguments],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert services.stdout is not None
        yield services, json.loads(services.stdout.readline())
    finally:
        if services.poll() is None:
            services.terminate()
        services.wait(timeout=60)


@contextmanager
def served(cwd: Path, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """``serve --with-pipeline`` (see :func:`serving`); what it printed when ready."""
    with serving(cwd, env, "--with-pipeline") as (_, ready):
        yield ready
