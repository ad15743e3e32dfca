"""Operations on a run: submit the chain, find it again, watch it, cancel it, resume it.

Everything here talks to a Batch client through :class:`BatchApi`, the subset of boto3's
Batch client the pipeline uses, with the same request and response shapes. A boto3 client is
the real one; :class:`pipeline.local.LocalBatch` is the local one; the code is the same.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, ReadTimeoutError

from pipeline.errors import ChainError, RunStateError
from pipeline.notifications import DEPENDENCY_FAILED
from pipeline.spec import RUN_TAG, SUBMISSION_TAG, PipelineSpec
from pipeline.submission import RunConfig, Targets, build_request

TERMINAL = frozenset({"SUCCEEDED", "FAILED"})
QUEUED = frozenset({"SUBMITTED", "PENDING", "RUNNABLE"})
DESCRIBE_LIMIT = 100
"""DescribeJobs takes at most 100 job IDs per call."""


class BatchApi(Protocol):
    """The Batch methods the pipeline calls, with boto3's names and shapes."""

    def submit_job(self, **request: Any) -> Any: ...

    def describe_jobs(self, *, jobs: Sequence[str]) -> Any: ...

    def list_jobs(
        self,
        *,
        jobQueue: str | None = ...,  # noqa: N803
        arrayJobId: str | None = ...,  # noqa: N803
        jobStatus: str | None = ...,  # noqa: N803
        filters: Sequence[Mapping[str, Any]] | None = ...,
        maxResults: int | None = ...,  # noqa: N803
        nextToken: str | None = ...,  # noqa: N803
    ) -> Any: ...

    def terminate_job(self, *, jobId: str, reason: str) -> Any: ...  # noqa: N803

    def cancel_job(self, *, jobId: str, reason: str) -> Any: ...  # noqa: N803


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

    @property
    def is_active(self) -> bool:
        return self.status not in TERMINAL

    @property
    def has_failed(self) -> bool:
        """Failed, or an array with a failed child (its parent fails once all children end,
        and every job after it would fail too)."""
        return self.status == "FAILED" or self.children.get("FAILED", 0) > 0

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
        )


@dataclass(frozen=True)
class Failure:
    """The first failure of a run, for a one-line report."""

    job_key: str
    job_id: str
    child_index: int | None
    status_reason: str | None
    exit_code: int | None
    log_stream: str | None

    def describe(self) -> str:
        where = self.job_key if self.child_index is None else f"{self.job_key}[{self.child_index}]"
        parts = [f"{where} failed ({self.job_id})"]
        if self.exit_code is not None:
            parts.append(f"exit code {self.exit_code}")
        if self.status_reason:
            parts.append(f"reason: {self.status_reason}")
        if self.log_stream:
            parts.append(f"log stream: {self.log_stream}")
        return "; ".join(parts)


# --- submit ----------------------------------------------------------------------------------


def submit_pipeline(
    batch: BatchApi,
    targets: Targets,
    config: RunConfig,
    *,
    reuse: Mapping[str, str] | None = None,
    reruns: Mapping[str, Sequence[int]] | None = None,
    on_submitted: Callable[[SubmittedJob], None] | None = None,
) -> SubmittedRun:
    """Submit the spec's jobs in order, each job ID feeding the next ``dependsOn``.

    ``reuse`` maps keys of jobs that already succeeded (a resumed run) to their IDs; they are
    not submitted again and later jobs depend on them. ``reruns`` maps keys of array jobs to
    re-run for some children only to those children's indices (see ``build_request``). If a
    SubmitJob fails for good, every job this call submitted is cancelled (or terminated, if it
    started) and :class:`ChainError` says which; nothing is left orphaned.
    """
    reuse = dict(reuse or {})
    ids: dict[str, str] = {}
    jobs: list[SubmittedJob] = []
    with _no_blind_submit_retries(batch):
        for job in config.spec:
            if job.key in reuse:
                ids[job.key] = reuse[job.key]
                jobs.append(SubmittedJob(job.key, reuse[job.key], reused=True))
                continue
            request = build_request(job, targets, config, ids, reruns=reruns)
            try:
                job_id = _submit_once(batch, request, targets.queue)
            except (ClientError, BotoCoreError) as error:
                submitted = [j for j in jobs if not j.reused]
                stopped = _cancel_submitted(batch, submitted, config.run_id, job.key)
                what = ", ".join(f"{key} {action}" for key, action in stopped) or "none submitted"
                raise ChainError(
                    f"SubmitJob for {job.key} failed: {_error_text(error)}; the jobs already "
                    f"submitted were stopped: {what}",
                    failed_job=job.key,
                    cancelled=[j.job_id for j in submitted],
                ) from error
            ids[job.key] = job_id
            submitted_job = SubmittedJob(job.key, job_id)
            jobs.append(submitted_job)
            if on_submitted:
                on_submitted(submitted_job)
    return SubmittedRun(config.run_id, tuple(jobs))


