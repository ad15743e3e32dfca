"""A local run sized to its input, and what it measured as a prediction for AWS: `--local`
end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import run_cli

pytestmark = pytest.mark.slow


def _inputs(folder: Path) -> Path:
    """24 files at the top, 12 under sub/."""
    (folder / "sub").mkdir(parents=True)
    for number in range(24):
        (folder / f"f{number:02d}.txt").write_text("line\n" * (number + 1))
    for number in range(12):
        (folder / "sub" / f"g{number:02d}.txt").write_text("data\n")
    return folder


@pytest.fixture(scope="module")
def sized(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A local run of 36 files given no size, at 5 objects per child."""
    home = tmp_path_factory.mktemp("sized")
    folder = _inputs(home / "in")
    result = run_cli(
        home,
        *("--local", "--input", str(folder), "--objects-per-child", "5"),
        *("--run-id", "sized", "--json"),
    )
    return result, home


def test_a_local_run_given_no_size_gives_every_child_objects(
    sized: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, home = sized
    # THEN 36 objects at a child per 5 make 7 children, as pre-flight said
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "run sized: submitting; array size 7: 36 objects, 5.1 per child on average (auto: a "
        "child per 5 objects, at most 8 deployed)"
    ) in result.stderr
    progress = {p["job"]: p for p in json.loads(result.stdout)["progress"]}
    assert progress["JobB"]["arraySize"] == progress["JobC"]["arraySize"] == 7
    # AND each JobB child processed objects, as its log's last line says (how many varies:
    # JobA balances bytes, and these files differ in size)
    counts = []
    for index in range(7):
        logs = run_cli(home, "logs", "sized", f"JobB:{index}", "--local", "--json")
        assert logs.returncode == 0, logs.stderr
        lines = [line for a in json.loads(logs.stdout)["attempts"] for line in a["lines"]]
        done = json.loads(next(x for x in lines if x.startswith("JobB: done in ")).split(" ", 4)[4])
        counts.append(done["objects"])
    assert min(counts) >= 1, counts
    assert sum(counts) == 36


def test_the_local_report_predicts_the_runs_input_on_aws(
    sized: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, home = sized
    report = run_cli(home, "report", "sized", "--local", "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    prediction: dict[str, Any] = json.loads(report.stdout)["prediction"]
    # 36 objects on a pipeline deployed with the defaults: 100 per child, so Batch's 2
    assert (prediction["objects"], prediction["arraySize"]) == (36, 2)
    assert prediction["capacity"].startswith("the library's default compute environments")
    assert prediction["makespanSeconds"] > 0
    assert prediction["usd"] is not None
    assert "measured by local run sized (36 objects" in prediction["assumptions"][0]
    text = run_cli(home, "report", "sized", "--local")
    assert "on AWS, as the construct deploys it by default:" in text.stdout
    assert "prediction (array size 2, 36 objects, on the library's default" in text.stdout


def test_a_dry_run_estimates_from_the_local_run(
    sized: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, home = sized
    result = run_cli(
        home, "--local", "--dry-run", "--input", str(home / "in"), "--estimate-from", "sized"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "prediction (array size 2, 36 objects, on the library's default" in result.stderr
    assert "(measured by local run sized (36 objects" in result.stderr


def test_an_injected_child_a_sized_run_does_not_have_is_refused(tmp_path: Path) -> None:
    folder = _inputs(tmp_path / "in")
    result = run_cli(
        tmp_path,
        *("--local", "--input", str(folder), "--objects-per-child", "5"),
        *("--inject", "JobB:7=exit:2", "--run-id", "refused"),
    )
    assert result.returncode == 252
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --inject 'JobB:7=exit:2': JobB has children 0 to 6 in this run (sized to its "
        "input); give --array-size to choose its size"
    )
    assert not (tmp_path / "state" / "runs" / "refused").exists()  # nothing was submitted


def test_a_local_upload_trigger_is_sized_to_its_prefix(tmp_path: Path) -> None:
    folder = _inputs(tmp_path / "in")
    result = run_cli(tmp_path, "--local", "--input", str(folder), "--on-upload", "sub/", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "listing sub/; array size 2: 12 objects, 6 per child on average (auto: fewer than 200 "
        "objects, "
        "and AWS Batch's smallest array is 2)"
    ) in result.stderr
    progress = {p["job"]: p for p in json.loads(result.stdout)["progress"]}
    assert progress["JobB"]["arraySize"] == 2
