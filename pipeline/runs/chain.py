"""Submit the chain (each job ID feeding the next ``dependsOn``), safely retried, and stop it.

If a SubmitJob fails for good part-way, the jobs already submitted are stopped, so a failed
chain leaves no orphaned jobs; a request sent again after its answer was lost leaves one job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, ReadTimeoutError

from pipeline.document import PipelineDocument
from pipeline.errors import ChainError, ServiceError
from pipeline.runs.failures import error_text
from pipeline.runs.progress import (
    JobProgress,
    SubmittedJob,
    SubmittedRun,
    describe_jobs,
    find_jobs_by_name,
)
from pipeline.runs.requests import RunConfig, build_request
from pipeline.spec import SUBMISSION_TAG

if TYPE_CHECKING:
    from pipeline.runs.api import BatchApi, JobDetailTypeDef


def submit_pipeline(
    batch: BatchApi,
    document: PipelineDocument,
    config: RunConfig,
    *,
    reuse: Mapping[str, str] | None = None,
    reruns: Mapping[str, Sequence[int]] | None = None,
    on_submitted: Callable[[SubmittedJob], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SubmittedRun:
    """Submit the spec's jobs in order, each job ID feeding the next ``dependsOn``.

    ``reuse`` maps keys of jobs that already succeeded (a resumed run) to their IDs; they are
    not submitted again and later jobs depend on them. ``reruns`` maps keys of array jobs to
    re-run for some children only to those children's indices (see ``build_request``). If a
    SubmitJob fails for good, every job this call submitted is cancelled (or terminated, if it
    started), and so is any job the failed request made although its answer was lost;
    :class:`ChainError` says which, and names any job AWS refused to stop. ``sleep`` waits
    between the looks for a job whose answer was lost (see :func:`_submit_once`).
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
            request = build_request(job, document, config, ids, reruns=reruns)
            try:
                job_id = _submit_once(batch, request, document.queue, sleep)
            except _RequestFailedError as failure:
                submitted = [j for j in jobs if not j.reused]
                made = [SubmittedJob(job.key, made_id) for made_id in failure.made]
                raise _chain_error(
                    batch, config.run_id, job.key, failure.reason, [*submitted, *made]
                ) from failure
            ids[job.key] = job_id
            submitted_job = SubmittedJob(job.key, job_id)
            jobs.append(submitted_job)
            if on_submitted:
                on_submitted(submitted_job)
    return SubmittedRun(config.run_id, tuple(jobs))


def _chain_error(
    batch: BatchApi, run_id: str, failed_key: str, reason: str, submitted: Sequence[SubmittedJob]
) -> ChainError:
    """Stop ``submitted`` and say so, in one line, after the request for ``failed_key``
    failed for good."""
    why = f"run {run_id}: SubmitJob for {failed_key} failed"
    keys = {j.job_id: j.key for j in submitted}
    try:
        # Described by ID: the failed request's own jobs share its key.
        progress = describe_jobs(batch, {job_id: job_id for job_id in keys}) if keys else []
        stopped = stop(batch, [replace(p, key=keys[p.job_id]) for p in progress], why)
    except StopError as error:
        what = (
            f"stopping the jobs already submitted: {error}; stop the rest with "
            f"`python -m pipeline.submit cancel {run_id}`"
        )
    else:
        listed = ", ".join(f"{key} {action}" for key, action in stopped) or "none submitted"
        what = f"the jobs already submitted were stopped: {listed}"
    return ChainError(
        f"SubmitJob for {failed_key} failed: {reason}; {what}",
        failed_job=failed_key,
        cancelled=[j.job_id for j in submitted],
    )


