"""pipeline/runs/engine.py: every command as one code path over a backend session. The session
holds the engine's Batch (tests/helpers/batch.py), where jobs run only when the test places
them and each job's dependencies decide what may run, and a log reader that records what it is
asked to read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from helpers.batch import EngineBatch, engine_batch
from pipeline import contract
from pipeline.document import PipelineDocument
from pipeline.errors import RunStateError, SpecError
from pipeline.runs import engine
from pipeline.runs.progress import JobProgress, SubmittedJob, SubmittedRun
from pipeline.runs.requests import RunInputs, run_config
from pipeline.spec import DEFAULT_SPEC

DOCUMENT = PipelineDocument(
    "ProdQueue",
    {j.key: j.definition_name for j in DEFAULT_SPEC},
    resources={"output_bucket": "bucket-out"},
)
KEYS = ["JobA", "JobB", "JobC", "JobD", "JobE"]


@dataclass
class Session:
    """The run engine's session (see :class:`pipeline.runs.engine.Session`) on the engine's
    Batch; every log reads "the last line"."""

    batch: Any
    settle: bool = False
    reads: list[str] = field(default_factory=list)

    def read_log(self, job_id: str, log_stream: str | None) -> list[str]:
        self.reads.append(job_id)
        return ["the last line"]

    def read_attempt(
        self, attempt: Any, *, cursor: Any = None, tail: int | None = None
    ) -> tuple[list[str], Any]:
        return [], cursor


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


@pytest.fixture
def session(aws: EngineBatch) -> Session:
    return Session(aws.batch)


def _started(session: Session, run_id: str = "r1", size: int = 4) -> SubmittedRun:
    config = run_config(array_size=size, run_id=run_id)
    return engine.start(session, DOCUMENT, config, run_id_given=True)


# --- before anything is submitted -----------------------------------------------------------


def test_a_run_is_planned_from_the_inputs_and_held_to_the_cost_guard() -> None:
    config = engine.plan_run(DOCUMENT, RunInputs(array_size=3, run_id="r1"))
    assert (config.run_id, config.array_size) == ("r1", 3)
    with pytest.raises(SpecError, match="above max_vcpu_hours 1;"):
        engine.plan_run(DOCUMENT, RunInputs(array_size=3), max_vcpu_hours=1)


def test_a_dry_run_without_a_queue_shows_requests_costs_and_steps_but_no_sizing() -> None:
    dry = engine.dry_run(DOCUMENT, run_config(array_size=3, run_id="r1"))
    assert [r["jobName"] for r in dry.requests] == KEYS
    assert [c.key for c in dry.costs] == KEYS
    assert (dry.capacity.description, dry.sizing) == ("no queue given", [])
    assert dry.steps.startswith("cpu pipeline.jobs.default_steps:digest_and_compress")


def test_a_source_bucket_other_than_the_output_bucket_is_refused_before_submitting(
    aws: EngineBatch, session: Session
) -> None:
    config = run_config(array_size=2, run_id="r1", source_bucket="s3://elsewhere")
    with pytest.raises(SpecError, match="use s3://bucket-out, or leave it out") as error:
        engine.start(session, DOCUMENT, config)
    assert error.value.field == "source_bucket"
    assert aws.parents() == []
    right = run_config(array_size=2, run_id="r2", source_bucket="s3://bucket-out")
    assert engine.start(session, DOCUMENT, right).run_id == "r2"


def test_a_run_id_chosen_twice_is_refused_a_generated_one_is_not_looked_up(
    aws: EngineBatch, session: Session
) -> None:
    _started(session, "r1")
    with pytest.raises(RunStateError, match="run r1 already has jobs in ProdQueue"):
        _started(session, "r1")
    assert len(aws.parents()) == 5
    # the same id, not chosen by the user (a resume's), is not checked
    config = run_config(array_size=4, run_id="r1")
    engine.start(session, DOCUMENT, config)
    assert len(aws.parents()) == 10


# --- submit and follow ----------------------------------------------------------------------


def test_a_run_that_succeeds_is_followed_to_its_end(aws: EngineBatch, session: Session) -> None:
    # GIVEN a run whose jobs wait to be placed
    aws.hold_new_jobs()
    run = _started(session)
    assert engine.submitted(run).as_json()["status"] == "SUBMITTED"
    polls: list[list[str]] = []

    def one_job_ends_per_poll(progress: list[JobProgress]) -> None:
        polls.append([p.status for p in progress])
        if len(polls) <= len(KEYS):
            aws.succeed(run.job_ids[KEYS[len(polls) - 1]])

    # WHEN it is followed, one job of the chain ending between two polls
    outcome = engine.follow(session, run, interval=0, on_poll=one_job_ends_per_poll)
    # THEN it is followed until its last job succeeded, and no log is read
    assert outcome.succeeded
    assert len(polls) == len(KEYS) + 1
    assert (outcome.failure, outcome.failures, session.reads) == (None, (), [])
    assert [p.status for p in outcome.progress] == ["SUCCEEDED"] * 5


def test_a_run_that_fails_comes_with_its_failure_report(aws: EngineBatch, session: Session) -> None:
    # GIVEN a run whose JobA exits 3 (so every job after it fails on its dependency)
    aws.inject("JobA=exit:3")
    run = _started(session)
    # WHEN it is followed
    outcome = engine.follow(session, run, interval=0)
    # THEN it failed at JobA, whose log's last line is in the report
    assert not outcome.succeeded
    assert outcome.status == "FAILED"
    assert outcome.failure is not None
    assert (outcome.failure.job_key, outcome.failure.exit_code) == ("JobA", 3)
    first, *after = outcome.failures
    assert (first.job_key, first.exit_code, first.log_tail) == ("JobA", 3, ("the last line",))
    # AND the jobs that never ran are reported without a log to read
    assert [(g.job_key, g.status_reason, g.log_tail) for g in after] == [
        (key, "Dependent Job failed", ()) for key in KEYS[1:]
    ]
    assert session.reads == [run.job_ids["JobA"]]
    as_json = outcome.as_json()
    assert as_json["failure"]["job"] == "JobA"
    assert as_json["failures"][0]["logTail"] == ["the last line"]
    assert as_json["local"] is None


# --- an existing run ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "overall", "failed"),
    [
        (dict.fromkeys(KEYS, "SUCCEEDED"), "SUCCEEDED", []),
        ({"JobA": "SUCCEEDED", "JobB": "RUNNING"}, "RUNNING", []),
        ({"JobA": "SUCCEEDED", "JobB": "FAILED"}, "FAILED", ["JobB", "JobC", "JobD", "JobE"]),
    ],
)
def test_a_runs_status_is_its_jobs_together(
    aws: EngineBatch,
    session: Session,
    states: dict[str, str],
    overall: str,
    failed: list[str],
) -> None:
    # GIVEN a run whose jobs were placed in turn, ending as ``states`` say (a job after one
    # that failed fails on its dependency)
    aws.hold_new_jobs()
    run = _started(session)
    for key, state in states.items():
        {"SUCCEEDED": aws.succeed, "RUNNING": aws.start, "FAILED": aws.fail}[state](
            run.job_ids[key]
        )
    # WHEN its status is asked for
    outcome = engine.status(session, DOCUMENT, "r1")
    # THEN it is its jobs' together
    assert outcome.status == overall
    assert outcome.run_id == "r1"
    assert [j.key for j in outcome.jobs] == KEYS
    # AND a failed run names its first failure and reports each, with the log's last line of
    # a job that ran
    assert [f.job_key for f in outcome.failures] == failed
    assert outcome.failure is None if not failed else outcome.failure.job_key == failed[0]
    assert [f.log_tail for f in outcome.failures] == [
        ("the last line",) if f.status_reason != "Dependent Job failed" else ()
        for f in outcome.failures
    ]
    # (one log per group: one of the failed job's children)
    assert [read.split(":")[0] for read in session.reads] == [run.job_ids[k] for k in failed[:1]]
    assert outcome.as_json()["progress"][0] == {
        "job": "JobA",
        "jobId": run.job_ids["JobA"],
        "status": states["JobA"],
        "statusReason": None,
        "arraySize": None,
        "children": {},
    }


def test_a_run_whose_chain_is_still_being_submitted_is_still_running(
    aws: EngineBatch, session: Session
) -> None:
    # GIVEN a run whose jobs succeed as soon as they are submitted
    seen: dict[str, str] = {}

    def look(job: SubmittedJob) -> None:
        if job.key == "JobD":
            seen["JobD"] = engine.status(session, DOCUMENT, "r1").status

    # WHEN its status is asked for once JobA..JobD succeeded, before JobE is submitted
    run = engine.start(session, DOCUMENT, run_config(array_size=4, run_id="r1"), on_submitted=look)
    # THEN it is still running (and, JobE submitted, it succeeded)
    assert seen == {"JobD": "RUNNING"}
    assert [aws.describe(run.job_ids[k])["status"] for k in KEYS[:4]] == ["SUCCEEDED"] * 4
    assert engine.status(session, DOCUMENT, "r1").status == "SUCCEEDED"


def test_cancelling_a_run_stops_its_jobs_saying_who_asked(
    aws: EngineBatch, session: Session
) -> None:
    # GIVEN a run whose JobA succeeded and whose JobB runs
    aws.hold_new_jobs()
    run = _started(session)
    aws.succeed(run.job_ids["JobA"])
    aws.start(run.job_ids["JobB"])
    stops = aws.record_stops()
    # WHEN it is cancelled
    stopped = engine.cancel(session, DOCUMENT, "r1")
    # THEN the running JobB is terminated and the jobs waiting are cancelled, saying who asked
    assert stopped == [
        ("JobB", "terminated"),
        ("JobC", "cancelled"),
        ("JobD", "cancelled"),
        ("JobE", "cancelled"),
    ]
    assert {reason for *_, reason in stops} == {"cancelled by user: run r1"}
    # AND nothing of the run runs on
    aws.run_at_once()
    assert aws.non_terminal() == []
    assert [aws.describe(run.job_ids[k])["status"] for k in KEYS] == ["SUCCEEDED"] + ["FAILED"] * 4


def test_runs_are_listed_newest_first(aws: EngineBatch, session: Session) -> None:
    # GIVEN two runs a second apart, the newer one's id sorting first
    _started(session, "older")
    aws.clock.advance(1)
    _started(session, "newer")
    # THEN they are listed newest first
    assert [r.run_id for r in engine.list_runs(session, DOCUMENT)] == ["newer", "older"]
    assert [r.run_id for r in engine.list_runs(session, DOCUMENT, limit=1)] == ["newer"]


def test_a_resume_keeps_the_runs_id_size_and_what_succeeded(
    aws: EngineBatch, session: Session
) -> None:
    # GIVEN a run of 3 with a recipient and an input prefix, whose JobA succeeded and JobB's
    # child 0 failed (so JobC's child 0 did, and JobD and JobE, on their dependencies)
    aws.hold_new_jobs()
    config = replace(
        run_config(array_size=3, run_id="r1", recipient="a@example.com"),
        environment={contract.INPUT_PREFIX: "in/"},
    )
    first = engine.start(session, DOCUMENT, config)
    aws.succeed(first.job_ids["JobA"])
    aws.fail_child(first.job_ids["JobB"], 0)
    aws.run_at_once()
    assert aws.non_terminal() == []
    # WHEN its resume is planned without a size
    resume = engine.plan_resume_run(session, DOCUMENT, "r1", RunInputs(), failed_only=False)
    # THEN it keeps JobA and the run's id, size, recipient and input prefix
    assert list(resume.plan.keep) == ["JobA"]
    assert (resume.config.run_id, resume.config.array_size) == ("r1", 3)
    assert resume.config.parameters["Recipient"] == "a@example.com"
    assert dict(resume.config.environment) == {contract.INPUT_PREFIX: "in/"}
    # AND a failed-only resume asks Batch for the failed children: child 0 of JobB and JobC
    failed_only = engine.plan_resume_run(session, DOCUMENT, "r1", RunInputs(), failed_only=True)
    assert (failed_only.plan.keep, failed_only.plan.reruns) == (
        {"JobA": first.job_ids["JobA"]},
        {"JobB": [0], "JobC": [0]},
    )
    # AND another run id, or a resume above the cost guard, is refused
    with pytest.raises(RunStateError, match="resume keeps the run's id"):
        engine.plan_resume_run(session, DOCUMENT, "r1", RunInputs(run_id="r2"), failed_only=False)
    with pytest.raises(SpecError, match="above max_vcpu_hours"):
        engine.plan_resume_run(
            session, DOCUMENT, "r1", RunInputs(), failed_only=False, max_vcpu_hours=1
        )
    # AND its submission keeps JobA, re-submitting the rest, JobB depending on the kept JobA
    run = engine.submit(session, DOCUMENT, resume.config, plan=resume.plan)
    assert [(j.key, j.reused) for j in run.jobs][:2] == [("JobA", True), ("JobB", False)]
    assert aws.describe(run.job_ids["JobB"])["dependsOn"] == [{"jobId": first.job_ids["JobA"]}]


def test_an_outcome_as_json() -> None:
    outcome = engine.RunOutcome(
        "r1",
        "RUNNING",
        (SubmittedJob("JobA", "a", reused=True),),
        (JobProgress("JobA", "a", "RUNNING", array_size=None),),
        local={"folder": "/tmp/x"},
    )
    assert outcome.as_json() == {
        "runId": "r1",
        "status": "RUNNING",
        "jobs": [{"job": "JobA", "jobId": "a", "reused": True}],
        "progress": [
            {
                "job": "JobA",
                "jobId": "a",
                "status": "RUNNING",
                "statusReason": None,
                "arraySize": None,
                "children": {},
            }
        ],
        "failure": None,
        "failures": [],
        "local": {"folder": "/tmp/x"},
        "busy": [],
    }
    assert not outcome.succeeded


def _resumed_once(aws: EngineBatch, session: Session, *faults: str) -> None:
    """Run r1 of 4 whose JobB children 1 and 3 failed, resumed with --failed-only, the
    re-run's first attempts failing where ``faults`` says (its child 1 is the run's 3)."""
    aws.inject("JobB:1=exit:2", "JobB:3=exit:2")
    engine.start(session, DOCUMENT, run_config(array_size=4, run_id="r1"))
    aws.engine.faults.clear()
    aws.inject(*faults)
    resume = engine.plan_resume_run(session, DOCUMENT, "r1", RunInputs(), failed_only=True)
    assert resume.plan.reruns == {"JobB": [1, 3], "JobC": [1, 3]}
    engine.submit(session, DOCUMENT, resume.config, plan=resume.plan)
    aws.engine.faults.clear()
    assert aws.non_terminal() == []


def test_a_second_failed_only_resume_reruns_the_runs_child_that_failed_again(
    aws: EngineBatch, session: Session
) -> None:
    # GIVEN a run of 4 resumed for its failed JobB children 1 and 3, whose re-run of child 3
    # (the re-run's child 1) failed again
    _resumed_once(aws, session, "JobB:1=exit:2")
    # WHEN it is resumed for its failed children again
    again = engine.plan_resume_run(session, DOCUMENT, "r1", RunInputs(), failed_only=True)
    # THEN the run's child 3 is re-run, in a run of 4 (not the re-run's child 1, of 2)
    assert again.plan.reruns == {"JobB": [3], "JobC": [3]}
    assert again.config.array_size == 4


def test_a_retry_of_the_rejected_after_a_failed_only_resume_keeps_the_runs_size(
    aws: EngineBatch, session: Session
) -> None:
    # GIVEN a run of 4 whose failed JobB children were re-run by a resume that succeeded
    _resumed_once(aws, session)
    # WHEN its rejected objects are retried
    retry = engine.plan_resume_run(
        session, DOCUMENT, "r1", RunInputs(), failed_only=False, rejected=True
    )
    # THEN JobB to JobE are submitted for the run's 4 shards (not the re-run's 2)
    assert retry.config.array_size == 4
