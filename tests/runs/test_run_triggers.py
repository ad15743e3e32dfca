"""pipeline/runs/triggers.py: what a trigger event asks for, and whether the starter starts,
skips or refuses its run. The Batch is the engine's (tests/helpers/batch.py), behind the
session the starter gets on AWS (:class:`pipeline.backends.aws.AwsSession`): a run's jobs stay
active where a test holds them, and succeed as they are submitted where it does not; the
waits go through an injected ``sleep``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from helpers.batch import EngineBatch, engine_batch
from pipeline import contract
from pipeline.backends.aws import AwsSession
from pipeline.document import PipelineDocument
from pipeline.runs import engine
from pipeline.runs.requests import run_config
from pipeline.runs.triggers import (
    DUPLICATE,
    REFUSED,
    SKIPPED,
    STARTED,
    Trigger,
    TriggerError,
    TriggerOutcome,
    start_triggered,
    trigger_from_event,
)
from pipeline.spec import DEFAULT_SPEC, STARTED_BY_TAG
from pipeline.trigger_events import SCHEDULE, UPLOAD, schedule_event, upload_event

DOCUMENT = PipelineDocument(
    "ProdQueue",
    {j.key: j.definition_name for j in DEFAULT_SPEC},
    spec=DEFAULT_SPEC.with_array_size(2),
    resources={"input_bucket": "bucket-a", "output_bucket": "bucket-out"},
)
NIGHTLY = schedule_event("Stack/Nightly", "x-1", "2026-11-26T02:00:00Z")


# --- the event ------------------------------------------------------------------------------


def test_a_schedules_event_is_a_scheduled_trigger() -> None:
    trigger = trigger_from_event(NIGHTLY, input_bucket="bucket-a")
    assert trigger == Trigger(
        SCHEDULE, "x-1", datetime(2026, 11, 26, 2, tzinfo=UTC), "schedule Stack/Nightly"
    )
    unnamed = trigger_from_event({**NIGHTLY, "schedule": ""}, input_bucket=None)
    assert unnamed.origin == "schedule (unnamed)"


def test_a_ready_marker_in_bucket_a_is_an_upload_trigger_for_its_prefix() -> None:
    event = upload_event("bucket-a", "incoming/day-1/_READY", "e-1", "2026-11-26T02:00:00+01:00")
    trigger = trigger_from_event(event, input_bucket="bucket-a")
    assert (trigger.kind, trigger.event_id, trigger.input_prefix) == (
        UPLOAD,
        "e-1",
        "incoming/day-1/",
    )
    assert trigger.origin == "s3://bucket-a/incoming/day-1/_READY"
    assert trigger.time == datetime(2026, 11, 26, 1, tzinfo=UTC)
    # any bucket, when the starter is not told BucketA's name
    assert trigger_from_event(event, input_bucket=None).input_prefix == "incoming/day-1/"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            upload_event("bucket-z", "in/_READY", "e-1", "2026-11-26T02:00:00Z"),
            r"s3://bucket-z/in/_READY is not in BucketA \(bucket-a\); only BucketA's ready markers",
        ),
        (
            upload_event("bucket-a", "in/data.csv", "e-1", "2026-11-26T02:00:00Z"),
            "s3://bucket-a/in/data.csv is not a ready marker; write <prefix>/_READY",
        ),
        (
            {"trigger": SCHEDULE, "scheduledTime": "2026-11-26T02:00:00Z"},
            "malformed trigger event \\(KeyError",
        ),
        ({**NIGHTLY, "scheduledTime": "yesterday"}, "malformed trigger event \\(ValueError"),
        ({"source": "aws.s3", "detail-type": "Object Deleted"}, "not a trigger event: expected"),
        ({}, "not a trigger event"),
    ],
)
def test_other_events_are_refused_saying_why(event: dict[str, Any], message: str) -> None:
    with pytest.raises(TriggerError, match=message):
        trigger_from_event(event, input_bucket="bucket-a")


def test_a_triggers_run_id_is_its_time_and_a_digest_of_the_event() -> None:
    trigger = trigger_from_event(NIGHTLY, input_bucket=None)
    assert re.fullmatch(r"20261126T020000-[0-9a-f]{6}", trigger.run_id)
    # the same event delivered again names the same run; another event, or kind, another
    assert trigger_from_event(NIGHTLY, input_bucket=None).run_id == trigger.run_id
    other = Trigger(SCHEDULE, "x-2", trigger.time, trigger.origin)
    upload = Trigger(UPLOAD, "x-1", trigger.time, trigger.origin)
    assert len({trigger.run_id, other.run_id, upload.run_id}) == 3


def test_an_outcome_as_json() -> None:
    trigger = Trigger(UPLOAD, "e-1", datetime(2026, 11, 26, tzinfo=UTC), "s3://b/in/_READY", "in/")
    assert TriggerOutcome(SKIPPED, "r1", trigger, "busy").as_json() == {
        "action": SKIPPED,
        "runId": "r1",
        "trigger": UPLOAD,
        "origin": "s3://b/in/_READY",
        "inputPrefix": "in/",
        "reason": "busy",
        "jobs": [],
        "size": None,
    }


# --- start, skip or refuse ------------------------------------------------------------------


class Notes(list[tuple[str, str]]):
    def __call__(self, subject: str, message: str) -> None:
        self.append((subject, message))


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


@pytest.fixture
def session(aws: EngineBatch) -> AwsSession:
    return AwsSession(aws.batch, DOCUMENT)


def _start(session: AwsSession, event: dict[str, Any] = NIGHTLY, **options: Any) -> Any:
    notes = Notes()
    trigger = trigger_from_event(event, input_bucket="bucket-a")
    outcome = start_triggered(
        session, DOCUMENT, trigger, notify=notes, sleep=lambda _: None, **options
    )
    return outcome, notes


def test_a_trigger_starts_its_run_tagged_with_what_started_it(
    aws: EngineBatch, session: AwsSession
) -> None:
    event = upload_event("bucket-a", "incoming/_READY", "e-1", "2026-11-26T02:00:00Z")
    outcome, notes = _start(session, event)
    assert outcome.action == STARTED
    assert [j.key for j in outcome.jobs] == ["JobA", "JobB", "JobC", "JobD", "JobE"]
    assert notes == []
    jobs = aws.jobs()
    assert [j.job_id for j in jobs if ":" not in j.job_id] == [j.job_id for j in outcome.jobs]
    for job in jobs:
        # (an array's children carry its tags: they are propagated)
        assert job.detail["tags"][STARTED_BY_TAG] == UPLOAD
        variables = {e["name"]: e["value"] for e in job.detail["container"]["environment"]}
        assert variables[contract.INPUT_PREFIX] == "incoming/"


def test_an_event_delivered_again_starts_nothing_and_says_nothing(
    aws: EngineBatch, session: AwsSession
) -> None:
    # GIVEN a trigger's run, still going
    aws.hold_new_jobs()
    _start(session)
    # WHEN the same event comes again THEN nothing more is submitted, and nothing published
    outcome, notes = _start(session)
    assert (outcome.action, outcome.reason) == (DUPLICATE, "this event's run was already started")
    assert notes == []
    assert len(aws.parents()) == 5
    # AND so once that run has ended
    aws.run_at_once()
    assert _start(session)[0].action == DUPLICATE
    assert len(aws.parents()) == 5


def test_a_trigger_while_a_run_is_active_is_skipped_and_published(
    aws: EngineBatch, session: AwsSession
) -> None:
    # GIVEN a run from the command line, still going
    aws.hold_new_jobs()
    engine.start(session, DOCUMENT, run_config(array_size=2, run_id="busy"))
    # WHEN the schedule fires THEN its run is skipped, naming the active one, and published
    outcome, notes = _start(session)
    assert outcome.action == SKIPPED
    assert outcome.reason.startswith("run busy (started by command line) is still active")
    ((subject, message),) = notes
    assert subject == "array-job pipeline: schedule run skipped"
    assert message.startswith(
        f"The schedule run {outcome.run_id} (schedule Stack/Nightly) was skipped: run busy"
    )
    assert len(aws.parents()) == 5
    # AND when runs may overlap, it starts
    assert _start(session, allow_overlap=True)[0].action == STARTED
    assert len(aws.parents()) == 10
    # AND once the runs have ended, the next schedule's run starts
    aws.run_at_once()
    assert aws.non_terminal() == []
    later = schedule_event("Stack/Nightly", "x-2", "2026-11-27T02:00:00Z")
    assert _start(session, later)[0].action == STARTED


def test_a_trigger_over_the_cost_guard_is_refused_and_published(
    aws: EngineBatch, session: AwsSession
) -> None:
    outcome, notes = _start(session, max_vcpu_hours=10)
    assert outcome.action == REFUSED
    assert "above the triggers' limit of 10" in outcome.reason
    ((subject, message),) = notes
    assert subject == "array-job pipeline: schedule run not started"
    assert "was not started: the run's worst case is" in message
    assert aws.parents() == []
