"""Real work through ``--local``, as a data engineer meets it: sales CSVs, a Python CPU step
that dies on one file and hangs on another, an awk memory step with its braces; the run goes
on, every file accounted for; the step fixed, ``resume --rejected`` from another folder brings
the run up to date; ``logs`` prints a failed child's log; a run that processes nothing fails."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from helpers.cli import run_cli

pytestmark = pytest.mark.slow

STEPS = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    from pipeline import PipelineSteps, Step


    def revenue(source: Path, target: Path, obj) -> dict:
        rows = [line.split(",") for line in source.read_text().splitlines()[1:]]
        if any(sku == "CRASH" for sku, _, _ in rows):
            os._exit(3)
        if any(sku == "HANG" for sku, _, _ in rows):
            time.sleep(3600)
        total = sum(int(qty) * float(price) for _, qty, price in rows)
        lines = [f"{sku} {int(qty) * float(price):.2f}\\n" for sku, qty, price in rows]
        target.write_text("".join(lines))
        return {"revenue": round(total, 2)}


    STEPS = PipelineSteps(
        cpu=Step.python("salessteps:revenue", object_timeout=3),
        memory=Step.command(
            "awk '{sum[$1] += $2} END {for (s in sum) printf \\"%s %.2f\\\\n\\", s, sum[s]}' "
            "{input} | sort > {output}"
        ),
    )
    NOTHING = PipelineSteps(cpu=STEPS.cpu, memory=Step.command("false {input}"))
    """
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: the steps module and a folder of sales files, two of them bad."""
    root = tmp_path_factory.mktemp("sales")
    (root / "salessteps.py").write_text(STEPS)
    sales = root / "sales"
    sales.mkdir()
    for day in range(1, 7):
        (sales / f"day-{day}.csv").write_text("sku,qty,price\nA,2,1.50\nB,1,4.00\nA,1,1.50\n")
    (sales / "crash.csv").write_text("sku,qty,price\nCRASH,1,1\n")
    (sales / "hang.csv").write_text("sku,qty,price\nHANG,1,1\n")
    return root


def _cli(project: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(project, *args, cwd=cwd or project, timeout=300)


@pytest.fixture(scope="module")
def first_run(project: Path) -> subprocess.CompletedProcess[str]:
    return _cli(
        project,
        "--local",
        "--steps",
        "salessteps:STEPS",
        "--input",
        "sales",
        "--array-size",
        "2",
        "--run-id",
        "sales-1",
        "--output",
        "out",
    )


def _rejects(project: Path, run_id: str) -> dict[str, str]:
    copied = json.loads((project / "out" / run_id / "rejects.json").read_text())
    return {r["key"]: r["reason"] for r in copied["rejects"]}


def test_a_step_that_dies_or_hangs_on_one_file_rejects_that_file_only(
    project: Path, first_run: subprocess.CompletedProcess[str]
) -> None:
    # GIVEN the sales files, one the step dies on and one it hangs on
    # WHEN they are run
    # THEN the run succeeds, those two rejected with why, every other file processed
    assert first_run.returncode == 0, first_run.stderr[-3000:]
    assert _rejects(project, "sales-1") == {
        "crash.csv": "cpu step: the step's worker exited with status 3",
        "hang.csv": "cpu step: timed out after 3 s",
    }
    summary = json.loads((project / "out" / "sales-1" / "summary.json").read_text())
    assert summary["objects"] == {"listed": 8, "processed": 6, "rejected": 2}
    # AND awk's braces reached awk: the outputs are its per-SKU sums
    output = project / "out" / "sales-1" / "outputs" / "day-1.csv"
    assert output.read_text() == "A 4.50\nB 4.00\n"
    # AND the run's last lines say how to read its logs
    hint = "read a job's log with `python -m pipeline.submit logs sales-1 JOB[:INDEX] --local`"
    assert hint in first_run.stderr


def test_fixed_and_retried_from_another_folder_the_run_is_up_to_date(
    project: Path, first_run: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    assert first_run.returncode == 0
    # GIVEN the step fixed to skip those rows
    module = project / "salessteps.py"
    module.write_text(
        module.read_text()
        .replace("os._exit(3)", "rows = [r for r in rows if r[0] != 'CRASH']")
        .replace("time.sleep(3600)", "rows = [r for r in rows if r[0] != 'HANG']")
    )
    # WHEN the run's rejected objects are retried, from another folder
    retried = _cli(
        project,
        "resume",
        "sales-1",
        "--rejected",
        "--local",
        "--output",
        str(project / "out"),
        cwd=tmp_path,
    )
    # THEN every file is processed, and the summary, rejects and outputs say so
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "run sales-1: retrying its rejected objects: keeping JobA" in retried.stderr
    assert _rejects(project, "sales-1") == {}
    summary = json.loads((project / "out" / "sales-1" / "summary.json").read_text())
    assert summary["objects"] == {"listed": 8, "processed": 8, "rejected": 0}
    outputs = json.loads((project / "out" / "sales-1" / "outputs.json").read_text())
    assert set(outputs) == {f"day-{d}.csv" for d in range(1, 7)} | {"crash.csv", "hang.csv"}


def test_logs_of_a_failed_child_prints_its_log_from_the_run_folder(project: Path) -> None:
    # GIVEN a run whose JobB child 1 fails
    failed = _cli(
        project,
        "--local",
        "--input",
        "sales",
        "--array-size",
        "2",
        "--run-id",
        "sales-2",
        "--inject",
        "JobB:1=exit:2",
    )
    assert failed.returncode == 1
    # THEN its report names the command that prints that child's log, not a stream
    command = "python -m pipeline.submit logs sales-2 JobB:1 --local"
    assert f"its log: `{command}`" in failed.stderr.splitlines()[-1]
    assert "log stream" not in failed.stdout + failed.stderr
    # WHEN that command runs
    shown = _cli(project, "logs", "sales-2", "JobB:1", "--local")
    # THEN it prints the child's attempt, as the job wrote it
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "--- JobB:1 attempt 1 (FAILED, exit code 2: Essential container in task exited) ---",
        "injected fault: exit 2",
    ]


def test_a_run_that_processes_nothing_fails_with_jobds_reason(project: Path) -> None:
    # GIVEN steps whose memory step fails on every file
    # WHEN they run
    result = _cli(
        project,
        "--local",
        "--steps",
        "salessteps:NOTHING",
        "--input",
        "sales",
        "--array-size",
        "2",
        "--run-id",
        "sales-3",
    )
    # THEN the run fails (exit 1) at JobD, which says why and how to retry
    assert result.returncode == 1
    shown = _cli(project, "logs", "sales-3", "JobD:2", "--local")
    assert "the run processed no object: all 8 listed objects were rejected" in shown.stdout
    assert "python -m pipeline.submit resume sales-3 --rejected" in shown.stdout
