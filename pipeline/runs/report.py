"""What a run did: when each job waited and ran (array children as distributions), how long
children took, what failed, what it used and roughly what it cost.

Collection costs one DescribeJobs call per 100 children: an array child's ID is
``<parent ID>:<index>``, so no ListJobs page is needed to name them. The same code reads a run
on AWS and a local run (LocalBatch restores a saved one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pipeline.batch_facts import DESCRIBE_JOBS_LIMIT, DependencyType
from pipeline.document import PipelineDocument
from pipeline.instances import PRICE_DATE, PRICE_REGION, cheapest_fit
from pipeline.runs.failures import FailureGroup, failure_report
from pipeline.runs.prediction import Prediction
from pipeline.runs.preflight import queue_instance_types, worst_case
from pipeline.runs.progress import JobProgress, find_run_history
from pipeline.spec import PipelineSpec

if TYPE_CHECKING:
    from pipeline.runs.api import BatchApi, JobDetailTypeDef, LogReader

HISTOGRAM_BINS = 20
SLOWEST = 5


@dataclass(frozen=True)
class Attempt:
    started_at: int
    stopped_at: int
    status_reason: str | None

    @property
    def seconds(self) -> float:
        return max(self.stopped_at - self.started_at, 0) / 1000


@dataclass(frozen=True)
class ChildRecord:
    """One array child (or a standard job) as DescribeJobs reports it; times in ms."""

    index: int | None
    status: str
    created_at: int
    started_at: int | None
    stopped_at: int | None
    attempts: tuple[Attempt, ...]
    exit_code: int | None
    status_reason: str | None
    ready_at: int | None = None
    """When its dependencies were met (it became RUNNABLE): Batch reports no such time, so it
    is derived from the spec's dependencies (see :func:`_with_ready_times`)."""

    @property
    def first_started_at(self) -> int | None:
        return self.attempts[0].started_at if self.attempts else self.started_at

    @property
    def wait_seconds(self) -> float | None:
        """Queue wait: from becoming ready (RUNNABLE) to the first attempt's start; time spent
        PENDING on dependencies is not counted."""
        first = self.first_started_at
        if first is None:
            return None
        return max(first - (self.ready_at or self.created_at), 0) / 1000

    @property
    def run_seconds(self) -> float:
        """Time on an instance, every attempt counted."""
        if self.attempts:
            return sum(a.seconds for a in self.attempts)
        if self.started_at is not None and self.stopped_at is not None:
            return max(self.stopped_at - self.started_at, 0) / 1000
        return 0.0

    @property
    def retries(self) -> int:
        return max(len(self.attempts) - 1, 0)

    @classmethod
    def from_description(cls, job: JobDetailTypeDef | Mapping[str, Any]) -> ChildRecord:
        attempts = tuple(
            Attempt(int(a["startedAt"]), int(a["stoppedAt"]), a.get("statusReason"))
            for a in job.get("attempts") or []
            if a.get("startedAt") and a.get("stoppedAt")
        )
        container = job.get("container") or {}
        index = (job.get("arrayProperties") or {}).get("index")
        return cls(
            index=index,
            status=str(job["status"]),
            created_at=int(job.get("createdAt") or 0),
            started_at=job.get("startedAt") or None,
            stopped_at=job.get("stoppedAt") or None,
            attempts=attempts,
            exit_code=container.get("exitCode"),
            status_reason=job.get("statusReason"),
        )


@dataclass(frozen=True)
class JobRecord:
    key: str
    job_id: str
    status: str
    array_size: int | None
    vcpus: float
    memory_mib: int
    children: tuple[ChildRecord, ...]
    """Every child of an array job; the job itself for a standard one."""
    submission: int = 0
    """0 for the run's first submission of the job, then 1, 2 ... for each resume's."""

    @property
    def label(self) -> str:
        """``JobB``, or ``JobB (resume 1)`` for a resume's submission of it."""
        return self.key if not self.submission else f"{self.key} (resume {self.submission})"

    @property
    def vcpu_hours(self) -> float:
        return sum(c.run_seconds for c in self.children) * self.vcpus / 3600

    @property
    def gib_hours(self) -> float:
        return sum(c.run_seconds for c in self.children) * self.memory_mib / 1024 / 3600

    @property
    def retries(self) -> int:
        return sum(c.retries for c in self.children)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.children if c.status == "FAILED")

    def slowest(self, count: int = SLOWEST) -> list[ChildRecord]:
        return sorted(self.children, key=lambda c: -c.run_seconds)[:count]

    def histogram(self, bins: int = HISTOGRAM_BINS) -> tuple[list[float], list[int]]:
        """(bin edges in seconds, children per bin) of the children's run times."""
        times = [c.run_seconds for c in self.children if c.started_at is not None]
        if not times:
            return [0.0, 0.0], [0]
        low, high = min(times), max(times)
        width = (high - low) / bins or 1.0
        counts = [0] * bins
        for value in times:
            counts[min(int((value - low) / width), bins - 1)] += 1
        return [low + width * i for i in range(bins + 1)], counts