class _RequestFailedError(Exception):
    """A SubmitJob request failed for good. ``made`` are the IDs of jobs it made nonetheless
    (its answer was lost), which are stopped with the rest of the chain."""

    def __init__(self, reason: str, made: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.made = tuple(made)


_AMBIGUOUS_EXCEPTIONS = (ReadTimeoutError, ConnectionClosedError)
"""The request was sent and the answer lost: the service may have accepted it. (A connect
error or timeout means it never arrived, and a plain retry is safe.)"""
RECONCILE_ATTEMPTS = 5
"""How many times one SubmitJob request is sent, at most, before the chain gives up."""
LISTINGS_PER_LOST_ANSWER = 2
"""How many ListJobs listings look for the job of a request whose answer was lost, a backoff
apart, before the request is sent again: ListJobs may not list a new job at once."""


def _backoff(attempt: int) -> float:
    return min(2.0**attempt, 20.0)


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
    """SubmitJob, made safe to retry; the ID of the one job the request leaves.

    botocore retries throttling (standard/adaptive mode) as usual. A failure after which the
    service may already have accepted the job (read timeout, connection reset, a 5xx) is not
    retried blindly, which could start a second copy. The job this request made is looked for
    by a submission tag unique to it (the run tag alone would also find the jobs of an earlier
    attempt of a resumed run), in up to :data:`LISTINGS_PER_LOST_ANSWER` listings; if one is
    found it is used, else the request is sent again, :data:`RECONCILE_ATTEMPTS` times in all.

    A request sent again can still make a second job, when ListJobs had not listed the first
    yet. So once a job of the request is known after a lost answer, the request's jobs are
    listed until the listing shows that job, and every other job of the request (made by an
    answer that was lost) is cancelled: one is left. Should ListJobs not list it within
    :data:`RECONCILE_ATTEMPTS` listings, a second copy cannot be ruled out and the request
    fails, with the job it made to stop. A job whose answer was lost and that ListJobs never
    lists cannot be found, and so cannot be stopped; it depends on the chain's earlier jobs,
    which are stopped, unless it is the chain's first.

    Raises :class:`_RequestFailedError`.
    """
    token = str(uuid.uuid4())
    request = {**request, "tags": {**request.get("tags", {}), SUBMISSION_TAG: token}}
    name = str(request["jobName"])

    def made() -> list[JobDetailTypeDef]:
        return find_jobs_by_name(batch, queue, name, (SUBMISSION_TAG, token))

    answer_lost = False
    for attempt in range(1, RECONCILE_ATTEMPTS + 1):
        try:
            job_id = str(batch.submit_job(**request)["jobId"])
        except (ClientError, BotoCoreError) as error:
            if not _is_ambiguous(error):
                found = [j["jobId"] for j in made()] if answer_lost else []
                raise _RequestFailedError(error_text(error), found) from error
            answer_lost = True
            for listing in range(LISTINGS_PER_LOST_ANSWER):
                if listing:
                    sleep(_backoff(attempt))
                found_jobs = made()
                if found_jobs:
                    newest = max(found_jobs, key=lambda j: (j.get("createdAt") or 0, j["jobId"]))
                    return _only(batch, name, newest["jobId"], found_jobs)
            if attempt == RECONCILE_ATTEMPTS:
                raise _RequestFailedError(error_text(error)) from error
            continue
        if not answer_lost:
            return job_id
        return _confirmed(batch, name, job_id, made, sleep)
    raise AssertionError("unreachable")


def _confirmed(
    batch: BatchApi,
    name: str,
    job_id: str,
    made: Callable[[], list[JobDetailTypeDef]],
    sleep: Callable[[float], None],
) -> str:
    """``job_id``, made by a request sent again after a lost answer, once ListJobs lists it
    with every other job of the request; those are stopped."""
    for listing in range(RECONCILE_ATTEMPTS):
        if listing:
            sleep(_backoff(listing))
        found = made()
        if any(j["jobId"] == job_id for j in found):
            return _only(batch, name, job_id, found)
    raise _RequestFailedError(
        f"an answer was lost and ListJobs did not list the job the request sent again made "
        f"({job_id}) in {RECONCILE_ATTEMPTS} listings, so a second copy cannot be ruled out",
        [job_id],
    )


def _only(batch: BatchApi, name: str, keep: str, found: Sequence[JobDetailTypeDef]) -> str:
    """``keep``, once every other job in ``found`` (the same request's) is stopped. The newest
    is kept: a run's newest job of each key is the one ``status`` and ``resume`` read."""
    twins = [JobProgress.from_description(name, j) for j in found if j["jobId"] != keep]
    try:
        stop(batch, twins, f"a copy of job {keep}, made by a SubmitJob whose answer was lost")
    except StopError as error:
        raise _RequestFailedError(
            f"a copy of job {keep} made by a lost answer: {error}", [j["jobId"] for j in found]
        ) from None
    return keep


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


class StopError(ServiceError):
    """AWS refused to stop some jobs; every other one was stopped. ``stopped`` lists (job key,
    action) pairs as :func:`stop` returns them, ``refused`` (job key, error) pairs."""

    def __init__(
        self, message: str, *, stopped: list[tuple[str, str]], refused: list[tuple[str, str]]
    ) -> None:
        super().__init__(message)
        self.stopped = stopped
        self.refused = refused


def stop(batch: BatchApi, progress: Sequence[JobProgress], reason: str) -> list[tuple[str, str]]:
    """Cancel the jobs that have not started and terminate those that have (CancelJob leaves
    STARTING and RUNNING jobs running). Returns (job key, "cancelled"|"terminated") pairs.

    A job AWS refuses to stop keeps no other from being stopped: each is tried, then
    :class:`StopError` names, in one line, the ones that were not and the ones that were."""
    actions: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    for job in progress:
        if not job.is_active:
            continue
        started = job.status in ("STARTING", "RUNNING") or any(
            job.children.get(s, 0) for s in ("STARTING", "RUNNING")
        )
        try:
            if started:
                batch.terminate_job(jobId=job.job_id, reason=reason)
            else:
                batch.cancel_job(jobId=job.job_id, reason=reason)
        except (ClientError, BotoCoreError) as error:
            refused.append((job.key, error_text(error)))
            continue
        actions.append((job.key, "terminated" if started else "cancelled"))
    if refused:
        stopped = ", ".join(f"{key} {action}" for key, action in actions) or "none"
        raise StopError(
            "could not stop "
            + ", ".join(f"{key} ({why})" for key, why in refused)
            + f"; stopped: {stopped}",
            stopped=actions,
            refused=refused,
        )
    return actions
