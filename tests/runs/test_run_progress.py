"""pipeline/runs/progress.py: a run's jobs as Batch describes them, and finding runs again by
their tags. The Batch here is a small stand-in with boto3's method names and shapes that pages
ListJobs two summaries at a time and records every DescribeJobs call."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.batch_facts import DESCRIBE_JOBS_LIMIT
from pipeline.contract import INPUT_PREFIX
from pipeline.errors import RunStateError
from pipeline.runs.progress import (
    JobProgress,
    RunSummary,
    SubmittedJob,
    SubmittedRun,
    child_index,
    describe_jobs,
    find_jobs_by_name,
    find_run,
    find_run_history,
    leaf_attempts,
    list_runs,
)
from pipeline.spec import DEFAULT_SPEC, RUN_TAG, STARTED_BY_TAG

QUEUE = "ProdQueue"


class PagedBatch:
    """DescribeJobs of known jobs (at most 100 IDs a call, as Batch), ListJobs two at a time."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.describe_calls: list[list[str]] = []

    def add(self, job_id: str, name: str, **fields: Any) -> dict[str, Any]:
        job = {"jobId": job_id, "jobName": name, "status": "SUCCEEDED", **fields}
        self.jobs[job_id] = job
        return job

    def describe_jobs(self, *, jobs: list[str]) -> dict[str, Any]:
        assert len(jobs) <= 100, "DescribeJobs takes at most 100 job IDs"
        self.describe_calls.append(list(jobs))
        return {"jobs": [self.jobs[j] for j in jobs if j in self.jobs]}

    def list_jobs(self, **request: Any) -> dict[str, Any]:
        assert request["jobQueue"] == QUEUE
        (name,) = request["filters"][0]["values"]
        summaries = [
            {"jobId": j["jobId"], "jobName": j["jobName"]}
            for j in self.jobs.values()
            if j["jobName"].startswith(name)  # a prefix, as Batch's filter may match
        ]
        start = int(request.get("nextToken", 0))
        page: dict[str, Any] = {"jobSummaryList": summaries[start : start + 2]}
        if start + 2 < len(summaries):
            page["nextToken"] = str(start + 2)
        return page


# --- describing jobs ------------------------------------------------------------------------


def test_jobs_are_described_a_hundred_at_a_time_in_the_order_asked() -> None:
    # GIVEN 250 jobs, one of them unknown to Batch
    batch = PagedBatch()
    ids = {f"k{i}": f"id-{i}" for i in range(250)}
    for key, job_id in ids.items():
        if key != "k7":
            batch.add(job_id, "JobB")
    # WHEN they are described
    progress = describe_jobs(batch, ids)  # type: ignore[arg-type]
    # THEN three calls of 100, 100 and 50 IDs; the known ones, in order, with their keys
    assert [len(c) for c in batch.describe_calls] == [DESCRIBE_JOBS_LIMIT, DESCRIBE_JOBS_LIMIT, 50]
    assert [p.key for p in progress] == [k for k in ids if k != "k7"]
    assert progress[0].job_id == "id-0"


def test_a_description_becomes_a_jobs_progress() -> None:
    job = JobProgress.from_description(
        "JobB",
        {
            "jobId": "id-b",
            "status": "RUNNING",
            "statusReason": "Essential container in task exited",
            "arrayProperties": {"size": 4, "statusSummary": {"RUNNING": 3, "FAILED": 1}},
            "createdAt": 1_700_000_000_000,
            "container": {"environment": [{"name": INPUT_PREFIX, "value": "in/"}]},
            "attempts": [
                {"container": {"exitCode": 1, "logStreamName": "first"}},
                {"container": {"exitCode": 3, "logStreamName": "last"}},
            ],
            "parameters": {"Recipient": "a@example.com"},
            "tags": {RUN_TAG: "r1"},
        },
    )
    assert job == JobProgress(
        key="JobB",
        job_id="id-b",
        status="RUNNING",
        status_reason="Essential container in task exited",
        array_size=4,
        children={"RUNNING": 3, "FAILED": 1},
        created_at=1_700_000_000_000,
        exit_code=3,
        log_stream="last",
        parameters={"Recipient": "a@example.com"},
        environment={INPUT_PREFIX: "in/"},
        tags={RUN_TAG: "r1"},
    )


