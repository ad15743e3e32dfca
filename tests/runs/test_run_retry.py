"""``resume RUN_ID --rejected`` on the deployed pipeline's Batch (the engine): what it keeps,
what it submits again and with what, and when it refuses."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from helpers.batch import STACK, EngineBatch, cli_in_process, engine_batch
from pipeline import contract
from pipeline.errors import RunStateError
from pipeline.runs.progress import JobProgress
from pipeline.runs.resume import ResumePlan
from pipeline.runs.retry import plan_rejected, retry_token
from pipeline.spec import DEFAULT_SPEC


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


def _ended_run(**changes: JobProgress | None) -> dict[str, JobProgress]:
    """A run of the default pipeline whose every job succeeded (array size 3), with
    ``changes``: a job's progress replaced, or (None) the job not in the run."""
    run = {
        "JobA": JobProgress(
            "JobA",
            "a-1",
            "SUCCEEDED",
            environment={
                contract.INPUT_PREFIX: "in/",
                contract.MAX_OBJECT_BYTES: "1024",
                "PIPELINE_OTHER": "not a run setting",
            },
        ),
        "JobB": JobProgress("JobB", "b-1", "SUCCEEDED", array_size=3, children={"SUCCEEDED": 3}),
        "JobC": JobProgress("JobC", "c-1", "SUCCEEDED", array_size=3, children={"SUCCEEDED": 3}),
        "JobD": JobProgress(
            "JobD", "d-1", "SUCCEEDED", array_size=10, parameters={"Checks": "all"}
        ),
        "JobE": JobProgress(
            "JobE", "e-1", "SUCCEEDED", parameters={"SourceBucket": "s3://bucket-a"}
        ),
    }
    for key, progress in changes.items():
        if progress is None:
            del run[key]
        else:
            run[key] = progress
    return run


def test_a_retry_plan_keeps_joba_and_carries_over_jobes_parameters_and_the_run_settings() -> None:
    # GIVEN a run that ended
    # WHEN its rejected objects are planned again
    plan = plan_rejected("r1", _ended_run(), DEFAULT_SPEC)
    # THEN JobA is kept, the stages are the run's size, JobE's parameters are the run's, and
    # of JobA's environment only the run settings are carried over
    assert plan == ResumePlan(
        keep={"JobA": "a-1"},
        reruns={},
        array_size=3,
        parameters={"SourceBucket": "s3://bucket-a"},
        environment={contract.INPUT_PREFIX: "in/", contract.MAX_OBJECT_BYTES: "1024"},
    )


def test_a_retry_plan_of_a_run_without_jobe_or_stage_sizes_carries_neither() -> None:
    # GIVEN a run with no JobE, whose stages were last submitted as single jobs (no size)
    run = _ended_run(
        JobB=JobProgress("JobB", "b-2", "SUCCEEDED"),
        JobC=JobProgress("JobC", "c-2", "SUCCEEDED"),
        JobE=None,
    )
    # WHEN its rejected objects are planned again
    plan = plan_rejected("r1", run, DEFAULT_SPEC)
    # THEN no parameters and no size are carried over
    assert (plan.parameters, plan.array_size) == ({}, None)


def test_a_retry_is_refused_while_the_run_is_active_naming_its_active_jobs() -> None:
    run = _ended_run(
        JobD=JobProgress("JobD", "d-1", "RUNNING", array_size=10),
        JobE=JobProgress("JobE", "e-1", "PENDING"),
    )
    with pytest.raises(RunStateError) as raised:
        plan_rejected("r1", run, DEFAULT_SPEC)
    assert str(raised.value) == (
        "the run is still active (JobD RUNNING, JobE PENDING); wait for it or cancel it first"
    )


@pytest.mark.parametrize(
    "joba", [JobProgress("JobA", "a-1", "FAILED"), None], ids=["failed", "missing"]
)
def test_a_retry_is_refused_when_joba_did_not_list_the_inputs(joba: JobProgress | None) -> None:
    with pytest.raises(RunStateError) as raised:
        plan_rejected("r1", _ended_run(JobA=joba), DEFAULT_SPEC)
    assert str(raised.value) == (
        "run r1 has no rejected objects to retry: its JobA did not list the inputs; resume it "
        "with `resume r1`"
    )


def test_a_retry_token_is_its_time_to_the_second_and_four_hex_digits() -> None:
    token = retry_token(datetime(2026, 11, 25, 18, 30, 0, tzinfo=UTC))
    assert re.fullmatch(r"20261125T183000-[0-9a-f]{4}", token), token


def test_a_retry_token_is_stamped_in_utc_whatever_the_machines_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a machine whose local time is 5 h 30 ahead of UTC
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        # WHEN a retry token is made for now
        before = datetime.now(UTC).replace(microsecond=0)
        token = retry_token()
        after = datetime.now(UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    # THEN its time is now in UTC
    stamp = datetime.strptime(token.split("-")[0], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    assert before <= stamp <= after, token