@dataclass(frozen=True)
class CostEstimate:
    usd: float
    per_job: Mapping[str, float]
    instance_types: Mapping[str, str]
    """Job key -> the instance type priced (the cheapest of the queue's that fits it)."""
    spot: bool
    basis: str


@dataclass(frozen=True)
class RunReport:
    run_id: str
    jobs: tuple[JobRecord, ...]
    failures: tuple[FailureGroup, ...]
    worst_case: Mapping[str, tuple[float, float]]
    """Job key -> the pre-run worst case (vCPU-hours, GiB-hours)."""
    cost: CostEstimate | None
    calls: Mapping[str, int] = field(default_factory=dict)
    prediction: Prediction | None = None
    """A local run's input as a run on AWS (the construct's defaults) would take it, from
    the times per object it measured; None on AWS."""

    @property
    def started_at(self) -> int:
        return min((c.created_at for j in self.jobs for c in j.children), default=0)

    @property
    def ended_at(self) -> int:
        ends = [c.stopped_at or 0 for j in self.jobs for c in j.children]
        return max([*ends, self.started_at])

    def as_json(self) -> dict[str, Any]:
        def stats(values: Sequence[float]) -> dict[str, float] | None:
            if not values:
                return None
            ordered = sorted(values)
            return {
                "p50": _quantile(ordered, 0.5),
                "p90": _quantile(ordered, 0.9),
                "max": ordered[-1],
            }

        jobs = []
        for job in self.jobs:
            edges, counts = job.histogram()
            worst = self.worst_case.get(job.key, (0.0, 0.0))
            jobs.append(
                {
                    "job": job.key,
                    "submission": job.submission,
                    "jobId": job.job_id,
                    "status": job.status,
                    "arraySize": job.array_size,
                    "vcpus": job.vcpus,
                    "memoryMiB": job.memory_mib,
                    "waitSeconds": stats([w for c in job.children if (w := c.wait_seconds)]),
                    "runSeconds": stats([c.run_seconds for c in job.children if c.started_at]),
                    "retries": job.retries,
                    "failed": job.failed,
                    "slowest": [
                        {"index": c.index, "seconds": round(c.run_seconds, 3)}
                        for c in job.slowest()
                    ],
                    "histogram": {"edges": edges, "counts": counts},
                    "vcpuHours": job.vcpu_hours,
                    "gibHours": job.gib_hours,
                    "worstCaseVcpuHours": worst[0],
                    "worstCaseGibHours": worst[1],
                }
            )
        return {
            "runId": self.run_id,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "jobs": jobs,
            "failures": [g.as_json() for g in self.failures],
            "cost": None
            if self.cost is None
            else {
                "estimatedUsd": self.cost.usd,
                "perJob": dict(self.cost.per_job),
                "instanceTypes": dict(self.cost.instance_types),
                "spot": self.cost.spot,
                "basis": self.cost.basis,
            },
            "calls": dict(self.calls),
            "prediction": self.prediction.as_json() if self.prediction is not None else None,
        }


