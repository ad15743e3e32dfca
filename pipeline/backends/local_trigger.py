"""A local run started as the deployed triggers start one: the event a ready marker's upload
or the schedule would send, handed to the starter's own engine code
(:func:`pipeline.runs.triggers.start_triggered`), which starts, skips or refuses the run and
publishes why to the pipeline's topic."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline import contract
from pipeline.backends.aws import AwsSession
from pipeline.document import PipelineDocument
from pipeline.errors import RunStateError
from pipeline.runs.progress import SubmittedJob, SubmittedRun


@dataclass(frozen=True)
class LocalTrigger:
    kind: str
    """``upload`` or ``schedule``."""
    trigger: Any
    """The starter's view of the event (:class:`pipeline.runs.triggers.Trigger`)."""
    marker: str = ""
    """The ready marker's key, for an upload."""


def local_trigger(document: PipelineDocument, *, on_upload: str | None, seed: str) -> LocalTrigger:
    """The event the deployed trigger would hand the starter: a ready marker's S3 event under
    ``on_upload``, else the schedule's. Its time is now, so the run id it gives is made once
    and kept (the backend makes it before the run, to name the run's folder)."""
    from pipeline.runs.triggers import trigger_from_event
    from pipeline.trigger_events import schedule_event, upload_event

    now = datetime.now(UTC).isoformat(timespec="seconds")
    bucket = document.resources["input_bucket"]
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, seed))
    if on_upload is not None:
        marker = f"{on_upload}{contract.READY_MARKER}"
        event = upload_event(bucket, marker, event_id, now)
        return LocalTrigger("upload", trigger_from_event(event, input_bucket=bucket), marker)
    return LocalTrigger(
        "schedule", trigger_from_event(schedule_event("local", event_id, now), input_bucket=bucket)
    )


def fire_trigger(
    session: AwsSession,
    trigger: LocalTrigger,
    *,
    clients: Mapping[str, Any],
    max_vcpu_hours: float | None,
    on_progress: Callable[[str], None],
    on_submitted: Callable[[SubmittedJob], None] | None = None,
) -> SubmittedRun:
    """What the deployed trigger does with ``trigger`` on the session's services: writes the
    ready marker (an upload), hands the event to the starter's code and says what it did; a
    run it did not start is a :class:`RunStateError` with its reason."""
    from pipeline.runs.triggers import STARTED, start_triggered

    document = session.document
    if trigger.kind == "upload":
        clients["s3"].put_object(
            Bucket=document.resources["input_bucket"], Key=trigger.marker, Body=b""
        )

    def notify(subject: str, message: str) -> None:
        clients["sns"].publish(
            TopicArn=document.resources["notification_topic"], Subject=subject, Message=message
        )
        on_progress(f"notification published: {subject}: {message.strip()}")

    outcome = start_triggered(
        session, document, trigger.trigger, notify=notify, max_vcpu_hours=max_vcpu_hours
    )
    listing = (
        f", listing {trigger.trigger.input_prefix or 'the whole bucket'}"
        if trigger.kind == "upload"
        else ""
    )
    on_progress(
        f"{trigger.kind} trigger ({trigger.trigger.origin}): {outcome.action.lower()} run "
        f"{outcome.run_id}{listing}{outcome.sized}"
    )
    if outcome.action != STARTED:
        raise RunStateError(f"the {trigger.kind} trigger started no run: {outcome.reason}")
    for job in outcome.jobs:
        if on_submitted:
            on_submitted(job)
    return SubmittedRun(outcome.run_id, outcome.jobs)
