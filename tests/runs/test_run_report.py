"""pipeline/runs/report.py: what a run did, from every child's description: waits from the
moment each child was ready, run times, retries, failures, usage against the worst case, and
the estimated cost. The run here is three jobs with times chosen so each figure can be worked
out by hand (times in ms); Batch is a small stand-in with boto3's method names and shapes."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.document import PipelineDocument
from pipeline.instances import INSTANCE_TYPES
from pipeline.runs.report import (
    Attempt,
    ChildRecord,
    JobRecord,
    collect,
    progress_reporter,
)
from pipeline.spec import DEFAULT_SPEC, RUN_TAG

SPEC = DEFAULT_SPEC.with_array_size(2)
DOCUMENT = PipelineDocument("ProdQueue", {j.key: j.definition_name for j in SPEC}, spec=SPEC)


def _attempts(*spans: tuple[int, int]) -> list[dict[str, Any]]:
    return [{"startedAt": start, "stoppedAt": stop, "statusReason": "ok"} for start, stop in spans]


def _job(
    job_id: str, name: str, created: int, *spans: tuple[int, int], **fields: Any
) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "jobName": name,
        "status": "SUCCEEDED",
        "createdAt": created,
        "startedAt": spans[0][0] if spans else None,
        "stoppedAt": spans[-1][1] if spans else None,
        "attempts": _attempts(*spans),
        "tags": {RUN_TAG: "r1"},
        **fields,
    }


class RunBatch:
    """JobA (one attempt), JobB (two children, the second retried once) and JobC (N_TO_N on
    JobB, its child 1 failed), on a queue of one instance type."""

    def __init__(self, spot: bool = False, types: tuple[str, ...] = ("c6i.8xlarge",)) -> None:
        self.spot = spot
        self.types = types
        jobs = [
            _job("a", "JobA", 0, (1_000, 5_000)),
            _job("b", "JobB", 100, arrayProperties={"size": 2}),
            _job("b:0", "JobB", 100, (6_000, 16_000), arrayProperties={"index": 0}),
            _job(
                "b:1", "JobB", 100, (6_000, 10_000), (11_000, 21_000), arrayProperties={"index": 1}
            ),
            _job("c", "JobC", 200, status="FAILED", arrayProperties={"size": 2}),
            _job("c:0", "JobC", 200, (17_000, 18_000), arrayProperties={"index": 0}),
            _job(
                "c:1",
                "JobC",
                200,
                (22_000, 25_000),
                arrayProperties={"index": 1},
                status="FAILED",
                statusReason="Essential container in task exited",
                container={"exitCode": 3},
            ),
        ]
        self.jobs = {j["jobId"]: j for j in jobs}

    def list_jobs(self, **request: Any) -> dict[str, Any]:
        if "arrayJobId" in request:
            failed = [j for j in self.jobs if j.startswith(f"{request['arrayJobId']}:")]
            failed = [j for j in failed if self.jobs[j]["status"] == "FAILED"]
            return {"jobSummaryList": [{"jobId": j} for j in failed]}
        assert request["jobQueue"] == "ProdQueue"
        (name,) = request["filters"][0]["values"]
        return {
            "jobSummaryList": [
                {"jobId": j["jobId"], "jobName": name}
                for j in self.jobs.values()
                if j["jobName"] == name
            ]
        }

    def describe_jobs(self, *, jobs: list[str]) -> dict[str, Any]:
        described = []
        for job_id in jobs:
            job = dict(self.jobs[job_id])
            if job_id == "c":  # the parent counts its children by status
                job["arrayProperties"] = {"size": 2, "statusSummary": {"FAILED": 1, "SUCCEEDED": 1}}
            described.append(job)
        return {"jobs": described}

    def describe_job_queues(self, *, jobQueues: list[str]) -> dict[str, Any]:  # noqa: N803
        assert jobQueues == ["ProdQueue"]
        return {"jobQueues": [{"computeEnvironmentOrder": [{"computeEnvironment": "ce"}]}]}

    def describe_compute_environments(self, *, computeEnvironments: list[str]) -> dict[str, Any]:  # noqa: N803
        assert computeEnvironments == ["ce"]
        resources = {"maxvCpus": 256, "instanceTypes": list(self.types)}
        if self.spot:
            resources["type"] = "SPOT"
        return {
            "computeEnvironments": [{"computeEnvironmentName": "ce", "computeResources": resources}]
        }


def _report(batch: RunBatch | None = None, **options: Any) -> Any:
    return collect(batch or RunBatch(), DOCUMENT, "r1", **options)  # type: ignore[arg-type]


def test_every_job_of_the_run_and_each_child_is_read() -> None:
    described: list[tuple[int, int]] = []
    report = _report(on_progress=lambda done, total: described.append((done, total)))
    assert [(j.key, j.status, j.array_size) for j in report.jobs] == [
        ("JobA", "SUCCEEDED", None),
        ("JobB", "SUCCEEDED", 2),
        ("JobC", "FAILED", 2),
    ]
    assert [[c.index for c in j.children] for j in report.jobs] == [[None], [0, 1], [0, 1]]
    assert described == [(3, 5), (5, 5)]  # after each DescribeJobs of children
    assert report.calls["describe_jobs"] >= 4


def test_each_child_waits_from_when_its_dependencies_let_it_run() -> None:
    jobs = {j.key: j for j in _report().jobs}
    # JobA depends on nothing: ready when created (0), started at 1,000
    assert jobs["JobA"].children[0].wait_seconds == 1.0
    # JobB waits for the whole JobA (stopped at 5,000): both children start at 6,000
    assert [c.wait_seconds for c in jobs["JobB"].children] == [1.0, 1.0]
    # JobC child i waits for JobB child i: ready at 16,000 and 21,000, started 1 s later each
    assert [c.ready_at for c in jobs["JobC"].children] == [16_000, 21_000]
    assert [c.wait_seconds for c in jobs["JobC"].children] == [1.0, 1.0]


def test_run_times_count_every_attempt_and_retries_are_counted() -> None:
    jobs = {j.key: j for j in _report().jobs}
    assert [c.run_seconds for c in jobs["JobB"].children] == [10.0, 14.0]
    assert [c.retries for c in jobs["JobB"].children] == [0, 1]
    assert (jobs["JobB"].retries, jobs["JobB"].failed, jobs["JobC"].failed) == (1, 0, 1)
    # 24 s of 32 vCPUs and 4 GiB
    assert jobs["JobB"].vcpu_hours == pytest.approx(24 * 32 / 3600)
    assert jobs["JobB"].gib_hours == pytest.approx(24 * 4 / 3600)
    assert [c.index for c in jobs["JobB"].slowest(1)] == [1]


def test_the_report_as_json() -> None:
    report = _report(read_log=lambda job_id, stream: [f"log of {job_id}"])
    data = report.as_json()
    assert (data["runId"], data["startedAt"], data["endedAt"]) == ("r1", 0, 25_000)
    job_b = data["jobs"][1]
    assert job_b["runSeconds"] == {"p50": 12.0, "p90": 13.6, "max": 14.0}
    assert job_b["waitSeconds"] == {"p50": 1.0, "p90": 1.0, "max": 1.0}
    assert job_b["slowest"] == [{"index": 1, "seconds": 14.0}, {"index": 0, "seconds": 10.0}]
    assert (job_b["retries"], job_b["failed"], job_b["submission"]) == (1, 0, 0)
    # the worst case of the run at the size it was submitted with: 2 x 32 x 2 h x 3
    assert (job_b["worstCaseVcpuHours"], job_b["worstCaseGibHours"]) == (384.0, 48.0)
    (failure,) = data["failures"]
    assert (failure["job"], failure["indices"], failure["exitCode"]) == ("JobC", "1", 3)
    assert failure["logTail"] == ["log of c:1"]


def test_a_standard_jobs_whole_json_and_what_the_report_cost() -> None:
    data = _report().as_json()
    assert data["jobs"][0] == {
        "job": "JobA",
        "submission": 0,
        "jobId": "a",
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
    assert sorted(data) == ["calls", "cost", "endedAt", "failures", "jobs", "runId", "startedAt"]
    assert sorted(data["cost"]) == ["basis", "estimatedUsd", "instanceTypes", "perJob", "spot"]
    # the calls it made: a ListJobs per job name and for the failed children, a DescribeJobs
    # per job found, per 100 children and for the failed children, and the queue twice
    assert data["calls"] == {
        "list_jobs": 6,
        "describe_jobs": 7,
        "describe_job_queues": 2,
        "describe_compute_environments": 2,
    }


def test_the_cost_is_priced_on_the_cheapest_fitting_type_at_one_childs_share() -> None:
    cost = _report().cost
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
    assert _report().as_json()["cost"]["estimatedUsd"] == cost.usd


def test_a_spot_queue_is_said_to_cost_less() -> None:
    cost = _report(RunBatch(spot=True)).cost
    assert cost.spot
    assert cost.basis.endswith("; the queue runs on Spot, which usually costs much less")


def test_no_cost_is_estimated_for_types_without_a_price() -> None:
    assert _report(RunBatch(types=("optimal",))).cost is None
    assert _report(RunBatch(types=("c6i.8xlarge", "optimal"))).cost is None
    assert _report(RunBatch(types=("c6i.8xlarge", "optimal"))).as_json()["cost"] is None


def test_a_job_no_type_fits_is_not_priced() -> None:
    # JobB's 32 vCPUs fit no m6i.2xlarge (8 vCPUs); JobA and JobC's children do
    cost = _report(RunBatch(types=("m6i.2xlarge",))).cost
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


def test_a_resumed_runs_submissions_are_labelled_and_its_worst_case_is_its_first_size() -> None:
    # GIVEN the run above (JobB of 2), whose JobB was submitted again later for one child,
    # read with the deployed pipeline's default size (10,000)
    batch = RunBatch()
    batch.jobs["b2"] = _job("b2", "JobB", 30_000, (31_000, 33_000))
    document = PipelineDocument("ProdQueue", DOCUMENT.job_definitions)
    report = collect(batch, document, "r1")  # type: ignore[arg-type]
    # THEN every submission is there, oldest first, the later one labelled as a resume's
    assert [(j.label, j.submission) for j in report.jobs] == [
        ("JobA", 0),
        ("JobB", 0),
        ("JobC", 0),
        ("JobB (resume 1)", 1),
    ]
    # AND the worst case is the run's, at the size it was first submitted with (2)
    assert report.worst_case["JobB"] == (384.0, 48.0)


class LargeArray:
    """JobA, and a JobB of 150 children, each run for 1 s."""

    def __init__(self) -> None:
        self.jobs = {"a": _job("a", "JobA", 0, (0, 1_000))}
        self.jobs["b"] = _job("b", "JobB", 0, arrayProperties={"size": 150})
        for i in range(150):
            self.jobs[f"b:{i}"] = _job(
                f"b:{i}", "JobB", 0, (2_000, 3_000), arrayProperties={"index": i}
            )
        self.calls: list[int] = []

    def list_jobs(self, **request: Any) -> dict[str, Any]:
        (name,) = request["filters"][0]["values"]
        return {
            "jobSummaryList": [
                {"jobId": i, "jobName": name} for i in ("a", "b") if self.jobs[i]["jobName"] == name
            ]
        }

    def describe_jobs(self, *, jobs: list[str]) -> dict[str, Any]:
        assert len(jobs) <= 100
        self.calls.append(len(jobs))
        return {"jobs": [self.jobs[j] for j in jobs]}

    def describe_job_queues(self, **_: Any) -> dict[str, Any]:
        return {"jobQueues": [{"computeEnvironmentOrder": []}]}


def test_a_large_arrays_children_are_read_a_hundred_at_a_time() -> None:
    batch = LargeArray()
    described: list[tuple[int, int]] = []
    report = collect(batch, DOCUMENT, "r1", on_progress=lambda d, t: described.append((d, t)))  # type: ignore[arg-type]
    job_b = report.jobs[1]
    assert [c.index for c in job_b.children] == list(range(150))
    assert described == [(101, 151), (151, 151)]
    assert batch.calls[-2:] == [100, 50]
    assert report.cost is None  # a queue with no priced instance types
