"""A run's logs: which job (or child) a user names, each of its attempts and where its log
is, and which object a long-running child is on (the runner names it in the log).

Batch says where each attempt's log is (``logStreamName``); the session reads it (CloudWatch
Logs on AWS, the run's folder on this machine) through an :class:`AttemptReader`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from pipeline import contract
from pipeline.batch_facts import DESCRIBE_JOBS_LIMIT, TERMINAL
from pipeline.errors import RunStateError, SpecError
from pipeline.runs.progress import (
    JobProgress,
    child_index,
    current_submissions,
    find_run_history,
)

if TYPE_CHECKING:
    from mypy_boto3_logs import CloudWatchLogsClient

    from pipeline.document import PipelineDocument
    from pipeline.runs.api import BatchApi

_TARGET = re.compile(r"^(\w+)(?::(\d+))?$")
BUSY_CHILDREN_LOOKED_AT = 10
"""Running children of one array read per look: one ListJobs page and one DescribeJobs call,
and at most this many log tails, however large the array."""
TAIL_LINES = 200


@dataclass(frozen=True)
class AttemptLog:
    """One attempt of a job (or array child), and where its log is."""

    job: str
    """The pipeline's key (``JobB``); Batch's ``jobName``."""
    job_id: str
    """The job's own ID (a child's is ``<parent>:<index>``)."""
    index: int | None
    attempt: int
    """From 1."""
    status: str
    """SUCCEEDED or FAILED for an ended attempt; the job's status for the current one."""
    exit_code: int | None = None
    reason: str | None = None
    log_stream: str | None = None
    current: bool = False
    """The attempt that has not ended (its log may still grow)."""
    run_index: int | None = None
    """The child's index in the run, when its job is a ``resume --failed-only`` re-run of
    some children (whose child 0, or the standard job itself, may be the run's child 3);
    None: ``index``. ``index`` and ``attempt`` stay Batch's, which say where the log is."""
    number: int | None = None
    """The attempt's number among the child's attempts in every job that ran it; None:
    ``attempt``."""

    @property
    def name(self) -> str:
        """``JobB:3``, or ``JobA``."""
        index = self.index if self.run_index is None else self.run_index
        return self.job if index is None else f"{self.job}:{index}"

    def heading(self) -> str:
        code = "" if self.exit_code is None else f", exit code {self.exit_code}"
        reason = f": {self.reason}" if self.reason else ""
        number = self.attempt if self.number is None else self.number
        return f"--- {self.name} attempt {number} ({self.status}{code}{reason}) ---"

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "jobId": self.job_id,
            "index": self.index if self.run_index is None else self.run_index,
            "attempt": self.attempt if self.number is None else self.number,
            "status": self.status,
            "exitCode": self.exit_code,
            "statusReason": self.reason,
            "logStream": self.log_stream,
        }


class AttemptReader(Protocol):
    """Reads an attempt's log: lines after ``cursor`` (None: from the start; or the last
    ``tail`` lines), and the cursor to read on from."""

    def __call__(
        self, attempt: AttemptLog, *, cursor: Any = None, tail: int | None = None
    ) -> tuple[list[str], Any]: ...


def attempts_of(description: Mapping[str, Any], key: str) -> list[AttemptLog]:
    """Each attempt of a described job, oldest first; the one running now last. An attempt
    listed without ``stoppedAt`` is the running one (the engine lists it; a job whose running
    attempt is not listed yet gets it from its ``container``)."""
    index = child_index(description)
    status = description["status"]
    running = status in ("STARTING", "RUNNING")
    found = []
    listed = description.get("attempts") or []
    for number, attempt in enumerate(listed, start=1):
        container = attempt.get("container") or {}
        code = container.get("exitCode")
        current = running and not attempt.get("stoppedAt")
        found.append(
            AttemptLog(
                key,
                description["jobId"],
                index,
                number,
                status if current else "SUCCEEDED" if code == 0 else "FAILED",
                code,
                attempt.get("statusReason") or container.get("reason"),
                container.get("logStreamName"),
                current=current,
            )
        )
    container = description.get("container") or {}
    if running and not any(a.current for a in found):
        found.append(
            AttemptLog(
                key,
                description["jobId"],
                index,
                len(listed) + 1,
                status,
                log_stream=container.get("logStreamName"),
                current=True,
            )
        )
    elif status in TERMINAL and not listed and description.get("startedAt"):
        found.append(
            AttemptLog(
                key,
                description["jobId"],
                index,
                1,
                status,
                container.get("exitCode"),
                description.get("statusReason"),
                container.get("logStreamName"),
            )
        )
    return found


