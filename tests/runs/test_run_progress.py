"""pipeline/runs/progress.py: a run's jobs as Batch describes them, and finding runs again by
their tags, against the engine's Batch (:func:`helpers.batch.engine_batch`): jobs are
submitted and placed by the test on its clock, ListJobs pages are made small where paging is
the point (:func:`helpers.batch.small_pages`), and the DescribeJobs calls the code makes are
recorded through a botocore hook."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.batch import EngineBatch, engine_batch, small_pages
from helpers.engine_steps import at, ms, sent, sizes, submit
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


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        harness.hold_new_jobs()  # each test places its jobs
        yield harness


# --- describing jobs ------------------------------------------------------------------------


def test_jobs_are_described_a_hundred_at_a_time_in_the_order_asked(aws: EngineBatch) -> None:
    # GIVEN 250 jobs (the children of one array) asked for last child first, one of them
    # unknown to Batch
    parent = submit(aws, "JobB", size=250)
    ids = {f"k{i}": f"{parent}:{249 - i}" for i in range(250)}
    ids["k7"] = f"{parent}:250"  # no such child
    calls = sent(aws.batch, "DescribeJobs")
    # WHEN they are described
    progress = describe_jobs(aws.batch, ids)
    # THEN three calls of 100, 100 and 50 IDs; the known ones, in the order asked, with their keys
    assert sizes(calls) == [DESCRIBE_JOBS_LIMIT, DESCRIBE_JOBS_LIMIT, 50]
    assert [p.key for p in progress] == [k for k in ids if k != "k7"]
    assert [p.job_id for p in progress] == [ids[p.key] for p in progress]
    assert progress[0].job_id == f"{parent}:249"


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


def test_jobs_are_found_by_name_and_tag_on_every_page_parents_only(aws: EngineBatch) -> None:
    # GIVEN five JobB parents of two runs over three ListJobs pages of two, one of them an array
    # whose children carry its name and tag, and a JobBig and a jobb of the same run (Batch's
    # JOB_NAME filter matches names without regard to case)
    small_pages(aws.batch, 2)
    parents = [
        submit(aws, "JobB", run_id="r1" if i % 2 else "r2", size=2 if i == 1 else None)
        for i in range(5)
    ]
    submit(aws, "JobB", run_id="r1", jobName="JobBig")
    submit(aws, "JobB", run_id="r1", jobName="jobb")
    listings = sent(aws.batch, "ListJobs")
    # WHEN the jobs named JobB of run r1 are looked for
    found = find_jobs_by_name(aws.batch, QUEUE, "JobB", (RUN_TAG, "r1"))
    # THEN the parents on every page that carry the tag, and nothing else, as Batch lists
    # them (newest first)
    assert [j["jobId"] for j in found] == [parents[3], parents[1]]
    assert len(listings) == 3


def test_a_runs_history_is_each_jobs_submissions_oldest_first(aws: EngineBatch) -> None:
    # GIVEN run r1's JobA, and two JobBs, which ListJobs lists newest first (as Batch lists a
    # filter's results), besides another run's JobB
    at(aws, 1)
    a1 = submit(aws, "JobA", run_id="r1")
    at(aws, 20)
    b1 = submit(aws, "JobB", run_id="r1")
    aws.fail(b1)
    at(aws, 25)
    b2 = submit(aws, "JobB", run_id="r1")
    aws.start(b2)
    at(aws, 30)
    submit(aws, "JobB", run_id="other")
    # WHEN the run's history and its latest jobs are read
    history = find_run_history(aws.batch, QUEUE, "r1", DEFAULT_SPEC)
    latest = find_run(aws.batch, QUEUE, "r1", DEFAULT_SPEC)
    # THEN each job's submissions oldest first, and the newest of each as the run's
    assert {k: [j.job_id for j in jobs] for k, jobs in history.items()} == {
        "JobA": [a1],
        "JobB": [b1, b2],
    }
    assert [j.status for j in history["JobB"]] == ["FAILED", "RUNNING"]
    assert {k: j.job_id for k, j in latest.items()} == {"JobA": a1, "JobB": b2}


def test_an_unknown_run_says_where_it_looked(aws: EngineBatch) -> None:
    with pytest.raises(RunStateError, match="no jobs of run 'r9' in queue ProdQueue; check"):
        find_run(aws.batch, QUEUE, "r9", DEFAULT_SPEC)


# --- listing runs ---------------------------------------------------------------------------


def _place(aws: EngineBatch, job_id: str, status: str) -> None:
    """The held job ends as ``status`` (SUCCEEDED, FAILED), starts (RUNNING), or waits
    to be placed (RUNNABLE)."""
    if status == "SUCCEEDED":
        aws.succeed(job_id)
    elif status == "FAILED":
        aws.fail(job_id)
    elif status == "RUNNING":
        aws.start(job_id)
    else:
        assert status == "RUNNABLE", status


def _run(
    aws: EngineBatch,
    run_id: str,
    when: int,
    a: str,
    e: str | None,
    *,
    prefix: str | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Run ``run_id``'s JobA, submitted at ``when`` (ms on the test's clock) and left ``a``,
    and its JobE 5 ms later, left ``e`` (None: the chain never reached it)."""
    at(aws, when)
    environment = [{"name": INPUT_PREFIX, "value": prefix}] if prefix else []
    job_a = submit(
        aws, "JobA", run_id=run_id, tags=tags, containerOverrides={"environment": environment}
    )
    _place(aws, job_a, a)
    if e is not None:
        at(aws, when + 5)
        _place(aws, submit(aws, "JobE", run_id=run_id), e)