def _cancel_submitted(
    batch: BatchApi, jobs: Sequence[SubmittedJob], run_id: str, failed_key: str
) -> list[tuple[str, str]]:
    if not jobs:
        return []
    progress = describe_jobs(batch, {j.key: j.job_id for j in jobs})
    return stop(batch, progress, f"run {run_id}: SubmitJob for {failed_key} failed")


def _error_text(error: Exception) -> str:
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"{info.get('Code', 'Error')}: {info.get('Message', '')}".strip()
    return str(error)


_AMBIGUOUS_EXCEPTIONS = (ReadTimeoutError, ConnectionClosedError)
"""The request was sent and the answer lost: the service may have accepted it. (A connect
error or timeout means it never arrived, and a plain retry is safe.)"""
RECONCILE_ATTEMPTS = 5


def _is_ambiguous(error: BaseException | None, status_code: int | None = None) -> bool:
    if isinstance(error, _AMBIGUOUS_EXCEPTIONS):
        return True
    if isinstance(error, ClientError):
        status_code = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status_code is not None and status_code >= 500


def _submit_once(
    batch: BatchApi,
    request: Mapping[str, Any],
    queue: str,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """SubmitJob, made safe to retry.

    botocore retries throttling (standard/adaptive mode) as usual. A failure after which the
    service may already have accepted the job (read timeout, connection reset, a 5xx) is not
    retried blindly, which could start a second copy: first look for the job this request
    created, by a submission tag unique to it (the run tag alone would also find the jobs of
    an earlier attempt of a resumed run), and use it if it exists.
    """
    token = str(uuid.uuid4())
    request = {**request, "tags": {**request.get("tags", {}), SUBMISSION_TAG: token}}
    for attempt in range(1, RECONCILE_ATTEMPTS + 1):
        try:
            return str(batch.submit_job(**request)["jobId"])
        except (ClientError, BotoCoreError) as error:
            if not _is_ambiguous(error) or attempt == RECONCILE_ATTEMPTS:
                raise
        found = find_jobs_by_name(batch, queue, request["jobName"], (SUBMISSION_TAG, token))
        if found:
            return str(max(found, key=lambda j: j.get("createdAt") or 0)["jobId"])
        sleep(min(2.0**attempt, 20.0))
    raise AssertionError("unreachable")


@contextmanager
def _no_blind_submit_retries(batch: BatchApi) -> Iterator[None]:
    """Stop botocore from retrying SubmitJob after an ambiguous failure (see _submit_once);
    every other retry decision stays botocore's. Clients without botocore events (LocalBatch)
    never fail that way."""
    events = getattr(getattr(batch, "meta", None), "events", None)
    if events is None:
        yield
        return

    def needs_retry(
        response: tuple[Any, Any] | None, caught_exception: BaseException | None, **_: Any
    ) -> bool | None:
        status = getattr(response[0], "status_code", None) if response else None
        # False (not None) is botocore's answer for "do not retry", and the first non-None wins.
        return False if _is_ambiguous(caught_exception, status) else None

    events.register_first("needs-retry.batch.SubmitJob", needs_retry, unique_id=_HOOK_ID)
    try:
        yield
    finally:
        events.unregister("needs-retry.batch.SubmitJob", unique_id=_HOOK_ID)


_HOOK_ID = "array-job-pipeline-submit"


# --- find and describe -----------------------------------------------------------------------


def describe_jobs(batch: BatchApi, job_ids: Mapping[str, str]) -> list[JobProgress]:
    """Progress of the given jobs (key -> ID), one DescribeJobs call per 100 IDs."""
    by_id = {job_id: key for key, job_id in job_ids.items()}
    found: dict[str, JobProgress] = {}
    ids = list(by_id)
    for start in range(0, len(ids), DESCRIBE_LIMIT):
        response = batch.describe_jobs(jobs=ids[start : start + DESCRIBE_LIMIT])
        for job in response["jobs"]:
            found[job["jobId"]] = JobProgress.from_description(by_id[job["jobId"]], job)
    return [found[job_id] for job_id in ids if job_id in found]


def find_jobs_by_name(
    batch: BatchApi, queue: str, job_name: str, tag: tuple[str, str]
) -> list[dict[str, Any]]:
    """Descriptions of the jobs named ``job_name`` in ``queue`` that carry ``tag`` (key,
    value)."""
    ids: list[str] = []
    token: str | None = None
    while True:
        # boto3 rejects nextToken=None, so it is passed only when there is one.
        page_token: dict[str, Any] = {"nextToken": token} if token else {}
        page = batch.list_jobs(
            jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [job_name]}], **page_token
        )
        ids += [s["jobId"] for s in page["jobSummaryList"] if s.get("jobName") == job_name]
        token = page.get("nextToken")
        if not token:
            break
    matches: list[dict[str, Any]] = []
    for start in range(0, len(ids), DESCRIBE_LIMIT):
        for job in batch.describe_jobs(jobs=ids[start : start + DESCRIBE_LIMIT])["jobs"]:
            if (job.get("tags") or {}).get(tag[0]) == tag[1]:
                matches.append(job)
    return matches