@dataclass(frozen=True)
class LogTarget:
    """The job (or child) a ``logs`` command names, as the run has it."""

    key: str
    index: int | None
    job_ids: tuple[str, ...]
    """The Batch jobs that ran it, oldest first: the job (or its child of the newest whole
    submission), then each ``resume --failed-only`` re-run of that child."""

    @property
    def job_id(self) -> str:
        """The newest of them."""
        return self.job_ids[-1]


def log_target(batch: BatchApi, document: PipelineDocument, run_id: str, named: str) -> LogTarget:
    """The job ``named`` (``JobA``, ``JobB:3``) of run ``run_id``, checked (a job of the
    pipeline, of the run, an array child that exists). A child keeps its name across
    ``resume --failed-only``, which re-runs it in a job of its own (a standard job, or a
    smaller array): the target holds every job that ran it, so a hint the run printed
    before the resume still names it."""
    found = _TARGET.match(named)
    keys = [job.key for job in document.spec]
    if not found or found.group(1) not in keys:
        raise SpecError(
            f"{named!r} names no job of the pipeline; give one of {', '.join(keys)}, with "
            "':INDEX' for a child of an array (JobB:3)"
        )
    key, index = found.group(1), found.group(2)
    history = find_run_history(batch, document.queue, run_id, document.spec)
    if key not in history:
        raise RunStateError(f"run {run_id} has no {key}: it was never submitted")
    submissions = current_submissions(history[key])
    size = submissions[0].array_size
    if index is None and size:
        failed = failed_children(batch, submissions)
        hint = f"; failed: {', '.join(map(str, failed))}" if failed else ""
        raise SpecError(
            f"{key} is an array of {size:,} children; name one: {key}:INDEX (0 to {size - 1}){hint}"
        )
    if index is not None and not size:
        raise SpecError(f"{key} is not an array job; drop ':{index}'")
    if index is None:
        return LogTarget(key, None, (submissions[-1].job_id,))
    if size is not None and int(index) >= size:
        raise SpecError(f"{key} has children 0 to {size - 1} in this run; got {index}")
    return LogTarget(key, int(index), _child_job_ids(submissions, int(index)))


def _child_job_ids(submissions: Sequence[JobProgress], index: int) -> tuple[str, ...]:
    """The jobs that ran the run's child ``index``: the whole submission's child, then the
    re-runs of it (a re-run's child k is the run's ``index_map[k]``; a re-run of one child is
    a standard job)."""
    whole, *reruns = submissions
    found = [f"{whole.job_id}:{index}"]
    for rerun in reruns:
        mapped = rerun.index_map or ()
        if index in mapped:
            position = mapped.index(index)
            found.append(f"{rerun.job_id}:{position}" if rerun.array_size else rerun.job_id)
    return tuple(found)


def failed_children(
    batch: BatchApi, submissions: Sequence[JobProgress], limit: int = 20
) -> list[int]:
    """Indices of some children of an array job that failed and were not re-run since (one
    ListJobs page per submission with failed children), by the run's indices.
    ``submissions``: the job's :func:`current_submissions`."""
    failed: set[int] = set()
    for job in submissions:
        failed -= set(job.index_map or ())
        if job.array_size and job.children.get("FAILED"):
            page = batch.list_jobs(arrayJobId=job.job_id, jobStatus="FAILED", maxResults=limit)
            failed |= {
                i
                for s in page["jobSummaryList"]
                if (i := job.run_index(child_index(s))) is not None
            }
        elif not job.array_size and job.status == "FAILED":
            failed |= set(job.index_map or ())
    return sorted(failed)[:limit]


