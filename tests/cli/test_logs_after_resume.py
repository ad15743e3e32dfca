"""``logs RUN_ID JobB:3`` after ``resume --failed-only``, which re-runs the failed children in a
job of their own (a standard job for one child, a smaller array for more): a child keeps the
name the run's hints gave it, and its log shows every attempt, in every job that ran it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.batch import STACK, EngineBatch, cli_in_process, engine_batch


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _resumed_run(aws: EngineBatch, failed: list[int]) -> tuple[str, dict[str, Any]]:
    """A run of 4 children whose JobB children ``failed`` failed, resumed with --failed-only
    (the re-run succeeds); its id, and the resume's jobs (key -> ID)."""
    aws.inject(*(f"JobB:{index}=exit:3" for index in failed))
    code, out, err = cli_in_process(
        aws, "--stack", STACK, "--array-size", "4", "--watch", "--poll-interval", "0.01", "--json"
    )
    assert code == 1, err
    run_id = json.loads(out)["runId"]
    aws.engine.faults.clear()
    code, _, err = cli_in_process(
        aws,
        "resume",
        run_id,
        "--stack",
        STACK,
        "--failed-only",
        "--watch",
        "--poll-interval",
        "0.01",
    )
    assert code == 0, err
    return run_id, aws.run_jobs(run_id)


def _logs(aws: EngineBatch, run_id: str, *named: str) -> tuple[int, str, str]:
    return cli_in_process(aws, "logs", run_id, *named, "--stack", STACK)


@pytest.mark.parametrize(
    ("failed", "rerun_child"),
    [
        ([3], ""),  # one child: the re-run is a standard job
        ([1, 3], ":1"),  # two: an array of 2, whose child 1 is the run's child 3
    ],
)
def test_a_failed_childs_log_shows_its_attempts_before_and_after_the_resume(
    aws: EngineBatch, failed: list[int], rerun_child: str
) -> None:
    # GIVEN a run whose JobB child 3 failed, resumed for its failed children only
    run_id, jobs = _resumed_run(aws, failed)
    first_b, rerun_b = (job["jobId"] for job in jobs["JobB"])
    # WHEN the log the failed run's hint named is asked for
    code, out, err = _logs(aws, run_id, "JobB:3")
    _, as_json, _ = _logs(aws, run_id, "JobB:3", "--json")
    # THEN it shows the child's failed attempt in the run's JobB, then its attempt in the
    # resume's, numbered on
    assert code == 0, err
    assert out.splitlines() == [
        "--- JobB:3 attempt 1 (FAILED, exit code 3: Essential container in task exited) ---",
        "--- JobB:3 attempt 2 (SUCCEEDED, exit code 0) ---",
    ]
    attempts = json.loads(as_json)["attempts"]
    assert [(a["jobId"], a["index"], a["attempt"]) for a in attempts] == [
        (f"{first_b}:3", 3, 1),
        (f"{rerun_b}{rerun_child}", 3, 2),
    ]


def test_a_child_the_resume_did_not_rerun_keeps_its_one_attempt(aws: EngineBatch) -> None:
    # GIVEN a run whose JobB child 3 failed, resumed for it only
    run_id, jobs = _resumed_run(aws, [3])
    # WHEN the log of child 2 (which succeeded the first time) is asked for
    code, as_json, err = _logs(aws, run_id, "JobB:2", "--json")
    # THEN it is the run's first JobB's child 2, alone
    assert code == 0, err
    attempts = json.loads(as_json)["attempts"]
    first_b = jobs["JobB"][0]["jobId"]
    assert [(a["jobId"], a["status"]) for a in attempts] == [(f"{first_b}:2", "SUCCEEDED")]


def test_a_resumed_array_is_still_listed_and_named_as_the_array_it_was(aws: EngineBatch) -> None:
    # GIVEN a run whose JobB child 3 failed, resumed for it only (a standard job)
    run_id, _ = _resumed_run(aws, [3])
    # WHEN the run's logs are listed, and JobB named without a child
    _, listed, _ = _logs(aws, run_id)
    code, out, err = _logs(aws, run_id, "JobB")
    # THEN JobB is the array of 4 it was, with no child failed now
    job_b = next(line for line in listed.splitlines() if line.lstrip().startswith("JobB"))
    assert "4 children " in job_b
    assert "failed" not in job_b
    assert (code, out) == (252, "")
    assert err == "error: JobB is an array of 4 children; name one: JobB:INDEX (0 to 3)\n"


def test_a_child_that_fails_again_in_the_resume_is_named_as_the_run_names_it(
    aws: EngineBatch,
) -> None:
    # GIVEN a run whose JobB children 1 and 3 failed
    aws.inject("JobB:1=exit:3", "JobB:3=exit:3")
    _, out, _ = cli_in_process(aws, "--stack", STACK, "--array-size", "4", "--json")
    run_id = json.loads(out)["runId"]
    # WHEN the resume's re-run of child 3 (its child 1) fails again
    aws.engine.faults.clear()
    aws.inject("JobB:1=exit:4")
    code, _, err = cli_in_process(
        aws,
        "resume",
        run_id,
        "--stack",
        STACK,
        "--failed-only",
        "--watch",
        "--poll-interval",
        "0.01",
    )
    # THEN the failure and its hint name the run's child 3, and the hint works
    assert code == 1
    assert "JobB[3] failed" in err
    assert f"logs {run_id} JobB:3 --stack {STACK}" in err
    _, logs_out, _ = _logs(aws, run_id, "JobB:3")
    assert logs_out.splitlines()[-1] == (
        "--- JobB:3 attempt 2 (FAILED, exit code 4: Essential container in task exited) ---"
    )
    _, _, named = _logs(aws, run_id, "JobB")
    assert named.endswith("; failed: 3\n")
