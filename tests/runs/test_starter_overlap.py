"""The starter's overlap race, against the engine's Batch: however two triggers interleave, a
second run does not go on while one is active.

The starter's logic is :func:`pipeline.runs.triggers.start_triggered`, the Lambda handler's
(``pipeline.starter``) and ``run --local --on-upload``'s. Two starters at once are two calls on
one client: the second runs inside a botocore hook of the first, at the moment the test picks
(before the first submits anything, or after its last SubmitJob and before it looks for
rivals). What they share is what two Lambda invocations share, the service. ListJobs lag,
equal ``createdAt`` times and a refused CancelJob are hooks on that client too; jobs are held
RUNNABLE and stops take effect (``EngineBatch``). The starter's waits go through the ``sleep``
it is given: nothing here waits.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from helpers.batch import (
    EngineBatch,
    Sleeps,
    engine_batch,
    error_answer,
    lag_listings,
    stack_document,
)
from pipeline.backends.aws import AwsSession
from pipeline.batch_facts import TERMINAL
from pipeline.runs.triggers import (
    DUPLICATE,
    REFUSED,
    SKIPPED,
    STARTED,
    Trigger,
    TriggerOutcome,
    start_triggered,
    trigger_from_event,
)
from pipeline.spec import DEFAULT_SPEC, RUN_TAG
from pipeline.trigger_events import upload_event

BUCKET_A = "pipeline-input-bucket"
JOBS = [job.key for job in DEFAULT_SPEC]


def upload(prefix: str, event_id: str, time: str = "2026-11-26T02:00:00Z") -> Trigger:
    """The trigger of a ready marker under ``prefix``, as EventBridge delivers it."""
    event = upload_event(BUCKET_A, f"{prefix}_READY", event_id, time)
    return trigger_from_event(event, input_bucket=BUCKET_A)


class Starters:
    """Starters on one pipeline whose queue is moto's, and what they published."""

    def __init__(self, aws: EngineBatch) -> None:
        self.aws = aws
        self.document = stack_document(
            aws.queue_arn, aws.definition_arns, DEFAULT_SPEC.with_array_size(3)
        )
        self.session = AwsSession(aws.batch, self.document)
        self.published: list[tuple[str, str]] = []
        self.sleeps = Sleeps()
        self.sent: Counter[str] = Counter()
        """Stop requests sent, by ``<operation> <jobId>``."""
        self._refused: Callable[[str], bool] = lambda _job_id: False
        aws.hold_new_jobs()
        aws.intercept(self._answer)

    def start(self, trigger: Trigger) -> TriggerOutcome:
        return start_triggered(
            self.session,
            self.document,
            trigger,
            notify=lambda subject, message: self.published.append((subject, message)),
            sleep=self.sleeps,
        )

    # --- how two starters interleave -----------------------------------------------------------

    def meanwhile(
        self, event: str, start: Callable[[], None], when: Callable[..., bool] = lambda **_: True
    ) -> None:
        """Run ``start`` (another starter) once, the first time the client emits ``event``
        with ``when(**kwargs)`` true."""
        done: list[bool] = []

        def hook(**kwargs: Any) -> None:
            if not done and when(**kwargs):
                done.append(True)
                start()

        self.aws.batch.meta.events.register(event, hook)

    def before_first_submit(self, start: Callable[[], None]) -> None:
        """``start`` runs once the starter has checked for an active run and passed pre-flight,
        before it submits its first job."""
        self.meanwhile("before-call.batch.SubmitJob", start)

    def after_last_submit(self, start: Callable[[], None]) -> None:
        """``start`` runs once the starter has submitted its last job, before it looks for a
        run that started at the same time."""
        self.meanwhile(
            "after-call.batch.SubmitJob",
            start,
            when=lambda parsed, **_: parsed.get("jobName") == JOBS[-1],
        )

    # --- what the service does -----------------------------------------------------------------

    def listing_lag(self, hidden: int) -> None:
        """ListJobs lags ``hidden`` listings behind (see :func:`helpers.batch.lag_listings`)."""
        lag_listings(self.aws.batch, hidden)

    def same_created_at(self) -> None:
        """DescribeJobs reports one ``createdAt`` for every job: runs submitted within the same
        millisecond."""

        def same(parsed: dict[str, Any], **_: Any) -> None:
            for job in parsed.get("jobs") or []:
                job["createdAt"] = 1_795_000_000_000

        self.aws.batch.meta.events.register("after-call.batch.DescribeJobs", same)

    def refuse_stops(self, refused: Callable[[str], bool]) -> None:
        """CancelJob and TerminateJob are refused (403) for the job IDs ``refused`` names."""
        self._refused = refused

    def _answer(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation not in ("CancelJob", "TerminateJob"):
            return None
        job_id = json.loads(request.body)["jobId"]
        self.sent[f"{operation} {job_id}"] += 1
        if not self._refused(job_id):
            return None
        return error_answer(request.url, 403, "AccessDeniedException")

    # --- what moto holds, as the harness shows it -----------------------------------------------

    def jobs_of(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Job key -> the run's jobs of that key, oldest first."""
        return self.aws.run_jobs(run_id)

    def active(self) -> dict[str, dict[str, int]]:
        """Run id -> job key -> how many of the run's jobs of that key have not ended, for the
        runs with any such job: one chain going on is one of each."""
        found: dict[str, dict[str, int]] = {}
        for job in self.aws.parents():
            run_id = (job.detail.get("tags") or {}).get(RUN_TAG)
            if run_id and job.status not in TERMINAL:
                counts = found.setdefault(run_id, dict.fromkeys(JOBS, 0))
                counts[job.job_name] += 1
        return found


@pytest.fixture
def starters() -> Iterator[Starters]:
    with engine_batch() as aws:
        yield Starters(aws)


def _started(outcome: list[TriggerOutcome]) -> TriggerOutcome:
    (one,) = outcome
    return one


# --- two starters at once -------------------------------------------------------------------


def test_two_starters_at_once_leave_one_run_the_later_stops_its_own(starters: Starters) -> None:
    # GIVEN a second trigger whose starter runs while the first has checked for an active run
    # and not yet submitted: neither check can see the other run
    second: list[TriggerOutcome] = []
    starters.before_first_submit(lambda: second.append(starters.start(upload("b/", "e-2"))))
    # WHEN the first starter goes on
    first = starters.start(upload("a/", "e-1"))
    # THEN the second run, submitted first, goes on; the first stops all its own jobs and
    # publishes that it skipped its run, naming the other
    other = _started(second)
    assert (other.action, first.action) == (STARTED, SKIPPED)
    assert starters.active() == {other.run_id: dict.fromkeys(JOBS, 1)}
    assert {j["status"] for js in starters.jobs_of(first.run_id).values() for j in js} == {"FAILED"}
    ((subject, message),) = starters.published
    assert subject == "array-job pipeline: upload run skipped"
    assert other.run_id in message


def test_an_event_delivered_twice_at_once_runs_one_chain(starters: Starters) -> None:
    # GIVEN the same event delivered twice, the second delivery's starter running while the
    # first has passed the overlap check and pre-flight (so neither found the run's jobs)
    again: list[TriggerOutcome] = []
    starters.before_first_submit(lambda: again.append(starters.start(upload("a/", "e-1"))))
    # WHEN the first starter goes on and submits the same run
    first = starters.start(upload("a/", "e-1"))
    # THEN one chain of that run goes on: the one submitted second stops its own jobs and
    # reports the run a duplicate
    other = _started(again)
    assert first.run_id == other.run_id
    assert (other.action, first.action) == (STARTED, DUPLICATE)
    assert starters.active() == {first.run_id: dict.fromkeys(JOBS, 1)}
    (head_of_other, head_of_first) = starters.jobs_of(first.run_id)[JOBS[0]]
    assert head_of_other["jobId"] == other.jobs[0].job_id
    assert head_of_first["status"] == "FAILED"


def test_equal_submission_times_count_against_the_run_checking(starters: Starters) -> None:
    # GIVEN Batch gives every job the same createdAt, and a second trigger (a later event, so
    # a later run id) whose starter runs and starts its run while the first has checked for an
    # active run and not yet submitted
    starters.same_created_at()
    second: list[TriggerOutcome] = []
    starters.before_first_submit(
        lambda: second.append(starters.start(upload("b/", "e-2", "2026-11-26T02:00:05Z")))
    )
    # WHEN the first starter goes on (its run id sorts first)
    first = starters.start(upload("a/", "e-1", "2026-11-26T02:00:00Z"))
    assert first.run_id < _started(second).run_id
    # THEN the tie is not broken in its favour: the second run, which began without seeing
    # the first, goes on, and the first stands down
    assert (_started(second).action, first.action) == (STARTED, SKIPPED)
    assert starters.active() == {_started(second).run_id: dict.fromkeys(JOBS, 1)}


# --- ListJobs lag ---------------------------------------------------------------------------


def test_a_starter_waits_until_its_own_run_is_listed_before_judging(starters: Starters) -> None:
    # GIVEN ListJobs leaves a new job out of its first listing, and a second trigger whose
    # starter runs once the first has submitted its chain, before that chain was ever listed
    starters.listing_lag(hidden=1)
    second: list[TriggerOutcome] = []
    starters.after_last_submit(lambda: second.append(starters.start(upload("b/", "e-2"))))
    # WHEN the first starter goes on
    first = starters.start(upload("a/", "e-1"))
    # THEN the second starter's overlap check missed the first run, but after submitting it
    # listed again until its own run showed, saw the first run, earlier, and stood down
    other = _started(second)
    assert (first.action, other.action) == (STARTED, SKIPPED)
    assert other.reason is not None
    assert first.run_id in other.reason
    assert starters.active() == {first.run_id: dict.fromkeys(JOBS, 1)}
    assert starters.sleeps


def test_a_run_the_listing_never_shows_is_stopped_and_refused(starters: Starters) -> None:
    # GIVEN ListJobs lists no new job for longer than the starter looks
    starters.listing_lag(hidden=100)
    # WHEN a trigger fires
    outcome = starters.start(upload("a/", "e-1"))
    # THEN the starter cannot rule out a run started at the same time: it stops its own run
    # and publishes why
    assert outcome.action == REFUSED
    assert starters.active() == {}
    ((subject, message),) = starters.published
    assert subject == "array-job pipeline: upload run not started"
    assert "could not be ruled out" in message
    assert starters.sleeps == sorted(starters.sleeps)


# --- stop() failing -------------------------------------------------------------------------


def test_a_refused_stop_is_published_and_every_other_job_is_stopped(starters: Starters) -> None:
    # GIVEN two starters at once (the first must stand down), and stopping the first run's
    # JobA is refused
    first_trigger = upload("a/", "e-1")
    heads: set[str] = set()

    def first_runs_head(job_id: str) -> bool:
        if not heads:
            heads.update(j["jobId"] for j in starters.jobs_of(first_trigger.run_id)[JOBS[0]])
        return job_id in heads

    starters.refuse_stops(first_runs_head)
    second: list[TriggerOutcome] = []
    starters.before_first_submit(lambda: second.append(starters.start(upload("b/", "e-2"))))
    # WHEN the first starter goes on
    first = starters.start(first_trigger)
    # THEN it still stands down, stops every job it can, and publishes, in its reason, what it
    # could not stop and how to stop it
    assert first.action == SKIPPED
    jobs = starters.jobs_of(first.run_id)
    stops = [
        starters.sent[f"CancelJob {jobs[key][0]['jobId']}"]
        + starters.sent[f"TerminateJob {jobs[key][0]['jobId']}"]
        for key in JOBS
    ]
    assert stops == [1, 1, 1, 1, 1]
    ((_, message),) = starters.published
    assert "could not stop JobA (AccessDeniedException: injected)" in message
    assert f"python -m pipeline.submit cancel {first.run_id}" in message
    assert _started(second).run_id in message
