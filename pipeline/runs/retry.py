"""Plan ``resume RUN_ID --rejected``: the current steps run again on the run's rejected objects
only, and JobD and JobE bring the run up to date.

JobA is kept (the run's listing and shards stay what they were); JobB and JobC are submitted
again for every shard, with the retry's token (``contract.RETRY_REJECTED``): each child redoes
the objects a step rejected in its shard and keeps the rest (a shard with none ends at once),
then JobD checks the run and JobE writes its summary, rejects, aggregate and notification
anew. Objects JobA itself rejected (empty, too large, a folder marker) are not the steps' to
redo and stay rejected.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from pipeline.errors import RunStateError
from pipeline.runs.progress import JobProgress
from pipeline.runs.resume import ResumePlan, run_size
from pipeline.spec import RUN_SETTINGS, PipelineSpec


def retry_token(now: datetime | None = None) -> str:
    """A retry's own token, sortable and unique: ``20261125T183000-3fa2``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def plan_rejected(
    run_id: str,
    run: Mapping[str, JobProgress],
    spec: PipelineSpec,
    *,
    history: Mapping[str, Sequence[JobProgress]] | None = None,
) -> ResumePlan:
    """What ``resume --rejected`` keeps (the first job) and submits again (the rest, whole);
    refused, naming what to do first, while the run is active, when its first job did not
    succeed, or when a child of a stage failed (its objects were never done). ``history``
    (see :func:`pipeline.runs.resume.plan_resume`) gives the run's size after a
    ``--failed-only`` resume."""
    active = [p for p in run.values() if p.is_active]
    if active:
        states = ", ".join(f"{p.key} {p.status}" for p in active)
        raise RunStateError(f"the run is still active ({states}); wait for it or cancel it first")
    first = spec.jobs[0].key
    listed = run.get(first)
    if listed is None or listed.status != "SUCCEEDED":
        raise RunStateError(
            f"run {run_id} has no rejected objects to retry: its {first} did not list the "
            f"inputs; resume it with `resume {run_id}`"
        )
    for job in spec.jobs:
        progress = run.get(job.key)
        if job.scales_with_input and (progress is None or progress.has_failed):
            raise RunStateError(
                f"run {run_id}'s {job.key} did not finish every shard; re-run it first with "
                f"`resume {run_id} --failed-only`, then retry the rejected objects"
            )
    last = spec.jobs[-1].key
    return ResumePlan(
        keep={first: listed.job_id},
        reruns={},
        array_size=run_size(history or {key: [job] for key, job in run.items()}, spec),
        parameters=dict(run[last].parameters) if last in run else {},
        environment={k: v for k, v in listed.environment.items() if k in RUN_SETTINGS},
    )
