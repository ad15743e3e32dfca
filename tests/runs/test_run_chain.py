"""pipeline/runs/chain.py: submitting a run's chain, each job ID feeding the next ``dependsOn``,
and stopping what a run started. (Lost SubmitJob answers are tests/runs/test_submit_faults.py's.)
The Batch here is a small stand-in with boto3's method names and shapes that records what the
chain asked of it."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.memory_batch import MemoryBatch
from pipeline.document import PipelineDocument
from pipeline.errors import ChainError
from pipeline.runs.chain import stop, submit_pipeline
from pipeline.runs.progress import JobProgress, SubmittedJob
from pipeline.runs.requests import run_config
from pipeline.spec import DEFAULT_SPEC

DOCUMENT = PipelineDocument("ProdQueue", {j.key: j.definition_name for j in DEFAULT_SPEC})


class RecordingBatch(MemoryBatch):
    """Accepts SubmitJob (refusing the job names in ``refuse``), describes what it accepted as
    SUBMITTED, and records the stops."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.refuse = refuse
        self.submitted: list[dict[str, Any]] = []

    def submit_job(self, **request: Any) -> dict[str, Any]:
        if request["jobName"] in self.refuse:
            raise ClientError(
                {"Error": {"Code": "ClientException", "Message": "refused"}}, "SubmitJob"
            )
        self.submitted.append(request)
        return {"jobId": f"id-{request['jobName']}", "jobName": request["jobName"]}

    def describe_jobs(self, *, jobs: list[str]) -> dict[str, Any]:
        known = {f"id-{r['jobName']}" for r in self.submitted}
        return {
            "jobs": [
                {"jobId": j, "jobName": j[3:], "status": "SUBMITTED"} for j in jobs if j in known
            ]
        }

    def list_jobs(self, **_: Any) -> dict[str, Any]:
        return {"jobSummaryList": []}


def test_each_job_is_submitted_in_order_depending_on_the_ids_before_it() -> None:
    # GIVEN a run of four children
    batch = RecordingBatch()
    seen: list[SubmittedJob] = []
    # WHEN its chain is submitted
    run = submit_pipeline(
        batch,  # type: ignore[arg-type]
        DOCUMENT,
        run_config(array_size=4, run_id="r1"),
        on_submitted=seen.append,
        sleep=lambda _: None,
    )
    # THEN the five jobs went in order, each depending on the ID Batch gave the one before
    assert [r["jobName"] for r in batch.submitted] == ["JobA", "JobB", "JobC", "JobD", "JobE"]
    assert batch.submitted[2]["dependsOn"] == [{"jobId": "id-JobB", "type": "N_TO_N"}]
    assert batch.submitted[4]["dependsOn"] == [{"jobId": "id-JobD"}]
    # AND the run and the callback know every job
    assert run.run_id == "r1"
    assert run.job_ids == {key: f"id-{key}" for key in ("JobA", "JobB", "JobC", "JobD", "JobE")}
    assert seen == list(run.jobs)
    assert batch.stops == []


def test_a_resume_keeps_the_jobs_that_succeeded_and_depends_on_them() -> None:
    # GIVEN a resumed run whose JobA and JobB succeeded
    batch = RecordingBatch()
    seen: list[SubmittedJob] = []
    run = submit_pipeline(
        batch,  # type: ignore[arg-type]
        DOCUMENT,
        run_config(array_size=4, run_id="r1"),
        reuse={"JobA": "kept-a", "JobB": "kept-b"},
        on_submitted=seen.append,
        sleep=lambda _: None,
    )
    # THEN only JobC..JobE are submitted, JobC waiting for the kept JobB
    assert [r["jobName"] for r in batch.submitted] == ["JobC", "JobD", "JobE"]
    assert batch.submitted[0]["dependsOn"] == [{"jobId": "kept-b", "type": "N_TO_N"}]
    assert [(j.key, j.job_id, j.reused) for j in run.jobs[:3]] == [
        ("JobA", "kept-a", True),
        ("JobB", "kept-b", True),
        ("JobC", "id-JobC", False),
    ]
    # AND the callback hears of the jobs submitted, not of those kept
    assert [j.key for j in seen] == ["JobC", "JobD", "JobE"]


def test_a_submission_refused_part_way_stops_what_was_submitted() -> None:
    # GIVEN a Batch that refuses JobC
    batch = RecordingBatch(refuse=("JobC",))
    # WHEN the chain is submitted THEN it fails naming JobC, having cancelled JobA and JobB
    with pytest.raises(ChainError, match="SubmitJob for JobC failed") as error:
        submit_pipeline(
            batch,  # type: ignore[arg-type]
            DOCUMENT,
            run_config(array_size=4, run_id="r1"),
            sleep=lambda _: None,
        )
    assert error.value.failed_job == "JobC"
    assert error.value.cancelled == ["id-JobA", "id-JobB"]
    assert [(action, job_id) for action, job_id, _ in batch.stops] == [
        ("cancel", "id-JobA"),
        ("cancel", "id-JobB"),
    ]
    assert all(reason == "run r1: SubmitJob for JobC failed" for *_, reason in batch.stops)


def test_a_resume_refused_at_once_stops_nothing_it_kept() -> None:
    batch = RecordingBatch(refuse=("JobC",))
    with pytest.raises(ChainError) as error:
        submit_pipeline(
            batch,  # type: ignore[arg-type]
            DOCUMENT,
            run_config(array_size=4, run_id="r1"),
            reuse={"JobA": "kept-a", "JobB": "kept-b"},
            sleep=lambda _: None,
        )
    assert error.value.cancelled == []
    assert batch.stops == []


@pytest.mark.parametrize(
    ("status", "children", "action"),
    [
        ("SUBMITTED", {}, "cancel"),
        ("PENDING", {}, "cancel"),
        ("RUNNABLE", {}, "cancel"),
        ("STARTING", {}, "terminate"),
        ("RUNNING", {}, "terminate"),
        ("PENDING", {"RUNNABLE": 3, "SUCCEEDED": 2}, "cancel"),
        ("PENDING", {"RUNNABLE": 3, "STARTING": 1}, "terminate"),
        ("PENDING", {"RUNNING": 1, "STARTING": 0}, "terminate"),
        ("SUCCEEDED", {}, None),
        ("FAILED", {}, None),
    ],
)
def test_a_job_not_started_is_cancelled_a_started_one_terminated_an_ended_one_left(
    status: str, children: dict[str, int], action: str | None
) -> None:
    # GIVEN a job in this state (an array's children counted by status)
    batch = RecordingBatch()
    job = JobProgress("JobB", "id-b", status, children=children)
    # WHEN the run is stopped
    stopped = stop(batch, [job], "stopped by the user")  # type: ignore[arg-type]
    # THEN CancelJob for one that has not started, TerminateJob for one that has (CancelJob
    # leaves it running), nothing for one that ended
    if action is None:
        assert (stopped, batch.stops) == ([], [])
    else:
        assert batch.stops == [(action, "id-b", "stopped by the user")]
        assert stopped == [("JobB", "cancelled" if action == "cancel" else "terminated")]
