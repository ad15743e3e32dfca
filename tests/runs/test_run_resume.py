"""pipeline/runs/resume.py: what a resume keeps, re-runs in part and carries over, for runs that
ended on the engine's Batch (:func:`helpers.batch.engine_batch`): each run is the chain as the
command submits it, its jobs run at once and failed where the engine's fault plan says
(``JobB:3=exit:2``), so which children failed, and which never ran because of it, are Batch's
own answer. ListJobs pages are made small where paging is the point
(:func:`helpers.batch.small_pages`); a listing that has not caught up yet is a botocore hook."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from helpers.batch import EngineBatch, engine_batch, small_pages
from helpers.engine_steps import sent, submit
from pipeline import contract
from pipeline.document import PipelineDocument
from pipeline.errors import RunStateError
from pipeline.runs.chain import submit_pipeline
from pipeline.runs.progress import JobProgress, find_run
from pipeline.runs.requests import RunConfig, run_config
from pipeline.runs.resume import ResumePlan, failed_indices, plan_resume, resume_plan
from pipeline.spec import DEFAULT_SPEC

SPEC = DEFAULT_SPEC.with_array_size(10)


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _submitted(aws: EngineBatch, *faults: str, config: RunConfig | None = None) -> str:
    """The chain (arrays of 10 unless ``config`` says), its first attempts that ``faults``
    names failing (the definitions have no retries); its run ID. Its jobs run at once unless
    the test holds them."""
    aws.inject(*faults)
    config = config or run_config(array_size=10)
    document = PipelineDocument(aws.queue_arn, aws.definition_arns, spec=SPEC)
    return submit_pipeline(aws.reader, document, config).run_id


def _read(aws: EngineBatch, run_id: str) -> dict[str, JobProgress]:
    """The run as the command reads it back."""
    return find_run(aws.reader, aws.queue_arn, run_id, SPEC)


def _ended_run(
    aws: EngineBatch, *faults: str, config: RunConfig | None = None
) -> dict[str, JobProgress]:
    """A run of the chain whose jobs ran at once, ``faults`` failing (see :func:`_submitted`)."""
    return _read(aws, _submitted(aws, *faults, config=config))


def _ids(run: dict[str, JobProgress], *keys: str) -> dict[str, str]:
    return {key: run[key].job_id for key in keys}


# --- what a resume keeps --------------------------------------------------------------------


def test_a_resume_keeps_the_jobs_before_the_first_that_did_not_succeed(aws: EngineBatch) -> None:
    # GIVEN a run whose JobC child 4 failed (so JobD and JobE failed on it)
    run = _ended_run(aws, "JobC:4=exit:2")
    assert [p.status for p in run.values()] == ["SUCCEEDED"] * 2 + ["FAILED"] * 3
    # THEN a resume keeps JobA and JobB
    assert resume_plan(run, SPEC) == _ids(run, "JobA", "JobB")


def test_a_job_that_succeeded_with_a_failed_child_is_not_kept() -> None:
    # (Batch fails an array parent with a failed child; the run engine does not rely on it)
    run = {
        "JobA": JobProgress("JobA", "id-JobA", "SUCCEEDED"),
        "JobB": JobProgress("JobB", "id-JobB", "SUCCEEDED", array_size=10, children={"FAILED": 2}),
        "JobC": JobProgress("JobC", "id-JobC", "FAILED", array_size=10),
    }
    assert resume_plan(run, SPEC) == {"JobA": "id-JobA"}


def test_a_run_still_active_or_all_succeeded_cannot_be_resumed(aws: EngineBatch) -> None:
    # GIVEN a run whose JobA succeeded and whose JobB children run (an array parent is PENDING
    # until its children end), and a run that succeeded
    done = _ended_run(aws)
    aws.hold_new_jobs()
    run_id = _submitted(aws)
    aws.succeed(aws.run_job(run_id, "JobA"))
    aws.start(aws.run_job(run_id, "JobB"))
    active = _read(aws, run_id)
    # THEN neither can be resumed, and the message says why
    pending = "JobB PENDING, JobC PENDING, JobD PENDING, JobE PENDING"
    with pytest.raises(RunStateError, match=rf"still active \({pending}\)"):
        resume_plan(active, SPEC)
    with pytest.raises(RunStateError, match="every job of the run succeeded"):
        resume_plan(done, SPEC)


def test_failed_children_are_read_from_every_page_once_each_in_order(aws: EngineBatch) -> None:
    # GIVEN an array of 10 whose children 2, 4, 7 and 9 failed, listed two a page, each page
    # newest first (ListJobs promises no order)
    aws.hold_new_jobs()
    parent = submit(aws, "JobB", size=10)
    for index in range(10):
        if index in (2, 4, 7, 9):
            aws.fail_child(parent, index)
        else:
            aws.succeed(f"{parent}:{index}")
    small_pages(aws.batch, 2)

    def newest_first(parsed: dict[str, Any], **_: Any) -> None:
        parsed["jobSummaryList"] = parsed.get("jobSummaryList", [])[::-1]

    aws.batch.meta.events.register("after-call.batch.ListJobs", newest_first)
    listings = sent(aws.batch, "ListJobs")
    # THEN every page is read, and the indices come back once each, in order
    assert failed_indices(aws.batch, parent) == [2, 4, 7, 9]
    assert len(listings) == 2


def test_failed_only_reruns_the_failed_children_of_b_and_c_then_the_rest(
    aws: EngineBatch,
) -> None:
    # GIVEN a run whose JobB children 3 and 7 failed (so JobC's 3 and 7 never ran)
    run = _ended_run(aws, "JobB:3=exit:2", "JobB:7=exit:2")
    # WHEN a failed-only resume is planned
    plan = plan_resume(aws.batch, run, SPEC, failed_only=True)
    # THEN JobA is kept, JobB and JobC re-run for children 3 and 7, the rest whole
    assert plan.keep == _ids(run, "JobA")
    assert plan.reruns == {"JobB": [3, 7], "JobC": [3, 7]}
    assert plan.array_size == 10
    assert plan.describe() == (
        "keeping JobA; JobB for children 3, 7 only; JobC for children 3, 7 only; "
        "re-submitting the rest"
    )


def test_an_array_whose_children_all_failed_is_run_whole(aws: EngineBatch) -> None:
    run = _ended_run(aws, *(f"JobB:{i}=exit:2" for i in range(10)))
    plan = plan_resume(aws.batch, run, SPEC, failed_only=True)
    assert (plan.keep, plan.reruns) == (_ids(run, "JobA"), {})


def test_an_array_with_no_failed_child_listed_ends_the_partial_reruns(aws: EngineBatch) -> None:
    # GIVEN a run whose JobB child 1 failed (and so JobC's), where ListJobs does not list
    # JobC's children yet (a listing catches up after the job changes)
    run = _ended_run(aws, "JobB:1=exit:2")
    lagging = f"{run['JobC'].job_id}:"

    def not_yet(parsed: dict[str, Any], **_: Any) -> None:
        summaries = parsed.get("jobSummaryList", [])
        parsed["jobSummaryList"] = [s for s in summaries if not s["jobId"].startswith(lagging)]

    aws.batch.meta.events.register("after-call.batch.ListJobs", not_yet)
    # THEN JobB re-runs its failed child, and JobC runs whole
    plan = plan_resume(aws.batch, run, SPEC, failed_only=True)
    assert plan.reruns == {"JobB": [1]}


def test_a_plain_resume_reruns_everything_from_the_first_job_that_did_not_succeed(
    aws: EngineBatch,
) -> None:
    run = _ended_run(aws, "JobB:1=exit:2")
    listings = sent(aws.batch, "ListJobs")
    plan = plan_resume(aws.batch, run, SPEC, failed_only=False)
    assert (plan.keep, plan.reruns) == (_ids(run, "JobA"), {})
    assert plan.describe() == "keeping JobA; re-submitting the rest"
    assert listings == []  # no child is looked at


def test_a_resume_carries_the_runs_size_parameters_and_settings_over(aws: EngineBatch) -> None:
    # GIVEN a run of 6 with an input prefix and a recipient, whose JobA failed (the chain sets
    # the run's ID and size in every job's environment too)
    config = replace(
        run_config(array_size=6, recipient="a@b.io"),
        environment={contract.INPUT_PREFIX: "in/"},
    )
    run = _ended_run(aws, "JobA=exit:2", config=config)
    plan = plan_resume(aws.batch, run, SPEC, failed_only=False)
    # THEN the run's size, JobE's parameters, and of the first job's environment the run's
    # settings only
    assert plan == ResumePlan(
        keep={},
        reruns={},
        array_size=6,
        parameters=aws.describe(run["JobE"].job_id)["parameters"],
        environment={contract.INPUT_PREFIX: "in/"},
    )
    assert plan.parameters["Recipient"] == "a@b.io"
    assert plan.describe() == "keeping nothing; re-submitting the rest"


def test_a_run_without_jobe_or_sizes_carries_nothing_over(aws: EngineBatch) -> None:
    # GIVEN a run of which only JobA was submitted, and failed
    aws.hold_new_jobs()
    aws.fail(submit(aws, "JobA", run_id="r1"))
    run = _read(aws, "r1")
    assert list(run) == ["JobA"]
    plan = plan_resume(aws.batch, run, SPEC, failed_only=False)
    assert (plan.array_size, plan.parameters, plan.environment) == (None, {}, {})
