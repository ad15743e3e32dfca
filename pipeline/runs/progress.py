"""A run's jobs as Batch reports them: describe them, find a run again by its tag.

Every call goes through :class:`pipeline.runs.api.BatchApi`, so this is the same code for a
boto3 client and for LocalBatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.batch_facts import DESCRIBE_JOBS_LIMIT, TERMINAL
from pipeline.contract import INDEX_MAP, INPUT_PREFIX
from pipeline.errors import RunStateError
from pipeline.spec import RUN_TAG, STARTED_BY_TAG, PipelineSpec

if TYPE_CHECKING:
    from pipeline.runs.api import BatchApi, JobDetailTypeDef

"""DescribeJobs takes at most 100 job IDs per call."""


@dataclass(frozen=True)
class SubmittedJob:
    key: str
    job_id: str
    reused: bool = False
    """True when a resumed run kept this job (it had succeeded) instead of submitting it."""


@dataclass(frozen=True)
class SubmittedRun:
    run_id: str
    jobs: tuple[SubmittedJob, ...]

    @property
    def job_ids(self) -> dict[str, str]:
        return {j.key: j.job_id for j in self.jobs}


@dataclass(frozen=True)
class JobProgress:
    """One job of a run as DescribeJobs reports it; arrays count children by status from the
    parent's ``statusSummary`` (no per-child calls)."""

    key: str
    job_id: str
    status: str
    status_reason: str | None = None
    array_size: int | None = None
    children: Mapping[str, int] = field(default_factory=dict)
    created_at: int = 0
    exit_code: int | None = None
    log_stream: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    """The container's environment as described (the definition's with the run's overrides)."""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_active(self) -> bool:
        return self.status not in TERMINAL

    @property
    def shown_status(self) -> str:
        """The status a person reads: an array parent stays PENDING while its children run
        (AWS Batch reports no other status for a parent until it ends), so an active array
        shows RUNNING once a child has started, RUNNABLE while children wait to be placed."""
        if not self.array_size or not self.is_active:
            return self.status
        children = self.children
        if children.get("STARTING") or children.get("RUNNING"):
            return "RUNNING"
        if children.get("SUCCEEDED") or children.get("FAILED"):
            return "RUNNING"  # between two children: some ended, none started yet
        if children.get("RUNNABLE"):
            return "RUNNABLE"
        return self.status

    @property
    def has_failed(self) -> bool:
        """Failed, or an array with a failed child (its parent fails once all children end,
        and every job after it would fail too)."""
        return self.status == "FAILED" or self.children.get("FAILED", 0) > 0

    @property
    def index_map(self) -> tuple[int, ...] | None:
        """The run's indices of the children this submission re-runs (``resume --failed-only``
        submits child k for the run's index ``index_map[k]``); None for a whole submission."""
        mapped = self.environment.get(INDEX_MAP)
        return tuple(int(i) for i in mapped.split(",")) if mapped else None

    def run_index(self, index: int | None) -> int | None:
        """The run's index of this submission's child ``index`` (None: the job itself, which
        for a re-run of a single child is a standard job standing for that child)."""
        mapped = self.index_map
        if mapped is None:
            return index
        if index is None:
            return mapped[0] if len(mapped) == 1 else None
        return mapped[index] if index < len(mapped) else index

    @classmethod
    def from_description(cls, key: str, job: Mapping[str, Any]) -> JobProgress:
        array = job.get("arrayProperties") or {}
        container = job.get("container") or {}
        attempts = job.get("attempts") or []
        last_attempt = (attempts[-1].get("container") or {}) if attempts else {}
        log_stream = container.get("logStreamName") or last_attempt.get("logStreamName")
        exit_code = container.get("exitCode", last_attempt.get("exitCode"))
        return cls(
            key=key,
            job_id=job["jobId"],
            status=job["status"],
            status_reason=job.get("statusReason"),
            array_size=array.get("size"),
            children=dict(array.get("statusSummary") or {}),
            created_at=int(job.get("createdAt") or 0),
            exit_code=exit_code,
            log_stream=log_stream,
            parameters=dict(job.get("parameters") or {}),
            environment={e["name"]: e["value"] for e in container.get("environment") or []},
            tags=dict(job.get("tags") or {}),
        )


