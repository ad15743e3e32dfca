"""pipeline/runs/chain.py: submitting a run's chain, each job ID feeding the next ``dependsOn``,
and stopping what a run started. (Lost SubmitJob answers are tests/runs/test_submit_faults.py's.)
The Batch is the engine's (tests/helpers/batch.py): it gives the job IDs, refuses what AWS
refuses (a dependency on a job it does not know, an inactive job definition), and applies
CancelJob and TerminateJob as AWS does, so each test sees what a chain or a stop leaves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from helpers.batch import EngineBatch, engine_batch
from pipeline.document import PipelineDocument
from pipeline.errors import ChainError
from pipeline.runs.chain import stop, submit_pipeline
from pipeline.runs.progress import JobProgress, SubmittedJob, describe_jobs
from pipeline.runs.requests import run_config
from pipeline.spec import DEFAULT_SPEC

DOCUMENT = PipelineDocument("ProdQueue", {j.key: j.definition_name for j in DEFAULT_SPEC})
KEYS = [j.key for j in DEFAULT_SPEC]


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _no_sleep(_: float) -> None:
    raise AssertionError("a chain whose answers all arrive never waits")


def _refuse(aws: EngineBatch, key: str) -> None:
    """Batch refuses every SubmitJob for ``key`` from now on: its job definition is
    deregistered (INACTIVE)."""
    aws.reader.deregister_job_definition(jobDefinition=aws.definition_arns[key])


def test_each_job_is_submitted_in_order_depending_on_the_ids_before_it(aws: EngineBatch) -> None:
    # GIVEN a run of four children, on a queue where jobs wait to be placed
    aws.hold_new_jobs()
    stops = aws.record_stops()
    seen: list[SubmittedJob] = []
    # WHEN its chain is submitted
    run = submit_pipeline(
        aws.batch,
        DOCUMENT,
        run_config(array_size=4, run_id="r1"),
        on_submitted=seen.append,
        sleep=_no_sleep,
    )
    # THEN Batch holds the five jobs in order, each depending on the ID Batch gave the one before
    jobs = aws.parents()
    assert [j.job_name for j in jobs] == KEYS
    ids = {j.job_name: j.job_id for j in jobs}
    depends = {j.job_name: j.detail["dependsOn"] for j in jobs}
    assert depends["JobB"] == [{"jobId": ids["JobA"]}]
    assert depends["JobC"] == [{"jobId": ids["JobB"], "type": "N_TO_N"}]
    assert depends["JobE"] == [{"jobId": ids["JobD"]}]
    # AND the run and the callback know every job, and nothing was stopped
    assert run.run_id == "r1"
    assert run.job_ids == ids
    assert seen == list(run.jobs)
    assert stops == []
    assert [j.status for j in jobs] == ["RUNNABLE", "PENDING", "PENDING", "PENDING", "PENDING"]


def test_a_resume_keeps_the_jobs_that_succeeded_and_depends_on_them(aws: EngineBatch) -> None:
    # GIVEN a run whose JobA and JobB succeeded and whose JobC failed (so JobD and JobE did)
    aws.inject("JobC:0=exit:2")
    config = run_config(array_size=4, run_id="r1")
    first = submit_pipeline(aws.batch, DOCUMENT, config, sleep=_no_sleep)
    assert [aws.describe(first.job_ids[k])["status"] for k in KEYS] == (
        ["SUCCEEDED"] * 2 + ["FAILED"] * 3
    )
    kept = {"JobA": first.job_ids["JobA"], "JobB": first.job_ids["JobB"]}
    aws.hold_new_jobs()
    seen: list[SubmittedJob] = []
    # WHEN it is resumed, keeping JobA and JobB
    run = submit_pipeline(
        aws.batch, DOCUMENT, config, reuse=kept, on_submitted=seen.append, sleep=_no_sleep
    )
    # THEN only JobC..JobE are submitted again, JobC waiting for the kept JobB
    assert {key: len(jobs) for key, jobs in aws.run_jobs("r1").items()} == {
        "JobA": 1,
        "JobB": 1,
        "JobC": 2,
        "JobD": 2,
        "JobE": 2,
    }
    new_c = aws.run_job("r1", "JobC")
    assert aws.describe(new_c)["dependsOn"] == [{"jobId": kept["JobB"], "type": "N_TO_N"}]
    assert [(j.key, j.job_id, j.reused) for j in run.jobs[:3]] == [
        ("JobA", kept["JobA"], True),
        ("JobB", kept["JobB"], True),
        ("JobC", new_c, False),
    ]
    # AND the callback hears of the jobs submitted, not of those kept
    assert [j.key for j in seen] == ["JobC", "JobD", "JobE"]


def test_a_submission_refused_part_way_stops_what_was_submitted(aws: EngineBatch) -> None:
    # GIVEN a Batch that refuses JobC, on a queue where jobs wait to be placed
    _refuse(aws, "JobC")
    aws.hold_new_jobs()
    stops = aws.record_stops()
    # WHEN the chain is submitted THEN it fails naming JobC, having cancelled JobA and JobB
    with pytest.raises(ChainError, match="SubmitJob for JobC failed") as error:
        submit_pipeline(aws.batch, DOCUMENT, run_config(array_size=4, run_id="r1"), sleep=_no_sleep)
    ids = [aws.run_job("r1", "JobA"), aws.run_job("r1", "JobB")]
    assert error.value.failed_job == "JobC"
    assert error.value.cancelled == ids
    reason = "run r1: SubmitJob for JobC failed"
    assert stops == [("CancelJob", ids[0], reason), ("CancelJob", ids[1], reason)]
    # AND nothing of the chain is left to run
    assert aws.non_terminal() == []
    assert {key: len(jobs) for key, jobs in aws.run_jobs("r1").items()} == {
        "JobA": 1,
        "JobB": 1,
        "JobC": 0,
        "JobD": 0,
        "JobE": 0,
    }


def test_a_resume_refused_at_once_stops_nothing_it_kept(aws: EngineBatch) -> None:
    # GIVEN a run whose jobs succeeded, and a Batch that now refuses JobC
    config = run_config(array_size=4, run_id="r1")
    first = submit_pipeline(aws.batch, DOCUMENT, config, sleep=_no_sleep)
    _refuse(aws, "JobC")
    stops = aws.record_stops()
    # WHEN a resume keeping JobA and JobB is submitted THEN it fails, stopping nothing
    with pytest.raises(ChainError) as error:
        submit_pipeline(
            aws.batch,
            DOCUMENT,
            config,
            reuse={"JobA": first.job_ids["JobA"], "JobB": first.job_ids["JobB"]},
            sleep=_no_sleep,
        )
    assert error.value.cancelled == []
    assert stops == []
    assert aws.describe(first.job_ids["JobB"])["status"] == "SUCCEEDED"


# --- stopping a job, in each state DescribeJobs can show it ----------------------------------


def _submit(aws: EngineBatch, *, size: int | None = None, after: str | None = None) -> str:
    """A JobB (an array of ``size``, or a standard job), depending on ``after`` if given."""
    request: dict[str, Any] = {
        "jobName": "JobB",
        "jobQueue": aws.queue_arn,
        "jobDefinition": aws.definition_arns["JobB"],
    }
    if size:
        request["arrayProperties"] = {"size": size}
    if after:
        request["dependsOn"] = [{"jobId": after}]
    return str(aws.reader.submit_job(**request)["jobId"])


def _seen(aws: EngineBatch) -> list[dict[str, Any]]:
    """Every description the engine sends as a job's status changes ("Batch Job State Change"
    events), from now on: how a job looked in a state it passes in an instant (SUBMITTED,
    STARTING), as DescribeJobs could have shown it."""
    events: list[dict[str, Any]] = []
    aws.engine.on_event = events.append
    return events


def _as_it_was(events: list[dict[str, Any]], job_id: str, status: str) -> JobProgress:
    (seen,) = [e for e in events if e["jobId"] == job_id and e["status"] == status]
    return JobProgress.from_description("JobB", seen)


def _now(aws: EngineBatch, job_id: str) -> JobProgress:
    (progress,) = describe_jobs(aws.batch, {"JobB": job_id})
    return progress


def _submitted(aws: EngineBatch) -> JobProgress:
    events = _seen(aws)
    return _as_it_was(events, _submit(aws), "SUBMITTED")


def _pending(aws: EngineBatch) -> JobProgress:
    return _now(aws, _submit(aws, after=_submit(aws)))


def _runnable(aws: EngineBatch) -> JobProgress:
    return _now(aws, _submit(aws))


def _starting(aws: EngineBatch) -> JobProgress:
    events = _seen(aws)
    job_id = _submit(aws)
    aws.start(job_id)
    return _as_it_was(events, job_id, "STARTING")


def _running(aws: EngineBatch) -> JobProgress:
    job_id = _submit(aws)
    aws.start(job_id)
    return _now(aws, job_id)


def _children_waiting_and_succeeded(aws: EngineBatch) -> JobProgress:
    job_id = _submit(aws, size=5)
    aws.succeed(f"{job_id}:0")
    aws.succeed(f"{job_id}:1")
    return _now(aws, job_id)


def _a_child_running(aws: EngineBatch) -> JobProgress:
    job_id = _submit(aws, size=4)
    aws.start(f"{job_id}:0")
    return _now(aws, job_id)


def _a_child_starting(aws: EngineBatch) -> JobProgress:
    # The engine starts a container in an instant, and an array parent's event does not come
    # with each child's change: the description of the array with its child running, as
    # DescribeJobs shows it while that child's container starts (STARTING).
    progress = _a_child_running(aws)
    assert (progress.children["RUNNABLE"], progress.children["RUNNING"]) == (3, 1)
    return replace(progress, children={**progress.children, "RUNNING": 0, "STARTING": 1})


def _succeeded(aws: EngineBatch) -> JobProgress:
    job_id = _submit(aws)
    aws.succeed(job_id)
    return _now(aws, job_id)


def _failed(aws: EngineBatch) -> JobProgress:
    job_id = _submit(aws)
    aws.fail(job_id)
    return _now(aws, job_id)


@pytest.mark.parametrize(
    ("state", "status", "children", "action"),
    [
        (_submitted, "SUBMITTED", {}, "cancel"),
        (_pending, "PENDING", {}, "cancel"),
        (_runnable, "RUNNABLE", {}, "cancel"),
        (_starting, "STARTING", {}, "terminate"),
        (_running, "RUNNING", {}, "terminate"),
        (_children_waiting_and_succeeded, "PENDING", {"RUNNABLE": 3, "SUCCEEDED": 2}, "cancel"),
        (_a_child_starting, "PENDING", {"RUNNABLE": 3, "STARTING": 1}, "terminate"),
        (_a_child_running, "PENDING", {"RUNNABLE": 3, "RUNNING": 1}, "terminate"),
        (_succeeded, "SUCCEEDED", {}, None),
        (_failed, "FAILED", {}, None),
    ],
)
def test_a_job_not_started_is_cancelled_a_started_one_terminated_an_ended_one_left(
    aws: EngineBatch,
    state: Callable[[EngineBatch], JobProgress],
    status: str,
    children: dict[str, int],
    action: str | None,
) -> None:
    # GIVEN a job as DescribeJobs shows it in this state (an array's children by status)
    aws.hold_new_jobs()
    job = state(aws)
    assert (job.status, {s: n for s, n in job.children.items() if n}) == (status, children)
    stops = aws.record_stops()
    # WHEN the run is stopped
    stopped = stop(aws.batch, [job], "stopped by the user")
    # THEN CancelJob for one that has not started, TerminateJob for one that has (CancelJob
    # leaves it running), nothing for one that ended
    if action is None:
        assert (stopped, stops) == ([], [])
        assert aws.describe(job.job_id)["status"] == status
        return
    operation = "CancelJob" if action == "cancel" else "TerminateJob"
    assert stops == [(operation, job.job_id, "stopped by the user")]
    assert stopped == [("JobB", "cancelled" if action == "cancel" else "terminated")]
    # AND nothing of it runs on: once every job that may run has run, it has failed, stopped
    aws.run_at_once()
    assert aws.describe(job.job_id)["status"] == "FAILED"
    assert aws.non_terminal() == []