def find_run(
    batch: BatchApi, queue: str, run_id: str, spec: PipelineSpec
) -> dict[str, JobProgress]:
    """The newest job of each key that carries the run's tag (a resumed run has older ones)."""
    run: dict[str, JobProgress] = {}
    for job in spec:
        found = find_jobs_by_name(batch, queue, job.key, (RUN_TAG, run_id))
        if found:
            newest = max(found, key=lambda j: j.get("createdAt") or 0)
            run[job.key] = JobProgress.from_description(job.key, newest)
    if not run:
        raise RunStateError(
            f"no jobs of run {run_id!r} in queue {queue}; check the run id and --stack/--queue "
            "(Batch keeps finished jobs for about 7 days)"
        )
    return run


def first_failure(batch: BatchApi, progress: Sequence[JobProgress]) -> Failure | None:
    """The earliest failed job in run order; for an array, its first failed child (two calls,
    however many children failed)."""
    for job in progress:
        if not job.has_failed:
            continue
        if job.array_size is None or not job.children.get("FAILED"):
            return Failure(
                job.key, job.job_id, None, job.status_reason, job.exit_code, job.log_stream
            )
        page = batch.list_jobs(arrayJobId=job.job_id, jobStatus="FAILED", maxResults=1)
        summaries = page["jobSummaryList"]
        if not summaries:
            return Failure(job.key, job.job_id, None, job.status_reason, None, None)
        (child,) = batch.describe_jobs(jobs=[summaries[0]["jobId"]])["jobs"]
        detail = JobProgress.from_description(job.key, child)
        index = _child_index(child)
        return Failure(
            job.key, detail.job_id, index, detail.status_reason, detail.exit_code, detail.log_stream
        )
    return None


# --- failure report --------------------------------------------------------------------------

REPORT_PAGE = 100
"""Failed children read per array job: one ListJobs page and one DescribeJobs call, however
many children failed; counts beyond the page come from the parent's statusSummary."""

LogReader = Callable[[str, "str | None"], list[str]]
"""(job ID, log stream name) -> the last lines of that attempt's log."""


@dataclass(frozen=True)
class FailureGroup:
    """Failed children of one job that ended the same way."""

    job_key: str
    exit_code: int | None
    status_reason: str | None
    indices: tuple[int, ...]
    """Array indices (empty for a standard job)."""
    example_job_id: str
    log_stream: str | None
    log_tail: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return max(len(self.indices), 1)

    @property
    def not_run(self) -> bool:
        """These never ran: a job they depend on failed (a consequence, not a cause)."""
        return self.status_reason == DEPENDENCY_FAILED

    def where(self) -> str:
        return f"{self.job_key}[{index_ranges(self.indices)}]" if self.indices else self.job_key

    def describe(self) -> str:
        code = "no exit code" if self.exit_code is None else f"exit code {self.exit_code}"
        reason = self.status_reason or "none"
        return f"{self.where()}: {self.count} failed, {code}, reason: {reason}"

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.job_key,
            "exitCode": self.exit_code,
            "statusReason": self.status_reason,
            "count": self.count,
            "indices": index_ranges(self.indices),
            "exampleJobId": self.example_job_id,
            "logStream": self.log_stream,
            "logTail": list(self.log_tail),
            "notRun": self.not_run,
        }