def test_the_containers_own_exit_code_and_log_stream_come_first() -> None:
    job = JobProgress.from_description(
        "JobA",
        {
            "jobId": "id-a",
            "status": "FAILED",
            "container": {"exitCode": 0, "logStreamName": "current"},
            "attempts": [{"container": {"exitCode": 1, "logStreamName": "old"}}],
        },
    )
    assert (job.exit_code, job.log_stream) == (0, "current")
    bare = JobProgress.from_description("JobA", {"jobId": "id-a", "status": "SUBMITTED"})
    assert (bare.exit_code, bare.log_stream, bare.array_size, bare.created_at) == (
        None,
        None,
        None,
        0,
    )


@pytest.mark.parametrize(
    ("status", "children", "active", "failed"),
    [
        ("SUBMITTED", {}, True, False),
        ("RUNNING", {"FAILED": 1, "RUNNING": 2}, True, True),
        ("RUNNING", {"FAILED": 0, "SUCCEEDED": 2}, True, False),
        ("SUCCEEDED", {}, False, False),
        ("FAILED", {}, False, True),
    ],
)
def test_a_job_is_active_until_it_ends_and_failed_once_a_child_failed(
    status: str, children: dict[str, int], active: bool, failed: bool
) -> None:
    job = JobProgress("JobB", "id", status, children=children)
    assert (job.is_active, job.has_failed) == (active, failed)


@pytest.mark.parametrize(
    ("description", "index"),
    [
        ({"jobId": "p:7", "arrayProperties": {"index": 3}}, 3),
        ({"jobId": "parent-id:12"}, 12),
        ({"jobId": "parent-id"}, None),
        ({"jobId": "p:0", "arrayProperties": {}}, 0),
    ],
)
def test_a_childs_index_is_batchs_or_its_ids_suffix(
    description: dict[str, Any], index: int | None
) -> None:
    assert child_index(description) == index


def test_a_submitted_run_maps_its_keys_to_job_ids() -> None:
    run = SubmittedRun("r1", (SubmittedJob("JobA", "a"), SubmittedJob("JobB", "b", reused=True)))
    assert run.job_ids == {"JobA": "a", "JobB": "b"}


# --- finding jobs and runs by their tags ----------------------------------------------------


def test_jobs_are_found_by_name_and_tag_on_every_page_parents_only() -> None:
    # GIVEN five JobB parents over three ListJobs pages, a child, and a JobBig
    batch = PagedBatch()
    for i in range(5):
        batch.add(f"b{i}", "JobB", tags={RUN_TAG: "r1" if i % 2 else "r2"})
    batch.add("b1:0", "JobB", tags={RUN_TAG: "r1"})
    batch.add("big", "JobBig", tags={RUN_TAG: "r1"})
    # WHEN the jobs named JobB of run r1 are looked for
    found = find_jobs_by_name(batch, QUEUE, "JobB", (RUN_TAG, "r1"))  # type: ignore[arg-type]
    # THEN the parents on every page that carry the tag, and nothing else
    assert [j["jobId"] for j in found] == ["b1", "b3"]


def test_a_runs_history_is_each_jobs_submissions_oldest_first() -> None:
    batch = PagedBatch()
    batch.add("a1", "JobA", createdAt=1, tags={RUN_TAG: "r1"})
    batch.add("b2", "JobB", createdAt=30, tags={RUN_TAG: "r1"}, status="RUNNING")
    batch.add("b1", "JobB", createdAt=20, tags={RUN_TAG: "r1"}, status="FAILED")
    batch.add("b0", "JobB", createdAt=25, tags={RUN_TAG: "other"})
    history = find_run_history(batch, QUEUE, "r1", DEFAULT_SPEC)  # type: ignore[arg-type]
    assert {k: [j.job_id for j in jobs] for k, jobs in history.items()} == {
        "JobA": ["a1"],
        "JobB": ["b1", "b2"],
    }
    latest = find_run(batch, QUEUE, "r1", DEFAULT_SPEC)  # type: ignore[arg-type]
    assert {k: j.job_id for k, j in latest.items()} == {"JobA": "a1", "JobB": "b2"}


def test_an_unknown_run_says_where_it_looked() -> None:
    with pytest.raises(RunStateError, match="no jobs of run 'r9' in queue ProdQueue; check"):
        find_run(PagedBatch(), QUEUE, "r9", DEFAULT_SPEC)  # type: ignore[arg-type]


