"""Every benchmark under bench/ runs, at a small size: a script that no longer runs (a
renamed module, a variable the job programs now need) fails here, not on the day someone
wants its figures. The figures themselves are not checked: they depend on the machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers.paths import REPO

SMALL = {
    "inputs.py": ["--objects", "40", "--array-size", "4"],
    "jobc_memory.py": ["1", "4"],
    "jobs.py": ["--objects", "40", "--heavy-objects", "4"],
    "local.py": ["--small", "2", "--large", "4"],
    "synth.py": ["--rounds", "1"],
    "watch.py": [],
}
"""Each script, with the arguments of its smallest run; every script must be here."""

pytestmark = pytest.mark.slow  # each runs the pipeline, moto or a synthesis


def test_every_benchmark_has_a_small_run() -> None:
    assert sorted(SMALL) == sorted(p.name for p in (REPO / "bench").glob("*.py"))


@pytest.mark.parametrize(("script", "arguments"), sorted(SMALL.items()))
def test_the_benchmark_runs_at_a_small_size(script: str, arguments: list[str]) -> None:
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    env.pop("PIPELINE_LOCAL_STATE_DIR", None)
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *arguments],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stdout.strip(), "it printed no figures"