def index_ranges(indices: Sequence[int]) -> str:
    """``0-3, 7, 9-12``."""
    runs: list[list[int]] = []
    for index in sorted(indices):
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _failed_members(batch: BatchApi, job: JobProgress) -> list[tuple[int | None, JobProgress]]:
    """(array index, progress) of a failed job's failed children, from the first page; the job
    itself for a standard job."""
    if job.array_size is None or not job.children.get("FAILED"):
        return [(None, job)]
    page = batch.list_jobs(arrayJobId=job.job_id, jobStatus="FAILED", maxResults=REPORT_PAGE)
    ids = [s["jobId"] for s in page["jobSummaryList"]][:REPORT_PAGE]
    described = batch.describe_jobs(jobs=ids)["jobs"] if ids else []
    return [(_child_index(d), JobProgress.from_description(job.key, d)) for d in described]


def failure_report(
    batch: BatchApi,
    progress: Sequence[JobProgress],
    *,
    read_log: LogReader | None = None,
    log_lines: int = 10,
) -> list[FailureGroup]:
    """Failed jobs and children grouped by (exit code, status reason), with the index ranges
    and the last lines of one log per group. API calls: per failed array job one ListJobs and
    one DescribeJobs, per group one log read; independent of how many children failed."""
    groups: list[FailureGroup] = []
    for job in progress:
        if not job.has_failed:
            continue
        by_outcome: dict[tuple[int | None, str | None], list[tuple[int | None, JobProgress]]] = {}
        for index, member in _failed_members(batch, job):
            by_outcome.setdefault((member.exit_code, member.status_reason), []).append(
                (index, member)
            )
        for (exit_code, reason), grouped in sorted(
            by_outcome.items(), key=lambda item: -len(item[1])
        ):
            example = grouped[0][1]
            ran = reason != DEPENDENCY_FAILED  # no log to read for a job that never started
            tail = (
                read_log(example.job_id, example.log_stream)[-log_lines:]
                if read_log and ran
                else []
            )
            groups.append(
                FailureGroup(
                    job_key=job.key,
                    exit_code=exit_code,
                    status_reason=reason,
                    indices=tuple(sorted(i for i, _ in grouped if i is not None)),
                    example_job_id=example.job_id,
                    log_stream=example.log_stream,
                    log_tail=tuple(tail),
                )
            )
    return groups


def _child_index(description: Mapping[str, Any]) -> int | None:
    index = (description.get("arrayProperties") or {}).get("index")
    if index is None and ":" in description["jobId"]:  # child IDs are "<parent ID>:<index>"
        index = int(description["jobId"].rsplit(":", 1)[1])
    return index


def cloudwatch_log_reader(logs: Any, log_group: str, lines: int = 10) -> LogReader:
    """Read the last lines of a job's log stream from CloudWatch Logs (one call)."""

    def read(_job_id: str, log_stream: str | None) -> list[str]:
        if not log_stream:
            return []
        try:
            events = logs.get_log_events(
                logGroupName=log_group, logStreamName=log_stream, limit=lines, startFromHead=False
            )["events"]
        except ClientError as error:  # the report still helps without the excerpt
            return [f"(log {log_stream} unavailable: {_error_text(error)})"]
        return [e["message"].rstrip() for e in events]

    return read


# --- watch, stop, resume ---------------------------------------------------------------------


@dataclass(frozen=True)
class WatchResult:
    succeeded: bool
    progress: list[JobProgress]
    failure: Failure | None = None


