"""Plan a resume: which jobs a run keeps, which children it re-runs, what it carries over."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import RunStateError
from pipeline.runs.failures import index_ranges
from pipeline.runs.progress import JobProgress, child_index, current_submissions
from pipeline.spec import RUN_SETTINGS, PipelineSpec

if TYPE_CHECKING:
    from pipeline.runs.api import BatchApi


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
    environment: dict[str, str]
    """The run's settings (``RUN_SETTINGS``: input prefix, object size limit) as its first
    job had them, so a resume lists and validates the same inputs."""

    def describe(self) -> str:
        partial = "".join(
            f"; {k} for children {index_ranges(v)} only" for k, v in self.reruns.items()
        )
        return f"keeping {', '.join(self.keep) or 'nothing'}{partial}; re-submitting the rest"


def plan_resume(
    batch: BatchApi,
    run: Mapping[str, JobProgress],
    spec: PipelineSpec,
    *,
    failed_only: bool,
    from_start: bool = False,
    history: Mapping[str, Sequence[JobProgress]] | None = None,
) -> ResumePlan:
    """How to resume ``run`` (its newest job of each key): from its first job that did not
    succeed, or, with ``failed_only``, re-running only the failed children of JobB and JobC
    first; with ``from_start`` (what its jobs wrote is gone), every job again. ``history``:
    every job of each key, oldest first (see :func:`pipeline.runs.progress.find_run_history`),
    for a run resumed with ``failed_only`` before, whose newest JobB may re-run a few
    children only; without it, the newest jobs are taken as the whole."""
    history = history or {key: [progress] for key, progress in run.items()}
    keep: dict[str, str]
    reruns: dict[str, list[int]]
    if from_start:
        keep, reruns = {}, {}
    elif failed_only:
        keep, reruns = failed_only_plan(batch, run, spec, history=history)
    else:
        keep, reruns = resume_plan(run, spec), {}
    return ResumePlan(
        keep=keep,
        reruns=reruns,
        array_size=run_size(history, spec),
        parameters=dict(run["JobE"].parameters) if "JobE" in run else {},
        environment=_settings(next(iter(run.values()))),
    )


def run_size(history: Mapping[str, Sequence[JobProgress]], spec: PipelineSpec) -> int | None:
    """The run's size (of JobB/JobC): their newest whole submission's, not that of a
    ``--failed-only`` re-run of some children."""
    sizes = [
        current_submissions(jobs)[0].array_size
        for key, jobs in history.items()
        if jobs and spec.job(key).scales_with_input
    ]
    return next((size for size in sizes if size), None)


def _settings(job: JobProgress) -> dict[str, str]:
    return {k: v for k, v in job.environment.items() if k in RUN_SETTINGS}


def failed_indices(batch: BatchApi, parent_id: str) -> list[int]:
    """Every failed child's index (all pages of ListJobs)."""
    indices: list[int] = []
    token: str | None = None
    while True:
        page_token: dict[str, Any] = {"nextToken": token} if token else {}
        page = batch.list_jobs(arrayJobId=parent_id, jobStatus="FAILED", **page_token)
        indices += [index for s in page["jobSummaryList"] if (index := child_index(s)) is not None]
        token = page.get("nextToken")
        if not token:
            return sorted(set(indices))


def run_failed_indices(batch: BatchApi, submissions: Sequence[JobProgress]) -> list[int]:
    """The run's indices of an array's children that failed and were not re-run since (all
    pages of ListJobs per submission with a failure). ``submissions``: the job's
    :func:`pipeline.runs.progress.current_submissions`; a re-run's child k is the run's
    ``index_map[k]``, and a re-run of one child is a standard job."""
    failed: set[int] = set()
    for job in submissions:
        failed -= set(job.index_map or ())
        if job.array_size and job.has_failed:
            failed |= {
                i for k in failed_indices(batch, job.job_id) if (i := job.run_index(k)) is not None
            }
        elif not job.array_size and job.status == "FAILED":
            failed |= set(job.index_map or ())
    return sorted(failed)


def failed_only_plan(
    batch: BatchApi,
    run: Mapping[str, JobProgress],
    spec: PipelineSpec,
    *,
    history: Mapping[str, Sequence[JobProgress]] | None = None,
) -> tuple[dict[str, str], dict[str, list[int]]]:
    """What ``resume --failed-only`` keeps and re-runs: jobs that succeeded are kept whole; an
    input-scaled array (JobB, JobC) with failed children is re-run for those children only,
    by their index in the run (also when an earlier resume re-ran them); from the first job
    that is neither, everything is submitted again."""
    history = history or {key: [progress] for key, progress in run.items()}
    keep = resume_plan(run, spec)
    reruns: dict[str, list[int]] = {}
    for job in spec.jobs[len(keep) :]:
        jobs = history.get(job.key)
        if not jobs or not job.scales_with_input:
            break
        submissions = current_submissions(jobs)
        size = submissions[0].array_size
        if not size:
            break
        failed = run_failed_indices(batch, submissions)
        if not failed or len(failed) == size:
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
