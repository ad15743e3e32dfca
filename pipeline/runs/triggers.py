"""Runs that start themselves: what a trigger event asks for, and whether to start, skip or
refuse the run.

Two triggers start runs with no one at a keyboard (see ``ArrayJobPipeline``'s ``run_schedule``
and ``run_on_upload``):

- an EventBridge Scheduler schedule, whose input is
  :func:`pipeline.trigger_events.schedule_event`'s shape;
- an upload: S3 sends BucketA's "Object Created" events to EventBridge, and a rule passes on
  those of a ready marker (``_READY``): one run per marker, listing only the
  marker's prefix, however many objects were uploaded before it.

Both reach :func:`start_triggered`, from the starter function on AWS and from
``run --local --on-upload/--on-schedule`` on this machine. It is the command line's own path:
:func:`~pipeline.runs.engine.plan_run` (inputs and the cost guard),
:func:`~pipeline.runs.engine.preflight` and :func:`~pipeline.runs.engine.submit` (the chain,
its tags and its lost-response reconciliation), so a triggered run is an ordinary run that
``status``, ``--watch``, ``cancel``, ``resume`` and ``report`` know. What it does not start is
published to the topic with the reason.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pipeline.batch_facts import TERMINAL
from pipeline.contract import READY_MARKER, marker_prefix
from pipeline.document import PipelineDocument
from pipeline.errors import ChainError, PipelineError, RunStateError, ServiceError, SpecError
from pipeline.runs.autosize import SizeChoice
from pipeline.runs.chain import StopError, stop
from pipeline.runs.engine import Session, plan_run, preflight, sized_to_input, submit
from pipeline.runs.preflight import TRIGGER_GUARD, check_cost
from pipeline.runs.progress import (
    RunSummary,
    SubmittedJob,
    SubmittedRun,
    describe_jobs,
    find_jobs_by_name,
    list_runs,
)
from pipeline.runs.requests import RunInputs
from pipeline.spec import RUN_TAG, STARTED_BY_TAG
from pipeline.trigger_events import SCHEDULE, UPLOAD

Notify = Callable[[str, str], None]
"""Publishes (subject, message) to the pipeline's topic."""


class TriggerError(SpecError):
    """An event the starter does not start runs for; the message says which it expects."""


@dataclass(frozen=True)
class Trigger:
    """What one trigger event asks for."""

    kind: str
    """:data:`SCHEDULE` or :data:`UPLOAD`."""
    event_id: str
    """Unique per event: EventBridge's event id, or the schedule's execution id."""
    time: datetime
    origin: str
    """What fired, for messages: ``s3://bucket/prefix/_READY`` or the schedule's name."""
    input_prefix: str | None = None
    """An upload's marker prefix: the run lists only BucketA's objects under it."""

    @property
    def run_id(self) -> str:
        """Made from the event, so an event delivered twice (EventBridge delivers at least
        once) names the same run and starts it once; sortable like the command line's."""
        digest = hashlib.sha256(f"{self.kind}:{self.event_id}".encode()).hexdigest()[:6]
        return f"{self.time:%Y%m%dT%H%M%S}-{digest}"


def trigger_from_event(event: Mapping[str, Any], *, input_bucket: str | None) -> Trigger:
    """The trigger an event stands for; :class:`TriggerError` for any other event."""
    try:
        if event.get("trigger") == SCHEDULE:
            return Trigger(
                SCHEDULE,
                str(event["executionId"]),
                _time(str(event["scheduledTime"])),
                f"schedule {event.get('schedule') or '(unnamed)'}",
            )
        if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
            bucket = str(event["detail"]["bucket"]["name"])
            key = str(event["detail"]["object"]["key"])
            if input_bucket is not None and bucket != input_bucket:
                raise TriggerError(
                    f"s3://{bucket}/{key} is not in BucketA ({input_bucket}); only BucketA's "
                    "ready markers start runs"
                )
            prefix = marker_prefix(key)
            if prefix is None:
                raise TriggerError(
                    f"s3://{bucket}/{key} is not a ready marker; write <prefix>/{READY_MARKER} "
                    "after the inputs under <prefix>/ to start a run"
                )
            return Trigger(
                UPLOAD, str(event["id"]), _time(str(event["time"])), f"s3://{bucket}/{key}", prefix
            )
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, TriggerError):
            raise
        raise TriggerError(f"malformed trigger event ({type(error).__name__}: {error})") from None
    raise TriggerError(
        "not a trigger event: expected the pipeline schedule's input or an S3 Object Created "
        "event from EventBridge"
    )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


