"""pipeline/runs/report.py: what a run did, from every child's description: waits from the
moment each child was ready, run times, retries, failures, usage against the worst case, and
the estimated cost. The run is three jobs on the engine's Batch
(:func:`helpers.batch.engine_batch`), placed by the test on its clock at times chosen so each
figure can be worked out by hand (ms from the clock's start), on a queue of one managed
compute environment whose instance types and pricing model each test picks."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from helpers.batch import EngineBatch, engine_batch
from helpers.engine_steps import at, ms, sent, sizes, submit
from pipeline.document import PipelineDocument
from pipeline.instances import INSTANCE_TYPES
from pipeline.runs.report import (
    Attempt,
    ChildRecord,
    JobRecord,
    RunReport,
    collect,
    progress_reporter,
)
from pipeline.spec import DEFAULT_SPEC

SPEC = DEFAULT_SPEC.with_array_size(2)
DEFINITIONS = {j.key: j.definition_name for j in SPEC}


@pytest.fixture(scope="module")
def aws() -> Iterator[EngineBatch]:
    """One Batch for the module (its setup is most of a test's time): each run is on a queue
    of its own, and the tests place every job."""
    with engine_batch() as harness:
        harness.hold_new_jobs()
        yield harness


_QUEUES = itertools.count(1)


@dataclass(frozen=True)
class Run:
    """Run r1 on the engine: its jobs' IDs and the document it was submitted with."""

    aws: EngineBatch
    document: PipelineDocument
    a: str
    b: str
    c: str

    def report(self, **options: Any) -> RunReport:
        return collect(self.aws.batch, self.document, "r1", **options)


def _run(aws: EngineBatch, *, spot: bool = False, types: tuple[str, ...] = ("c6i.8xlarge",)) -> Run:
    """JobA (one attempt), JobB (two children, the second retried once) and JobC (N_TO_N on
    JobB, its child 1 failed), as the chain submits them, on a queue of ``types``."""
    resources: dict[str, Any] = {"instanceTypes": list(types)}
    if spot:
        resources["type"] = "SPOT"
    queue = aws.managed_queue(types[0], name=f"Queue{next(_QUEUES)}", **resources)
    at(aws, 0)
    a = submit(aws, "JobA", run_id="r1", queue=queue)
    at(aws, 100)
    b = submit(
        aws,
        "JobB",
        run_id="r1",
        queue=queue,
        size=2,
        depends_on=[{"jobId": a}],
        retryStrategy={"attempts": 2},
    )
    at(aws, 200)
    c = submit(
        aws, "JobC", run_id="r1", queue=queue, size=2, depends_on=[{"jobId": b, "type": "N_TO_N"}]
    )
    at(aws, 1_000)
    aws.start(a)
    at(aws, 5_000)
    aws.succeed(a)  # JobB's children may run from here
    at(aws, 6_000)
    aws.start(b)
    at(aws, 10_000)
    aws.fail(f"{b}:1", exit_code=1)  # its first attempt: Batch retries it
    at(aws, 11_000)
    aws.start(f"{b}:1")
    at(aws, 16_000)
    aws.succeed(f"{b}:0")  # JobC's child 0 may run from here
    at(aws, 17_000)
    aws.start(f"{c}:0")
    at(aws, 18_000)
    aws.succeed(f"{c}:0")
    at(aws, 21_000)
    aws.succeed(f"{b}:1")  # JobC's child 1 may run from here
    at(aws, 22_000)
    aws.start(f"{c}:1")
    at(aws, 25_000)
    aws.fail(f"{c}:1", exit_code=3)
    return Run(aws, PipelineDocument(queue, DEFINITIONS, spec=SPEC), a, b, c)


@pytest.fixture(scope="module")
def run(aws: EngineBatch) -> Run:
    """The run on c6i.8xlarge On-Demand, which the tests only read."""
    return _run(aws)


def test_every_job_of_the_run_and_each_child_is_read(run: Run) -> None:
    described: list[tuple[int, int]] = []
    report = run.report(on_progress=lambda done, total: described.append((done, total)))
    assert [(j.key, j.status, j.array_size) for j in report.jobs] == [
        ("JobA", "SUCCEEDED", None),
        ("JobB", "SUCCEEDED", 2),
        ("JobC", "FAILED", 2),
    ]
    assert [[c.index for c in j.children] for j in report.jobs] == [[None], [0, 1], [0, 1]]
    assert described == [(3, 5), (5, 5)]  # after each DescribeJobs of children
    assert report.calls["describe_jobs"] >= 4


def test_each_child_waits_from_when_its_dependencies_let_it_run(run: Run) -> None:
    jobs = {j.key: j for j in run.report().jobs}
    # JobA depends on nothing: ready when created (0), started at 1,000
    assert jobs["JobA"].children[0].wait_seconds == 1.0
    # JobB waits for the whole JobA (stopped at 5,000): both children start at 6,000
    assert [c.wait_seconds for c in jobs["JobB"].children] == [1.0, 1.0]
    # JobC child i waits for JobB child i: ready at 16,000 and 21,000, started 1 s later each
    assert [c.ready_at for c in jobs["JobC"].children] == [ms(16_000), ms(21_000)]
    assert [c.wait_seconds for c in jobs["JobC"].children] == [1.0, 1.0]


def test_run_times_count_every_attempt_and_retries_are_counted(run: Run) -> None:
    jobs = {j.key: j for j in run.report().jobs}
    assert [c.run_seconds for c in jobs["JobB"].children] == [10.0, 14.0]
    assert [c.retries for c in jobs["JobB"].children] == [0, 1]
    assert (jobs["JobB"].retries, jobs["JobB"].failed, jobs["JobC"].failed) == (1, 0, 1)
    # 24 s of 32 vCPUs and 4 GiB
    assert jobs["JobB"].vcpu_hours == pytest.approx(24 * 32 / 3600)
    assert jobs["JobB"].gib_hours == pytest.approx(24 * 4 / 3600)
    assert [c.index for c in jobs["JobB"].slowest(1)] == [1]


def test_the_report_as_json(run: Run) -> None:
    report = run.report(read_log=lambda job_id, stream: [f"log of {job_id}"])
    data = report.as_json()
    assert (data["runId"], data["startedAt"], data["endedAt"]) == ("r1", ms(0), ms(25_000))
    job_b = data["jobs"][1]
    assert job_b["runSeconds"] == {"p50": 12.0, "p90": 13.6, "max": 14.0}
    assert job_b["waitSeconds"] == {"p50": 1.0, "p90": 1.0, "max": 1.0}
    assert job_b["slowest"] == [{"index": 1, "seconds": 14.0}, {"index": 0, "seconds": 10.0}]
    assert (job_b["retries"], job_b["failed"], job_b["submission"]) == (1, 0, 0)
    # the worst case of the run at the size it was submitted with: 2 x 32 x 2 h x 3
    assert (job_b["worstCaseVcpuHours"], job_b["worstCaseGibHours"]) == (384.0, 48.0)
    (failure,) = data["failures"]
    assert (failure["job"], failure["indices"], failure["exitCode"]) == ("JobC", "1", 3)
    assert failure["logTail"] == [f"log of {run.c}:1"]


def test_a_standard_jobs_whole_json_and_what_the_report_cost(run: Run) -> None:
    data = run.report().as_json()
    assert data["jobs"][0] == {
        "job": "JobA",
        "submission": 0,
        "jobId": run.a,
        "status": "SUCCEEDED",
        "arraySize": None,
        "vcpus": 1,
        "memoryMiB": 2048,
        "waitSeconds": {"p50": 1.0, "p90": 1.0, "max": 1.0},
        "runSeconds": {"p50": 4.0, "p90": 4.0, "max": 4.0},
        "retries": 0,
        "failed": 0,
        "slowest": [{"index": None, "seconds": 4.0}],
        # one run time: bins of a second from it
        "histogram": {"edges": [4.0 + i for i in range(21)], "counts": [1] + [0] * 19},
        "vcpuHours": 4 / 3600,
        "gibHours": 4 * 2 / 3600,
        "worstCaseVcpuHours": 3.0,
        "worstCaseGibHours": 6.0,
    }
    assert sorted(data) == [
        *("calls", "cost", "endedAt", "failures", "jobs", "prediction", "runId", "startedAt")
    ]
    assert data["prediction"] is None  # a run's own report on AWS: what it did, no prediction
    assert sorted(data["cost"]) == ["basis", "estimatedUsd", "instanceTypes", "perJob", "spot"]
    # the calls it made: a ListJobs per job name and for the failed children, a DescribeJobs
    # per job found, per 100 children and for the failed children, and the queue twice
    assert data["calls"] == {
        "list_jobs": 6,
        "describe_jobs": 7,
        "describe_job_queues": 2,
        "describe_compute_environments": 2,
    }


def test_the_cost_is_priced_on_the_cheapest_fitting_type_at_one_childs_share(run: Run) -> None:
    report = run.report()
    cost = report.cost
    assert cost is not None
    c6i = INSTANCE_TYPES["c6i.8xlarge"]
    # JobB's child takes the whole instance (32 of 32 vCPUs) for 24 s
    assert cost.per_job["JobB"] == round(24 / 3600 * c6i.on_demand_usd_per_hour, 4)
    # JobA's takes 1/32 of the vCPUs or 2 GiB of the usable memory, whichever is more
    share = max(1 / 32, 2048 / c6i.usable_memory_mib)
    assert cost.per_job["JobA"] == round(4 / 3600 * c6i.on_demand_usd_per_hour * share, 4)
    assert cost.usd == round(sum(cost.per_job.values()), 4)
    assert cost.instance_types == dict.fromkeys(("JobA", "JobB", "JobC"), "c6i.8xlarge")
    assert not cost.spot
    assert "Spot" not in cost.basis
    assert report.as_json()["cost"]["estimatedUsd"] == cost.usd


def test_a_spot_queue_is_said_to_cost_less(aws: EngineBatch) -> None:
    cost = _run(aws, spot=True).report().cost
    assert cost is not None
    assert cost.spot
    assert cost.basis.endswith("; the queue runs on Spot, which usually costs much less")


@pytest.mark.parametrize("types", [("optimal",), ("c6i.8xlarge", "optimal")])
def test_no_cost_is_estimated_for_types_without_a_price(
    aws: EngineBatch, types: tuple[str, ...]
) -> None:
    report = _run(aws, types=types).report()
    assert report.cost is None
    assert report.as_json()["cost"] is None


def test_a_job_no_type_fits_is_not_priced(aws: EngineBatch) -> None:
    # JobB's 32 vCPUs fit no m6i.2xlarge (8 vCPUs); JobA and JobC's children do
    cost = _run(aws, types=("m6i.2xlarge",)).report().cost
    assert cost is not None
    assert sorted(cost.per_job) == ["JobA"]


# --- children and jobs ----------------------------------------------------------------------


def test_a_child_that_never_started_has_no_wait_and_no_run_time() -> None:
    child = ChildRecord(0, "FAILED", 100, None, None, (), None, "Dependent Job failed")
    assert (child.wait_seconds, child.run_seconds, child.retries) == (None, 0.0, 0)


def test_a_child_without_attempts_runs_from_its_start_to_its_stop() -> None:
    child = ChildRecord(None, "SUCCEEDED", 0, 2_000, 7_500, (), 0, None)
    assert (child.first_started_at, child.run_seconds, child.wait_seconds) == (2_000, 5.5, 2.0)
    backwards = ChildRecord(
        None, "SUCCEEDED", 5_000, 2_000, 1_000, (Attempt(3_000, 1_000, None),), 0, None
    )
    assert (backwards.run_seconds, backwards.wait_seconds) == (0.0, 0.0)


def test_a_description_without_times_keeps_only_finished_attempts() -> None:
    child = ChildRecord.from_description(
        {
            "jobId": "b:4",
            "status": "RUNNING",
            "arrayProperties": {"index": 4},
            "attempts": [{"startedAt": 10, "stoppedAt": 20}, {"startedAt": 30}],
            "container": {"exitCode": 1},
        }
    )
    assert (child.index, child.attempts, child.exit_code, child.created_at) == (
        4,
        (Attempt(10, 20, None),),
        1,
        0,
    )


def test_a_histogram_bins_the_run_times_from_the_shortest_to_the_longest() -> None:
    children = tuple(
        ChildRecord(i, "SUCCEEDED", 0, 0, seconds * 1000, (), 0, None)
        for i, seconds in enumerate([10, 10, 12, 20])
    )
    job = JobRecord("JobB", "b", "SUCCEEDED", 4, 1, 1, children)
    edges, counts = job.histogram(bins=5)
    assert edges == [10.0, 12.0, 14.0, 16.0, 18.0, 20.0]
    assert counts == [2, 1, 0, 0, 1]
    assert JobRecord("JobB", "b", "RUNNING", 4, 1, 1, ()).histogram() == ([0.0, 0.0], [0])
    same = JobRecord("JobB", "b", "SUCCEEDED", 2, 1, 1, children[:2]).histogram(bins=2)
    assert same == ([10.0, 11.0, 12.0], [2, 0])


def test_a_resumes_submissions_are_labelled() -> None:
    assert JobRecord("JobB", "b", "FAILED", 2, 1, 1, ()).label == "JobB"
    assert JobRecord("JobB", "b", "FAILED", 2, 1, 1, (), submission=2).label == "JobB (resume 2)"


def test_progress_is_said_at_most_once_a_second_and_at_the_end() -> None:
    lines: list[str] = []
    report = progress_reporter(lines.append)
    for done in range(1, 1001):
        report(done * 10, 10_000)
    assert lines[0] == "collected 10/10,000 jobs"
    assert lines[-1] == "collected 10,000/10,000 jobs"
    assert len(lines) < 1000


# --- a resumed run, and a large array --------------------------------------------------------


def test_a_resumed_runs_submissions_are_labelled_and_its_worst_case_is_its_first_size(
    aws: EngineBatch,
) -> None:
    # GIVEN the run above (JobB of 2), whose JobB was submitted again later for one child,
    # read with the deployed pipeline's default size (10,000)
    run = _run(aws)
    at(run.aws, 30_000)
    again = submit(run.aws, "JobB", run_id="r1", queue=run.document.queue)
    at(run.aws, 31_000)
    run.aws.start(again)
    at(run.aws, 33_000)
    run.aws.succeed(again)
    document = PipelineDocument(run.document.queue, DEFINITIONS)
    report = collect(run.aws.batch, document, "r1")
    # THEN every submission is there, oldest first, the later one labelled as a resume's
    assert [(j.label, j.submission) for j in report.jobs] == [
        ("JobA", 0),
        ("JobB", 0),
        ("JobC", 0),
        ("JobB (resume 1)", 1),
    ]
    # AND the worst case is the run's, at the size it was first submitted with (2)
    assert report.worst_case["JobB"] == (384.0, 48.0)


def test_a_large_arrays_children_are_read_a_hundred_at_a_time(aws: EngineBatch) -> None:
    # GIVEN JobA, and a JobB of 150 children after it, each run for 1 s, on the pipeline's
    # queue (an UNMANAGED compute environment: no instance types to price)
    at(aws, 0)
    job_a = submit(aws, "JobA", run_id="r1")
    job_b = submit(aws, "JobB", run_id="r1", size=150, depends_on=[{"jobId": job_a}])
    aws.succeed(job_a, seconds=1)
    aws.succeed(job_b, seconds=1)
    calls = sent(aws.batch, "DescribeJobs")
    described: list[tuple[int, int]] = []
    # WHEN the report is collected
    report = collect(
        aws.batch,
        PipelineDocument(aws.queue_arn, DEFINITIONS, spec=SPEC),
        "r1",
        on_progress=lambda d, t: described.append((d, t)),
    )
    # THEN every child, in index order, read in calls of 100 and 50
    job_b_record = report.jobs[1]
    assert [c.index for c in job_b_record.children] == list(range(150))
    assert [c.run_seconds for c in job_b_record.children] == [1.0] * 150
    assert described == [(101, 151), (151, 151)]
    assert sizes(calls)[-2:] == [100, 50]
    assert report.cost is None  # a queue with no priced instance types