def describe_jobs(batch: BatchApi, job_ids: Mapping[str, str]) -> list[JobProgress]:
    """Progress of the given jobs (key -> ID), one DescribeJobs call per 100 IDs."""
    by_id = {job_id: key for key, job_id in job_ids.items()}
    found: dict[str, JobProgress] = {}
    ids = list(by_id)
    for start in range(0, len(ids), DESCRIBE_JOBS_LIMIT):
        response = batch.describe_jobs(jobs=ids[start : start + DESCRIBE_JOBS_LIMIT])
        for job in response["jobs"]:
            found[job["jobId"]] = JobProgress.from_description(by_id[job["jobId"]], job)
    return [found[job_id] for job_id in ids if job_id in found]


def find_jobs_by_name(
    batch: BatchApi, queue: str, job_name: str, tag: tuple[str, str]
) -> list[JobDetailTypeDef]:
    """Descriptions of the jobs named ``job_name`` in ``queue`` that carry ``tag`` (key,
    value)."""
    matches: list[JobDetailTypeDef] = []
    for job in _jobs_named(batch, queue, job_name):
        if (job.get("tags") or {}).get(tag[0]) == tag[1]:
            matches.append(job)
    return matches


def find_run(
    batch: BatchApi, queue: str, run_id: str, spec: PipelineSpec
) -> dict[str, JobProgress]:
    """The newest job of each key that carries the run's tag (a resumed run has older ones)."""
    return {key: jobs[-1] for key, jobs in find_run_history(batch, queue, run_id, spec).items()}


def find_run_history(
    batch: BatchApi, queue: str, run_id: str, spec: PipelineSpec
) -> dict[str, list[JobProgress]]:
    """Every job of each key that carries the run's tag, oldest first: the first submission,
    then each resume's."""
    run: dict[str, list[JobProgress]] = {}
    for job in spec:
        found = find_jobs_by_name(batch, queue, job.key, (RUN_TAG, run_id))
        if found:
            found.sort(key=lambda j: j.get("createdAt") or 0)
            run[job.key] = [JobProgress.from_description(job.key, j) for j in found]
    if not run:
        raise RunStateError(
            f"no jobs of run {run_id!r} in queue {queue}; check the run id and --stack/--queue "
            "(Batch keeps finished jobs for about 7 days)"
        )
    return run


def current_submissions(history: Sequence[JobProgress]) -> list[JobProgress]:
    """Of one job's submissions (oldest first, see :func:`find_run_history`), those that make
    the job what it is now: its newest whole submission, then each re-run of some of its
    children after it (``resume --failed-only``), which stand for those children only."""
    whole = [n for n, job in enumerate(history) if job.index_map is None]
    return list(history[whole[-1] if whole else 0 :])


def child_index(description: Mapping[str, Any]) -> int | None:
    index = (description.get("arrayProperties") or {}).get("index")
    if index is None and ":" in description["jobId"]:  # child IDs are "<parent ID>:<index>"
        index = int(description["jobId"].rsplit(":", 1)[1])
    return index


INTERRUPTED = "INTERRUPTED"
"""A local run's status when the services that ran it stopped before it ended."""


@dataclass(frozen=True)
class RunSummary:
    """One run in a queue, as ``status`` without a run id lists it."""

    run_id: str
    status: str
    """RUNNING while its first JobA or its newest JobE has not ended (so also while its chain
    is being submitted), else its JobE's SUCCEEDED or FAILED; INCOMPLETE when the chain never
    reached JobE (a submission that failed, and was stopped); INTERRUPTED, for a local run,
    when its services stopped before it ended (``resume`` goes on with it)."""
    created_at: int
    """When its first job was submitted (ms since the epoch)."""
    started_by: str
    """``schedule``, ``upload`` or ``command line``."""
    input_prefix: str | None = None

    @property
    def is_active(self) -> bool:
        return self.status == "RUNNING"

    def as_json(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "status": self.status,
            "createdAt": self.created_at,
            "startedBy": self.started_by,
            "inputPrefix": self.input_prefix,
        }