def test_runs_are_listed_newest_first_with_their_state(aws: EngineBatch) -> None:
    # GIVEN runs that succeeded, failed, run, are still being submitted (JobA waits, no JobE
    # yet), or never reached JobE
    _run(aws, "incomplete", 50, "SUCCEEDED", None)
    _run(aws, "done", 100, "SUCCEEDED", "SUCCEEDED", tags={STARTED_BY_TAG: "schedule"})
    _run(aws, "failed", 200, "SUCCEEDED", "FAILED")
    _run(aws, "running", 300, "SUCCEEDED", "RUNNABLE", prefix="in/")
    _run(aws, "submitting", 400, "RUNNABLE", None)
    at(aws, 999)
    submit(aws, "JobA")  # no run tag
    # WHEN they are listed
    runs = list_runs(aws.batch, QUEUE, DEFAULT_SPEC)
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
    assert [r.run_id for r in list_runs(aws.batch, QUEUE, DEFAULT_SPEC, limit=2)] == [
        "submitting",
        "running",
    ]


def test_a_resumed_runs_state_is_its_newest_jobes_and_its_start_its_first_joba(
    aws: EngineBatch,
) -> None:
    # GIVEN a run whose JobE failed, and a resume's JobE that succeeded later
    _run(aws, "r1", 100, "SUCCEEDED", "FAILED")
    at(aws, 500)
    aws.succeed(submit(aws, "JobE", run_id="r1"))
    # THEN the run's state is the newest JobE's, its start its first JobA's creation
    (run,) = list_runs(aws.batch, QUEUE, DEFAULT_SPEC)
    assert (run.status, run.created_at) == ("SUCCEEDED", ms(100))


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


def test_the_attempts_of_each_child_are_read_a_hundred_children_at_a_time(
    aws: EngineBatch,
) -> None:
    # GIVEN a JobA whose first attempt failed and was retried, an array of 150 children each
    # run once on a log stream of its own, and a job a resume kept
    job_a = submit(aws, "JobA", retryStrategy={"attempts": 2})
    aws.fail(job_a, exit_code=1)
    aws.succeed(job_a)
    job_b = submit(aws, "JobB", size=150)
    for i in range(150):
        aws.start(f"{job_b}:{i}", log_stream=f"child-{i}")
    aws.succeed(job_b)
    kept = submit(aws, "JobC")
    aws.succeed(kept)
    jobs = [
        SubmittedJob("JobA", job_a),
        SubmittedJob("JobB", job_b),
        SubmittedJob("JobC", kept, True),
    ]
    calls = sent(aws.batch, "DescribeJobs")
    # WHEN their attempts are read
    attempts = leaf_attempts(aws.batch, jobs)
    # THEN each child's, in index order, in calls of at most 100; none for the kept job
    assert [[a["container"]["exitCode"] for a in leaf] for leaf in attempts["JobA"]] == [[1, 0]]
    assert [[a["container"]["logStreamName"] for a in leaf] for leaf in attempts["JobB"]] == [
        [f"child-{i}"] for i in range(150)
    ]
    assert attempts["JobC"] == []
    assert sizes(calls) == [1, 1, 1, 100, 50]