def collect(
    batch: BatchApi,
    document: PipelineDocument,
    run_id: str,
    *,
    read_log: LogReader | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> RunReport:
    """The run's report, its whole history: every job of the run (found by the run tag), from
    its first submission through each resume, every child described, one DescribeJobs call
    per 100 children; ``on_progress(described, total)`` after each call."""
    calls: dict[str, int] = {}
    counted = _Counting(batch, calls)
    history = find_run_history(counted, document.queue, run_id, document.spec)
    progress = sorted(
        (job for key in history for job in history[key]),
        key=lambda p: (p.created_at or 0, [j.key for j in document.spec].index(p.key)),
    )
    submissions: dict[str, int] = {}
    total = sum(p.array_size or 1 for p in progress)
    described = 0
    jobs: list[JobRecord] = []
    for job in progress:
        spec = document.spec.job(job.key)
        children: list[ChildRecord] = []
        if job.array_size:
            ids = [f"{job.job_id}:{i}" for i in range(job.array_size)]
            for start in range(0, len(ids), DESCRIBE_JOBS_LIMIT):
                page = counted.describe_jobs(jobs=ids[start : start + DESCRIBE_JOBS_LIMIT])["jobs"]
                children += [ChildRecord.from_description(d) for d in page]
                described += len(page)
                if on_progress:
                    on_progress(described, total)
        else:
            (own,) = counted.describe_jobs(jobs=[job.job_id])["jobs"]
            children.append(ChildRecord.from_description(own))
            described += 1
        jobs.append(
            JobRecord(
                job.key,
                job.job_id,
                job.status,
                job.array_size,
                spec.vcpus,
                spec.memory_mib,
                tuple(sorted(children, key=lambda c: -1 if c.index is None else c.index)),
                submission=submissions.get(job.key, 0),
            )
        )
        submissions[job.key] = submissions.get(job.key, 0) + 1
    jobs = _with_ready_times(jobs, document.spec)
    failures = failure_report(counted, progress, read_log=read_log)
    # The worst case of this run, at the size it was submitted with.
    sizes = [
        j.array_size
        for j in jobs
        if document.spec.job(j.key).scales_with_input and not j.submission
    ]
    run_spec = document.spec.with_array_size(sizes[0]) if sizes and sizes[0] else document.spec
    worst = {c.key: (c.vcpu_hours, c.gib_hours) for c in worst_case(run_spec)}
    return RunReport(
        run_id, tuple(jobs), tuple(failures), worst, _estimate(counted, document, jobs), calls
    )


def _with_ready_times(jobs: Sequence[JobRecord], spec: PipelineSpec) -> list[JobRecord]:
    """Each child's ready time from its dependencies as the spec declares them: the whole job
    it waits for has stopped (STANDARD), its partner child has (N_TO_N), the previous child
    has (SEQUENTIAL)."""
    # A job waits for what was submitted before it: its dependency's latest submission so far.
    by_key: dict[str, JobRecord] = {}
    ends: dict[str, int] = {}
    ready_jobs = []
    for job in jobs:
        children: list[ChildRecord] = []
        previous: int | None = None
        for child in job.children:
            ready = child.created_at
            for dependency in spec.job(job.key).depends_on:
                if dependency.type is DependencyType.SEQUENTIAL:
                    ready = max(ready, previous or 0)
                elif dependency.on not in by_key:
                    continue
                elif dependency.type is DependencyType.N_TO_N and child.index is not None:
                    partners = by_key[dependency.on].children
                    if child.index < len(partners):
                        ready = max(ready, partners[child.index].stopped_at or 0)
                else:
                    ready = max(ready, ends[dependency.on])
            children.append(replace(child, ready_at=ready))
            previous = child.stopped_at
        ready_jobs.append(replace(job, children=tuple(children)))
        by_key[job.key] = job
        ends[job.key] = max((c.stopped_at or 0) for c in job.children)
    return ready_jobs


def _estimate(
    batch: BatchApi, document: PipelineDocument, jobs: Sequence[JobRecord]
) -> CostEstimate | None:
    """Each job's run hours priced on the cheapest instance type of the queue that fits it,
    at the share of the instance one child takes; None where the queue's instance types are
    not in the price table (an UNMANAGED or local environment, "optimal")."""
    known, unknown, _ = queue_instance_types(batch, document.queue)
    priced = [t for t in known if t.on_demand_usd_per_hour > 0]
    if not priced or unknown:
        return None
    per_job: dict[str, float] = {}
    types: dict[str, str] = {}
    for job in jobs:
        best = cheapest_fit(priced, job.vcpus, job.memory_mib)
        if best is None:
            continue
        hourly = best.child_usd_per_hour(job.vcpus, job.memory_mib)
        hours = sum(c.run_seconds for c in job.children) / 3600
        per_job[job.key] = round(per_job.get(job.key, 0.0) + hours * hourly, 4)
        types[job.key] = best.name
    spot = _queue_uses_spot(batch, document.queue)
    return CostEstimate(
        usd=round(sum(per_job.values()), 4),
        per_job=per_job,
        instance_types=types,
        spot=spot,
        basis=f"{PRICE_REGION} Linux On-Demand prices of {PRICE_DATE}, children packed onto "
        "the cheapest fitting instance type with no idle time"
        + ("; the queue runs on Spot, which usually costs much less" if spot else ""),
    )


def _queue_uses_spot(batch: BatchApi, queue: str) -> bool:
    queues = batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
    order = queues[0].get("computeEnvironmentOrder", []) if queues else []
    arns = [e["computeEnvironment"] for e in order]
    if not arns:
        return False
    environments = batch.describe_compute_environments(computeEnvironments=arns)
    for environment in environments["computeEnvironments"]:
        resources = environment.get("computeResources")
        if resources is not None and resources.get("type") in ("SPOT", "FARGATE_SPOT"):
            return True
    return False


def _quantile(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class _Counting:
    """A Batch client that counts the calls made through it (the report says what it cost)."""

    def __init__(self, batch: BatchApi, calls: dict[str, int]) -> None:
        self._batch = batch
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._batch, name)

        def call(**kwargs: Any) -> Any:
            self._calls[name] = self._calls.get(name, 0) + 1
            return method(**kwargs)

        return call


def progress_reporter(emit: Callable[[str], None]) -> Callable[[int, int], None]:
    """A collection progress callback that emits at most one line a second."""
    last = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 1.0 or done == total:
            emit(f"collected {done:,}/{total:,} jobs")
            last = now

    return report


__all__ = ["JobProgress", "RunReport", "collect", "progress_reporter"]
