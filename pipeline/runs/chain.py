"""Submit the chain (each job ID feeding the next ``dependsOn``), safely retried, and stop it.

If a SubmitJob fails for good part-way, the jobs already submitted are stopped, so a failed
chain leaves no orphaned jobs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, ReadTimeoutError

from pipeline.document import PipelineDocument
from pipeline.errors import ChainError
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
    from pipeline.runs.api import BatchApi


def submit_pipeline(
    batch: BatchApi,
    document: PipelineDocument,
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
            request = build_request(job, document, config, ids, reruns=reruns)
            try:
                job_id = _submit_once(batch, request, document.queue)
            except (ClientError, BotoCoreError) as error:
                submitted = [j for j in jobs if not j.reused]
                stopped = _cancel_submitted(batch, submitted, config.run_id, job.key)
                what = ", ".join(f"{key} {action}" for key, action in stopped) or "none submitted"
                raise ChainError(
                    f"SubmitJob for {job.key} failed: {error_text(error)}; the jobs already "
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