def target_attempts(batch: BatchApi, target: LogTarget) -> tuple[list[AttemptLog], bool]:
    """The target's attempts, of every job that ran it, oldest first and numbered on from
    one job to the next, and whether the newest has ended (one DescribeJobs call)."""
    ids = target.job_ids[-DESCRIBE_JOBS_LIMIT:]
    described = {d["jobId"]: d for d in batch.describe_jobs(jobs=list(ids))["jobs"]}
    if target.job_id not in described:
        raise RunStateError(f"no job {target.job_id}: Batch keeps ended jobs for about 7 days")
    attempts: list[AttemptLog] = []
    for job_id in ids:
        if job_id in described:
            for attempt in attempts_of(described[job_id], target.key):
                number = len(attempts) + 1
                attempts.append(replace(attempt, run_index=target.index, number=number))
    return attempts, described[target.job_id]["status"] in TERMINAL


# --- what a long-running child is on ------------------------------------------------------------


@dataclass(frozen=True)
class BusyChild:
    """A child that has been on one object a while, as its log says."""

    job: str
    index: int | None
    stage: str
    key: str
    since: float
    """When the step started on the object (epoch seconds)."""

    @property
    def name(self) -> str:
        return self.job if self.index is None else f"{self.job}:{self.index}"

    def describe(self, now: float) -> str:
        return f"{self.name} has been on {self.key!r} for {_duration(now - self.since)}"

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "index": self.index,
            "stage": self.stage,
            "objectKey": self.key,
            "since": self.since,
        }


def busy_children(
    batch: BatchApi,
    progress: Sequence[JobProgress],
    read: AttemptReader,
    *,
    keys: Sequence[str],
    now: float | None = None,
) -> list[BusyChild]:
    """Children of the jobs ``keys`` (those that run steps) that have been on one object for
    a minute or more, from the runner's lines in their logs: per array with running children
    one ListJobs page, one DescribeJobs call and at most :data:`BUSY_CHILDREN_LOOKED_AT` log
    tails."""
    now = time.time() if now is None else now
    found = []
    for job in progress:
        if job.key not in keys or not job.children.get("RUNNING"):
            continue
        page = batch.list_jobs(
            arrayJobId=job.job_id, jobStatus="RUNNING", maxResults=BUSY_CHILDREN_LOOKED_AT
        )
        ids = [s["jobId"] for s in page["jobSummaryList"]][:BUSY_CHILDREN_LOOKED_AT]
        for description in batch.describe_jobs(jobs=ids)["jobs"] if ids else []:
            started = (description.get("startedAt") or 0) / 1000
            if not started or now - started < contract.SLOW_OBJECT_AFTER_SECONDS:
                continue
            current = [a for a in attempts_of(description, job.key) if a.current]
            if not current:
                continue
            lines, _ = read(current[-1], tail=TAIL_LINES)
            on = contract.slow_object(lines)
            if on is not None:
                stage, key, since = on
                found.append(BusyChild(job.key, current[-1].index, stage, key, since))
    return found


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def cloudwatch_attempt_reader(logs: CloudWatchLogsClient, log_group: str) -> AttemptReader:
    """Reads attempts' logs from CloudWatch Logs, from the stream Batch reports for each (a
    stream not written yet reads as empty); the cursor is the stream's forward token."""

    def read(
        attempt: AttemptLog, *, cursor: Any = None, tail: int | None = None
    ) -> tuple[list[str], Any]:
        if not attempt.log_stream:
            return [], cursor
        stream = attempt.log_stream
        try:
            if tail is not None:
                events = logs.get_log_events(
                    logGroupName=log_group, logStreamName=stream, limit=tail, startFromHead=False
                )["events"]
                return [e["message"].rstrip("\n") for e in events], cursor
            lines: list[str] = []
            token = cursor
            while True:
                after: dict[str, Any] = {"nextToken": token} if token else {}
                page = logs.get_log_events(
                    logGroupName=log_group, logStreamName=stream, startFromHead=True, **after
                )
                lines += [e["message"].rstrip("\n") for e in page["events"]]
                if page.get("nextForwardToken") in (None, token):
                    return lines, token
                token = page["nextForwardToken"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return [], cursor
            raise

    return read