def list_runs(
    batch: BatchApi, queue: str, spec: PipelineSpec, *, limit: int | None = None
) -> list[RunSummary]:
    """The runs with jobs in ``queue`` (Batch keeps ended jobs for about 7 days), newest first:
    two ListJobs listings (the first and last job of the chain) and one DescribeJobs call per
    100 of their jobs, for the run tags."""
    first, last = spec.jobs[0].key, spec.jobs[-1].key
    described = {
        key: [_Tagged.of(job) for job in _jobs_named(batch, queue, key)] for key in (first, last)
    }
    runs: dict[str, list[_Tagged]] = {}
    for jobs in described.values():
        for job in jobs:
            if job.run_id:
                runs.setdefault(job.run_id, []).append(job)
    summaries = []
    for run_id, jobs in runs.items():
        ends = [j for j in jobs if j.key == last]
        end = max(ends, key=lambda j: j.created_at) if ends else None
        head = min(jobs, key=lambda j: j.created_at)
        if any(j.status not in TERMINAL for j in (head, end) if j is not None):
            status = "RUNNING"  # also a chain still being submitted (no JobE yet)
        elif end is not None:
            status = end.status
        else:
            status = "INCOMPLETE"
        summaries.append(
            RunSummary(
                run_id=run_id,
                status=status,
                created_at=head.created_at,
                started_by=head.tags.get(STARTED_BY_TAG, "command line"),
                input_prefix=head.environment.get(INPUT_PREFIX),
            )
        )
    summaries.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
    return summaries[:limit] if limit is not None else summaries


@dataclass(frozen=True)
class _Tagged:
    key: str
    run_id: str | None
    status: str
    created_at: int
    tags: Mapping[str, str]
    environment: Mapping[str, str]

    @classmethod
    def of(cls, job: JobDetailTypeDef) -> _Tagged:
        tags = dict(job.get("tags") or {})
        container: Any = job.get("container") or {}
        return cls(
            key=job["jobName"],
            run_id=tags.get(RUN_TAG),
            status=job["status"],
            created_at=int(job.get("createdAt") or 0),
            tags=tags,
            environment={e["name"]: e["value"] for e in container.get("environment") or []},
        )


def _jobs_named(batch: BatchApi, queue: str, job_name: str) -> list[JobDetailTypeDef]:
    """Every job (array parents, not children) named ``job_name`` in ``queue``, described."""
    return _described(batch, _parent_ids(batch, queue, job_name))


def _parent_ids(batch: BatchApi, queue: str, job_name: str) -> list[str]:
    ids: list[str] = []
    token: str | None = None
    while True:
        # boto3 rejects nextToken=None, so it is passed only when there is one.
        page_token: dict[str, Any] = {"nextToken": token} if token else {}
        page = batch.list_jobs(
            jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [job_name]}], **page_token
        )
        # Array children share their parent's name (and, propagated, its tags): a run's jobs
        # are the parents, whose IDs have no ":<index>".
        ids += [
            s["jobId"]
            for s in page["jobSummaryList"]
            if s.get("jobName") == job_name and ":" not in s["jobId"]
        ]
        token = page.get("nextToken")
        if not token:
            return ids


def _described(batch: BatchApi, ids: list[str]) -> list[JobDetailTypeDef]:
    found: list[JobDetailTypeDef] = []
    for start in range(0, len(ids), DESCRIBE_JOBS_LIMIT):
        found += batch.describe_jobs(jobs=ids[start : start + DESCRIBE_JOBS_LIMIT])["jobs"]
    return found


def leaf_attempts(
    batch: BatchApi, jobs: Sequence[SubmittedJob]
) -> dict[str, list[list[dict[str, Any]]]]:
    """Job key -> the attempts of each of its leaves (array children, or the job itself), for
    the jobs a submission made (a kept job has none): one DescribeJobs call per 100 leaves."""
    found: dict[str, list[list[dict[str, Any]]]] = {}
    for job in jobs:
        found[job.key] = []
        if job.reused:
            continue
        (parent,) = batch.describe_jobs(jobs=[job.job_id])["jobs"]
        size = (parent.get("arrayProperties") or {}).get("size")
        ids = [f"{job.job_id}:{i}" for i in range(size)] if size else [job.job_id]
        for start in range(0, len(ids), DESCRIBE_JOBS_LIMIT):
            for leaf in batch.describe_jobs(jobs=ids[start : start + DESCRIBE_JOBS_LIMIT])["jobs"]:
                found[job.key].append([dict(a) for a in leaf.get("attempts") or []])
    return found
