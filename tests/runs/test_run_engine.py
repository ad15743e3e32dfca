"""pipeline/runs/engine.py: every command as one code path over a backend session. The session
here holds an in-memory Batch (tests/helpers/memory_batch.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from helpers.memory_batch import Session
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


def _started(session: Session, run_id: str = "r1", size: int = 4) -> SubmittedRun:
    config = run_config(array_size=size, run_id=run_id)
    return engine.start(session, DOCUMENT, config, run_id_given=True)  # type: ignore[arg-type]


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


def test_a_source_bucket_other_than_the_output_bucket_is_refused_before_submitting() -> None:
    session = Session()
    config = run_config(array_size=2, run_id="r1", source_bucket="s3://elsewhere")
    with pytest.raises(SpecError, match="use s3://bucket-out, or leave it out") as error:
        engine.start(session, DOCUMENT, config)  # type: ignore[arg-type]
    assert error.value.field == "source_bucket"
    assert session.batch.jobs == {}
    right = run_config(array_size=2, run_id="r2", source_bucket="s3://bucket-out")
    assert engine.start(session, DOCUMENT, right).run_id == "r2"  # type: ignore[arg-type]


def test_a_run_id_chosen_twice_is_refused_a_generated_one_is_not_looked_up() -> None:
    session = Session()
    _started(session, "r1")
    with pytest.raises(RunStateError, match="run r1 already has jobs in ProdQueue"):
        _started(session, "r1")
    # the same id, not chosen by the user (a resume's), is not checked
    config = run_config(array_size=4, run_id="r1")
    engine.start(session, DOCUMENT, config)  # type: ignore[arg-type]
    assert len(session.batch.jobs) == 10


# --- submit and follow ----------------------------------------------------------------------


def test_a_run_that_succeeds_is_followed_to_its_end() -> None:
    session = Session()
    run = _started(session)
    assert engine.submitted(run).as_json()["status"] == "SUBMITTED"
    session.batch.set("r1", **dict.fromkeys(KEYS, "SUCCEEDED"))
    outcome = engine.follow(session, run, interval=0)  # type: ignore[arg-type]
    assert outcome.succeeded
    assert (outcome.failure, outcome.failures, session.reads) == (None, (), [])
    assert [p.status for p in outcome.progress] == ["SUCCEEDED"] * 5


def test_a_run_that_fails_comes_with_its_failure_report() -> None:
    session = Session()
    run = _started(session)
    session.batch.set("r1", JobA="FAILED")
    outcome = engine.follow(session, run, interval=0)  # type: ignore[arg-type]
    assert not outcome.succeeded
    assert outcome.status == "FAILED"
    assert outcome.failure is not None
    assert outcome.failure.job_key == "JobA"
    (group,) = outcome.failures
    assert (group.job_key, group.log_tail) == ("JobA", ("the last line",))
    as_json = outcome.as_json()
    assert as_json["failure"]["job"] == "JobA"
    assert as_json["failures"][0]["logTail"] == ["the last line"]
    assert as_json["local"] is None


# --- an existing run ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "overall"),
    [
        (dict.fromkeys(KEYS, "SUCCEEDED"), "SUCCEEDED"),
        ({"JobA": "SUCCEEDED", "JobB": "RUNNING"}, "RUNNING"),
        ({"JobA": "SUCCEEDED", "JobB": "FAILED"}, "FAILED"),
    ],
)
def test_a_runs_status_is_its_jobs_together(states: dict[str, str], overall: str) -> None:
    session = Session()
    _started(session)
    session.batch.set("r1", **states)
    outcome = engine.status(session, DOCUMENT, "r1")  # type: ignore[arg-type]
    assert outcome.status == overall
    assert outcome.run_id == "r1"
    assert [j.key for j in outcome.jobs] == KEYS
    # a failed run names its first failure and reports it, with its log's last line
    failed = [key for key, state in states.items() if state == "FAILED"]
    assert [f.job_key for f in outcome.failures] == failed
    assert outcome.failure is None if not failed else outcome.failure.job_key == failed[0]
    assert all(f.log_tail == ("the last line",) for f in outcome.failures)
    assert outcome.as_json()["progress"][0] == {
        "job": "JobA",
        "jobId": outcome.jobs[0].job_id,
        "status": states["JobA"],
        "statusReason": None,
        "arraySize": None,
        "children": {},
    }


def test_a_run_missing_its_last_jobs_is_still_running() -> None:
    session = Session()
    _started(session)
    for job_id in [j for j in session.batch.jobs if "JobE" in j]:
        del session.batch.jobs[job_id]
    session.batch.set("r1", **dict.fromkeys(KEYS, "SUCCEEDED"))
    assert engine.status(session, DOCUMENT, "r1").status == "RUNNING"  # type: ignore[arg-type]


def test_cancelling_a_run_stops_its_jobs_saying_who_asked() -> None:
    session = Session()
    _started(session)
    session.batch.set("r1", JobA="SUCCEEDED", JobB="RUNNING")
    stopped = engine.cancel(session, DOCUMENT, "r1")  # type: ignore[arg-type]
    assert stopped == [
        ("JobB", "terminated"),
        ("JobC", "cancelled"),
        ("JobD", "cancelled"),
        ("JobE", "cancelled"),
    ]
    assert {reason for *_, reason in session.batch.stops} == {"cancelled by user: run r1"}


def test_runs_are_listed_newest_first() -> None:
    session = Session()
    _started(session, "r1")
    _started(session, "r2")
    assert [r.run_id for r in engine.list_runs(session, DOCUMENT)] == ["r2", "r1"]  # type: ignore[arg-type]
    assert [r.run_id for r in engine.list_runs(session, DOCUMENT, limit=1)] == ["r2"]  # type: ignore[arg-type]


def test_a_resume_keeps_the_runs_id_size_and_what_succeeded() -> None:
    # GIVEN a run of 3 with a recipient and an input prefix, whose JobA succeeded and JobB failed
    session = Session()
    config = replace(
        run_config(array_size=3, run_id="r1", recipient="a@example.com"),
        environment={contract.INPUT_PREFIX: "in/"},
    )
    engine.start(session, DOCUMENT, config)  # type: ignore[arg-type]
    session.batch.set(
        "r1", JobA="SUCCEEDED", JobB="FAILED", JobC="FAILED", JobD="FAILED", JobE="FAILED"
    )
    # WHEN its resume is planned without a size
    resume = engine.plan_resume_run(session, DOCUMENT, "r1", RunInputs(), failed_only=False)  # type: ignore[arg-type]
    # THEN it keeps JobA and the run's id, size, recipient and input prefix
    assert list(resume.plan.keep) == ["JobA"]
    assert (resume.config.run_id, resume.config.array_size) == ("r1", 3)
    assert resume.config.parameters["Recipient"] == "a@example.com"
    assert dict(resume.config.environment) == {contract.INPUT_PREFIX: "in/"}
    # AND a failed-only resume asks Batch for the failed children (none listed: whole jobs)
    failed_only = engine.plan_resume_run(session, DOCUMENT, "r1", RunInputs(), failed_only=True)  # type: ignore[arg-type]
    assert (failed_only.plan.keep, failed_only.plan.reruns) == (
        {"JobA": resume.plan.keep["JobA"]},
        {},
    )
    # AND another run id, or a resume above the cost guard, is refused
    with pytest.raises(RunStateError, match="resume keeps the run's id"):
        engine.plan_resume_run(session, DOCUMENT, "r1", RunInputs(run_id="r2"), failed_only=False)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="above max_vcpu_hours"):
        engine.plan_resume_run(
            session,  # type: ignore[arg-type]
            DOCUMENT,
            "r1",
            RunInputs(),
            failed_only=False,
            max_vcpu_hours=1,
        )
    # AND its submission keeps JobA, re-submitting the rest
    run = engine.submit(session, DOCUMENT, resume.config, plan=resume.plan)  # type: ignore[arg-type]
    assert [(j.key, j.reused) for j in run.jobs][:2] == [("JobA", True), ("JobB", False)]


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