def watch(
    batch: BatchApi,
    run: SubmittedRun,
    *,
    interval: float = 10.0,
    on_poll: Callable[[list[JobProgress]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    settle: bool = False,
) -> WatchResult:
    """Poll until the last job succeeds or any job fails. Each poll is one DescribeJobs call
    per 100 jobs of the run (one, for the five jobs), whatever the array sizes.

    With ``settle``, a failure is reported only once every job of the run has ended (what a
    local run does before it shuts everything down); otherwise at once, since a failed job
    means the run cannot succeed."""
    last_key = run.jobs[-1].key
    while True:
        progress = describe_jobs(batch, run.job_ids)
        if on_poll:
            on_poll(progress)
        failed = any(p.has_failed for p in progress)
        if failed and (not settle or not any(p.is_active for p in progress)):
            return WatchResult(False, progress, first_failure(batch, progress))
        if any(p.key == last_key and p.status == "SUCCEEDED" for p in progress):
            return WatchResult(True, progress)
        sleep(interval)


def stop(batch: BatchApi, progress: Sequence[JobProgress], reason: str) -> list[tuple[str, str]]:
    """Cancel the jobs that have not started and terminate those that have (CancelJob leaves
    STARTING and RUNNING jobs running). Returns (job key, "cancelled"|"terminated") pairs."""
    actions: list[tuple[str, str]] = []
    for job in progress:
        if not job.is_active:
            continue
        started = job.status in ("STARTING", "RUNNING") or any(
            job.children.get(s, 0) for s in ("STARTING", "RUNNING")
        )
        if started:
            batch.terminate_job(jobId=job.job_id, reason=reason)
            actions.append((job.key, "terminated"))
        else:
            batch.cancel_job(jobId=job.job_id, reason=reason)
            actions.append((job.key, "cancelled"))
    return actions


@dataclass(frozen=True)
class ResumePlan:
    """What resuming a run keeps, re-runs in part, and carries over from its first attempt."""

    keep: dict[str, str]
    """Keys -> IDs of the jobs kept whole (they succeeded)."""
    reruns: dict[str, list[int]]
    """Keys of arrays re-run for some children only -> those children's indices."""
    array_size: int | None
    """The run's size (of JobB/JobC), for the jobs submitted again."""
    parameters: dict[str, str]
    """JobE's parameters as the first attempt had them."""

    def describe(self) -> str:
        partial = "".join(
            f"; {k} for children {index_ranges(v)} only" for k, v in self.reruns.items()
        )
        return f"keeping {', '.join(self.keep) or 'nothing'}{partial}; re-submitting the rest"


def plan_resume(
    batch: BatchApi, run: Mapping[str, JobProgress], spec: PipelineSpec, *, failed_only: bool
) -> ResumePlan:
    """How to resume ``run``: from its first job that did not succeed, or, with
    ``failed_only``, re-running only the failed children of JobB and JobC first."""
    if failed_only:
        keep, reruns = failed_only_plan(batch, run, spec)
    else:
        keep, reruns = resume_plan(run, spec), {}
    sizes = [p.array_size for k, p in run.items() if spec.job(k).scales_with_input]
    return ResumePlan(
        keep=keep,
        reruns=reruns,
        array_size=next((size for size in sizes if size), None),
        parameters=dict(run["JobE"].parameters) if "JobE" in run else {},
    )


def failed_indices(batch: BatchApi, parent_id: str) -> list[int]:
    """Every failed child's index (all pages of ListJobs)."""
    indices: list[int] = []
    token: str | None = None
    while True:
        page_token: dict[str, Any] = {"nextToken": token} if token else {}
        page = batch.list_jobs(arrayJobId=parent_id, jobStatus="FAILED", **page_token)
        indices += [index for s in page["jobSummaryList"] if (index := _child_index(s)) is not None]
        token = page.get("nextToken")
        if not token:
            return sorted(set(indices))


def failed_only_plan(
    batch: BatchApi, run: Mapping[str, JobProgress], spec: PipelineSpec
) -> tuple[dict[str, str], dict[str, list[int]]]:
    """What ``resume --failed-only`` keeps and re-runs: jobs that succeeded are kept whole; an
    input-scaled array (JobB, JobC) with failed children is re-run for those children only;
    from the first job that is neither, everything is submitted again."""
    keep = resume_plan(run, spec)
    reruns: dict[str, list[int]] = {}
    for job in spec.jobs[len(keep) :]:
        progress = run.get(job.key)
        if progress is None or not job.scales_with_input or not progress.array_size:
            break
        failed = failed_indices(batch, progress.job_id)
        if not failed or len(failed) == progress.array_size:
            break
        reruns[job.key] = failed
    return keep, reruns


def resume_plan(run: Mapping[str, JobProgress], spec: PipelineSpec) -> dict[str, str]:
    """Keys -> IDs of the jobs a resume keeps: those before the first that did not succeed."""
    active = [p for p in run.values() if p.is_active]
    if active:
        states = ", ".join(f"{p.key} {p.status}" for p in active)
        raise RunStateError(f"the run is still active ({states}); wait for it or cancel it first")
    keep: dict[str, str] = {}
    for job in spec:
        progress = run.get(job.key)
        if progress is None or progress.status != "SUCCEEDED" or progress.has_failed:
            break
        keep[job.key] = progress.job_id
    if len(keep) == len(spec.jobs):
        raise RunStateError("every job of the run succeeded; there is nothing to resume")
    return keep