# --- listing runs ---------------------------------------------------------------------------


def _run(batch: PagedBatch, run_id: str, at: int, a: str, e: str | None, **tags: str) -> None:
    environment = [{"name": INPUT_PREFIX, "value": "in/"}] if tags.pop("prefixed", "") else []
    batch.add(
        f"{run_id}-a",
        "JobA",
        status=a,
        createdAt=at,
        tags={RUN_TAG: run_id, **tags},
        container={"environment": environment},
    )
    if e is not None:
        batch.add(f"{run_id}-e", "JobE", status=e, createdAt=at + 5, tags={RUN_TAG: run_id})


def test_runs_are_listed_newest_first_with_their_state() -> None:
    # GIVEN runs that succeeded, failed, run, are still being submitted, or never reached JobE
    batch = PagedBatch()
    _run(batch, "done", 100, "SUCCEEDED", "SUCCEEDED", **{STARTED_BY_TAG: "schedule"})
    _run(batch, "failed", 200, "SUCCEEDED", "FAILED")
    _run(batch, "running", 300, "SUCCEEDED", "RUNNABLE", prefixed="yes")
    _run(batch, "submitting", 400, "SUBMITTED", None)
    _run(batch, "incomplete", 50, "SUCCEEDED", None)
    batch.add("untagged", "JobA", createdAt=999)
    # WHEN they are listed
    runs = list_runs(batch, QUEUE, DEFAULT_SPEC)  # type: ignore[arg-type]
    # THEN newest first, each with its state, who started it and its input prefix
    assert [(r.run_id, r.status, r.started_by) for r in runs] == [
        ("submitting", "RUNNING", "command line"),
        ("running", "RUNNING", "command line"),
        ("failed", "FAILED", "command line"),
        ("done", "SUCCEEDED", "schedule"),
        ("incomplete", "INCOMPLETE", "command line"),
    ]
    assert [r.input_prefix for r in runs] == [None, "in/", None, None, None]
    assert [r.is_active for r in runs] == [True, True, False, False, False]
    assert [r.run_id for r in list_runs(batch, QUEUE, DEFAULT_SPEC, limit=2)] == [  # type: ignore[arg-type]
        "submitting",
        "running",
    ]


def test_a_resumed_runs_state_is_its_newest_jobes_and_its_start_its_first_joba() -> None:
    batch = PagedBatch()
    _run(batch, "r1", 100, "SUCCEEDED", "FAILED")
    batch.add("r1-e2", "JobE", status="SUCCEEDED", createdAt=500, tags={RUN_TAG: "r1"})
    (run,) = list_runs(batch, QUEUE, DEFAULT_SPEC)  # type: ignore[arg-type]
    assert (run.status, run.created_at) == ("SUCCEEDED", 100)


def test_a_run_summary_as_json() -> None:
    summary = RunSummary("r1", "RUNNING", 5, "upload", "in/")
    assert summary.as_json() == {
        "runId": "r1",
        "status": "RUNNING",
        "createdAt": 5,
        "startedBy": "upload",
        "inputPrefix": "in/",
    }


# --- every attempt of every child -----------------------------------------------------------


def test_the_attempts_of_each_child_are_read_a_hundred_children_at_a_time() -> None:
    # GIVEN an array of 150 children, a standard job and a job a resume kept
    batch = PagedBatch()
    batch.add("b", "JobB", arrayProperties={"size": 150})
    for i in range(150):
        batch.add(f"b:{i}", "JobB", attempts=[{"exitCode": i}])
    batch.add("a", "JobA", attempts=[{"exitCode": 0}, {"exitCode": 1}])
    jobs = [SubmittedJob("JobA", "a"), SubmittedJob("JobB", "b"), SubmittedJob("JobC", "c", True)]
    # WHEN their attempts are read
    attempts = leaf_attempts(batch, jobs)  # type: ignore[arg-type]
    # THEN each child's, in index order, in calls of at most 100; none for the kept job
    assert attempts["JobA"] == [[{"exitCode": 0}, {"exitCode": 1}]]
    assert attempts["JobB"] == [[{"exitCode": i}] for i in range(150)]
    assert attempts["JobC"] == []
    assert [len(c) for c in batch.describe_calls] == [1, 1, 1, 100, 50]
