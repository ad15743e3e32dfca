"""Why a run failed: the first failure, and the grouped failure report with log excerpts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pipeline.batch_facts import DEPENDENCY_FAILED
from pipeline.runs.progress import JobProgress, child_index

if TYPE_CHECKING:
    from mypy_boto3_logs import CloudWatchLogsClient

    from pipeline.runs.api import BatchApi, LogReader


@dataclass(frozen=True)
class Failure:
    """The first failure of a run, for a one-line report."""

    job_key: str
    job_id: str
    child_index: int | None
    status_reason: str | None
    exit_code: int | None
    log_stream: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.job_key,
            "jobId": self.job_id,
            "arrayIndex": self.child_index,
            "statusReason": self.status_reason,
            "exitCode": self.exit_code,
            "logStream": self.log_stream,
            "text": self.describe(),
        }

    @property
    def log_name(self) -> str:
        """How ``logs`` names the job that failed: ``JobB:3``, ``JobA``."""
        return self.job_key if self.child_index is None else f"{self.job_key}:{self.child_index}"

    def describe(self) -> str:
        where = self.job_key if self.child_index is None else f"{self.job_key}[{self.child_index}]"
        parts = [f"{where} failed ({self.job_id})"]
        if self.exit_code is not None:
            parts.append(f"exit code {self.exit_code}")
        if self.status_reason:
            parts.append(f"reason: {self.status_reason}")
        return "; ".join(parts)


def error_text(error: Exception) -> str:
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"{info.get('Code', 'Error')}: {info.get('Message', '')}".strip()
    return str(error)


def first_failure(batch: BatchApi, progress: Sequence[JobProgress]) -> Failure | None:
    """The earliest failed job in run order; for an array, its first failed child (two calls,
    however many children failed). A child is named by its index in the run, also when a
    ``resume --failed-only`` re-ran it in a job of its own."""
    for job in progress:
        if not job.has_failed:
            continue
        if job.array_size is None or not job.children.get("FAILED"):
            return Failure(
                job.key,
                job.job_id,
                job.run_index(None),
                job.status_reason,
                job.exit_code,
                job.log_stream,
            )
        page = batch.list_jobs(arrayJobId=job.job_id, jobStatus="FAILED", maxResults=1)
        summaries = page["jobSummaryList"]
        if not summaries:
            return Failure(job.key, job.job_id, None, job.status_reason, None, None)
        (child,) = batch.describe_jobs(jobs=[summaries[0]["jobId"]])["jobs"]
        detail = JobProgress.from_description(job.key, child)
        index = job.run_index(child_index(child))
        return Failure(
            job.key, detail.job_id, index, detail.status_reason, detail.exit_code, detail.log_stream
        )
    return None


REPORT_PAGE = 100
"""Failed children read per array job: one ListJobs page and one DescribeJobs call, however
many children failed; counts beyond the page come from the parent's statusSummary."""


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

    @property
    def log_name(self) -> str:
        """How ``logs`` names the group's example: ``JobB:3``, ``JobA``."""
        return f"{self.job_key}:{self.indices[0]}" if self.indices else self.job_key

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
    """(the run's index, progress) of a failed job's failed children, from the first page;
    the job itself for a standard job (with the index of the child it re-runs, if it does)."""
    if job.array_size is None or not job.children.get("FAILED"):
        return [(job.run_index(None), job)]
    page = batch.list_jobs(arrayJobId=job.job_id, jobStatus="FAILED", maxResults=REPORT_PAGE)
    ids = [s["jobId"] for s in page["jobSummaryList"]][:REPORT_PAGE]
    described = batch.describe_jobs(jobs=ids)["jobs"] if ids else []
    return [
        (job.run_index(child_index(d)), JobProgress.from_description(job.key, d)) for d in described
    ]


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


def cloudwatch_log_reader(logs: CloudWatchLogsClient, log_group: str, lines: int = 10) -> LogReader:
    """Read the last lines of a job's log stream from CloudWatch Logs (one call)."""

    def read(_job_id: str, log_stream: str | None) -> list[str]:
        if not log_stream:
            return []
        try:
            events = logs.get_log_events(
                logGroupName=log_group, logStreamName=log_stream, limit=lines, startFromHead=False
            )["events"]
        except ClientError as error:  # the report still helps without the excerpt
            return [f"(log {log_stream} unavailable: {error_text(error)})"]
        return [e["message"].rstrip() for e in events]

    return read