STARTED = "STARTED"
SKIPPED = "SKIPPED"
REFUSED = "REFUSED"
DUPLICATE = "DUPLICATE"


@dataclass(frozen=True)
class TriggerOutcome:
    """What :func:`start_triggered` did."""

    action: str
    """STARTED; SKIPPED (a run was active, or started at the same time); REFUSED (inputs, cost
    guard, pre-flight, a failed submission, or a run ListJobs never listed); DUPLICATE (this
    event's run exists, or another delivery of the event submitted it at the same time). What
    was submitted and not STARTED is stopped, and ``reason`` names any job that could not be."""
    run_id: str
    trigger: Trigger
    reason: str | None = None
    jobs: tuple[SubmittedJob, ...] = ()
    size: SizeChoice | None = None
    """The started run's array size, and why."""

    @property
    def sized(self) -> str:
        """``; array size 3: ...`` for a started run, for a line about it."""
        return f"; {self.size.describe()}" if self.size is not None else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "runId": self.run_id,
            "trigger": self.trigger.kind,
            "origin": self.trigger.origin,
            "inputPrefix": self.trigger.input_prefix,
            "reason": self.reason,
            "jobs": [{"job": j.key, "jobId": j.job_id} for j in self.jobs],
            "size": self.size.as_json() if self.size is not None else None,
        }


