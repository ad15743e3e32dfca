"""``resume RUN_ID --rejected`` on the deployed pipeline's Batch (the engine): what it keeps,
what it submits again and with what, and when it refuses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.batch import STACK, EngineBatch, cli_in_process, engine_batch
from pipeline import contract


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _environment(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["container"]["environment"]}


def test_rejected_keeps_the_listing_and_submits_the_stages_again_with_a_retry_token(
    aws: EngineBatch,
) -> None:
    # GIVEN a run that ended (every job succeeded)
    code, _, err = cli_in_process(aws, "--stack", STACK, "--array-size", "3", "--run-id", "r1")
    assert code == 0, err
    first = {key: jobs[0]["jobId"] for key, jobs in aws.run_jobs("r1").items()}
    # WHEN its rejected objects are retried
    code, out, err = cli_in_process(aws, "resume", "r1", "--rejected", "--stack", STACK)
    # THEN JobA is kept, and JobB..JobE are submitted again, whole, with one retry token
    assert code == 0, err
    assert "run r1: retrying its rejected objects: keeping JobA; re-submitting the rest" in err
    jobs = aws.run_jobs("r1")
    assert len(jobs["JobA"]) == 1
    again = {key: jobs[key][-1] for key in ("JobB", "JobC", "JobD", "JobE")}
    assert all(job["jobId"] != first[key] for key, job in again.items())
    tokens = {_environment(job).get(contract.RETRY_REJECTED) for job in again.values()}
    assert len(tokens) == 1
    assert None not in tokens
    assert again["JobB"]["arrayProperties"]["size"] == 3
    assert again["JobC"]["dependsOn"] == [{"jobId": again["JobB"]["jobId"], "type": "N_TO_N"}]
    assert "submitted run r1" in out


def test_rejected_refuses_a_run_whose_stage_failed_naming_failed_only(aws: EngineBatch) -> None:
    # GIVEN a run whose JobB child 1 failed
    aws.inject("JobB:1=exit:2")
    code, _, _ = cli_in_process(aws, "--stack", STACK, "--array-size", "3", "--run-id", "r2")
    assert code == 0
    # WHEN its rejected objects are to be retried
    code, out, err = cli_in_process(aws, "resume", "r2", "--rejected", "--stack", STACK)
    # THEN it refuses in one line, naming the resume to run first
    assert (code, out) == (252, "")
    assert err == (
        "error: run r2's JobB did not finish every shard; re-run it first with `resume r2 "
        "--failed-only`, then retry the rejected objects\n"
    )


def test_rejected_and_failed_only_are_two_resumes() -> None:
    code, _, err = cli_in_process(None, "resume", "r", "--rejected", "--failed-only", "--local")
    assert code == 252
    assert err == (
        "error: --rejected and --failed-only are two resumes; resume what failed first, then "
        "the rejected objects\n"
    )