def start_triggered(
    session: Session,
    document: PipelineDocument,
    trigger: Trigger,
    *,
    notify: Notify,
    allow_overlap: bool = False,
    max_vcpu_hours: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TriggerOutcome:
    """Start the run ``trigger`` asks for with the pipeline's defaults, or say why not.

    In order: the inputs and the cost guard (:func:`plan_run`); an event seen before (its run
    exists: nothing to do); overlap (unless ``allow_overlap``, a run still active means this
    one is skipped); pre-flight; the chain. A skip or a refusal is published with ``notify``.

    Two triggers can race past those checks, and both submit; so once its chain is in, the
    starter looks again (see :func:`_stand_down`) and stops its own jobs if another chain of
    the same run (the event delivered twice at once: DUPLICATE) or another active run
    (SKIPPED) was submitted no later than its own. ``sleep`` waits between those listings. A
    stand-down is published too; a job that cannot be stopped is named, with how to stop it.
    """
    run_id = trigger.run_id
    what = f"{trigger.kind} run {run_id} ({trigger.origin})"

    def refuse(action: str, reason: str) -> TriggerOutcome:
        subject = "skipped" if action == SKIPPED else "not started"
        notify(
            f"array-job pipeline: {trigger.kind} run {subject}"[:100],
            f"The {what} was {subject}: {reason}\n",
        )
        return TriggerOutcome(action, run_id, trigger, reason)

    try:
        inputs = RunInputs(run_id=run_id, input_prefix=trigger.input_prefix)
        # Sized to the input, as a run of the command line given no size: its prefix is
        # listed here (the starter's role may list BucketA, nothing more of it).
        inputs, _ = sized_to_input(session.input_lister(), document, inputs)
        config = plan_run(document, inputs)
        check_cost(config.spec, max_vcpu_hours, guard=TRIGGER_GUARD)
    except (SpecError, ServiceError) as error:
        return refuse(REFUSED, str(error))
    config = replace(config, tags={STARTED_BY_TAG: trigger.kind})
    runs = list_runs(session.batch, document.queue, document.spec)
    if any(r.run_id == run_id for r in runs):
        return TriggerOutcome(DUPLICATE, run_id, trigger, "this event's run was already started")
    active = [r for r in runs if r.is_active]
    if active and not allow_overlap:
        return refuse(SKIPPED, _overlap_reason(active[0]))
    try:
        preflight(session, document, config, run_id_given=True)
    except RunStateError:
        return TriggerOutcome(DUPLICATE, run_id, trigger, "this event's run was already started")
    except (SpecError, PipelineError) as error:
        return refuse(REFUSED, str(error))
    try:
        run = submit(session, document, config)
    except ChainError as error:
        return refuse(REFUSED, str(error))
    stand_down = _stand_down(session, document, run, allow_overlap=allow_overlap, sleep=sleep)
    if stand_down is None:
        return TriggerOutcome(STARTED, run_id, trigger, None, run.jobs, config.size)
    action, reason = stand_down
    try:
        progress = describe_jobs(session.batch, run.job_ids)
        stop(session.batch, progress, f"run {run_id}: {reason}")
    except StopError as error:
        reason = (
            f"{reason}; stopping this run's jobs failed: {error}; stop them with "
            f"`python -m pipeline.submit cancel {run_id} --stack STACK`"
        )
    else:
        reason = f"{reason}; this run's jobs were stopped"
    return refuse(action, reason)


def _overlap_reason(active: RunSummary) -> str:
    return (
        f"run {active.run_id} (started by {active.started_by}) is still active, and this "
        "pipeline does not overlap runs (allow_overlapping_runs=False); follow it with "
        f"`python -m pipeline.submit status {active.run_id} --stack STACK`"
    )


LISTINGS = 5
"""How many times, at most, a starter lists the queue after submitting, waiting for ListJobs
to list its own run (it may not list a new job at once)."""


def _stand_down(
    session: Session,
    document: PipelineDocument,
    run: SubmittedRun,
    *,
    allow_overlap: bool,
    sleep: Callable[[float], None],
) -> tuple[str, str] | None:
    """Why the run just submitted must stop, as (action, reason), or None if it goes on.

    The queue is listed until ListJobs lists this run's first job: from then on it lists every
    job submitted before that one, so a run this one could overlap is not missed. Then another
    chain of this run still going (the same event, delivered twice at once) is a DUPLICATE,
    and, unless runs may overlap, another active run is SKIPPED, if submitted no later than
    this one. A tie in submission time counts against this run: the other starter may have
    looked before this run was listed, and gone on. A run never listed within
    :data:`LISTINGS` listings is REFUSED: a run started at the same time cannot be ruled out.
    """
    batch, queue, spec = session.batch, document.queue, document.spec
    head_key = spec.jobs[0].key
    own_head = run.job_ids[head_key]
    for listing in range(LISTINGS):
        if listing:
            sleep(min(2.0**listing, 20.0))
        heads = find_jobs_by_name(batch, queue, head_key, (RUN_TAG, run.run_id))
        own = next((h for h in heads if h["jobId"] == own_head), None)
        if own is None:
            continue
        submitted_at = int(own.get("createdAt") or 0)
        copies = [
            h
            for h in heads
            if h["jobId"] != own_head
            and h["status"] not in TERMINAL
            and int(h.get("createdAt") or 0) <= submitted_at
        ]
        if copies:
            return DUPLICATE, (
                f"this event was delivered twice at once, and the other delivery submitted "
                f"the same run (its {head_key} is {copies[0]['jobId']}), which goes on"
            )
        if allow_overlap:
            return None
        rivals = [
            r
            for r in list_runs(batch, queue, spec)
            if r.is_active and r.run_id != run.run_id and r.created_at <= submitted_at
        ]
        if not rivals:
            return None
        earlier = min(rivals, key=lambda r: (r.created_at, r.run_id))
        reason = _overlap_reason(earlier)
        if earlier.created_at == submitted_at:
            reason += (
                "; the two were submitted in the same millisecond, so which came first cannot "
                "be told: if neither is active now, start this run again"
            )
        return SKIPPED, reason
    return REFUSED, (
        f"ListJobs did not list this run's jobs in {LISTINGS} listings, so a run started at the "
        "same time could not be ruled out"
    )
