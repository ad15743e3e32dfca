"""pipeline/runs/resume.py: what a resume keeps, re-runs in part and carries over. The Batch
here is a small stand-in with boto3's method names and shapes."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import contract
from pipeline.errors import RunStateError
from pipeline.runs.progress import JobProgress
from pipeline.runs.resume import ResumePlan, failed_indices, plan_resume, resume_plan
from pipeline.spec import DEFAULT_SPEC

SPEC = DEFAULT_SPEC.with_array_size(10)


class FailedChildren:
    """ListJobs of an array's failed children, ``page`` summaries a page."""

    def __init__(self, failed: dict[str, list[int]], page: int = 2) -> None:
        self.failed = failed
        self.page = page

    def list_jobs(self, **request: Any) -> dict[str, Any]:
        assert request["jobStatus"] == "FAILED"
        indices = self.failed.get(request["arrayJobId"], [])
        start = int(request.get("nextToken", 0))
        summaries = [{"jobId": f"{request['arrayJobId']}:{i}"} for i in indices]
        page: dict[str, Any] = {"jobSummaryList": summaries[start : start + self.page]}
        if start + self.page < len(summaries):
            page["nextToken"] = str(start + self.page)
        return page


def _run(**states: str) -> dict[str, JobProgress]:
    """The run's jobs in these states; JobB and JobC arrays of 10 whose failed children (if
    FAILED) are counted."""
    run = {}
    for key, status in states.items():
        array = SPEC.job(key).array_size
        children = {"FAILED": 1} if status == "FAILED" and array else {}
        run[key] = JobProgress(key, f"id-{key}", status, array_size=array, children=children)
    return run


# --- what a resume keeps --------------------------------------------------------------------


def test_a_resume_keeps_the_jobs_before_the_first_that_did_not_succeed() -> None:
    run = _run(JobA="SUCCEEDED", JobB="SUCCEEDED", JobC="FAILED", JobD="FAILED", JobE="FAILED")
    assert resume_plan(run, SPEC) == {"JobA": "id-JobA", "JobB": "id-JobB"}


def test_a_job_that_succeeded_with_a_failed_child_is_not_kept() -> None:
    run = _run(JobA="SUCCEEDED", JobB="SUCCEEDED", JobC="FAILED")
    run["JobB"] = JobProgress("JobB", "id-JobB", "SUCCEEDED", array_size=10, children={"FAILED": 2})
    assert resume_plan(run, SPEC) == {"JobA": "id-JobA"}


def test_a_run_still_active_or_all_succeeded_cannot_be_resumed() -> None:
    active = _run(JobA="SUCCEEDED", JobB="RUNNING", JobC="PENDING")
    with pytest.raises(RunStateError, match=r"still active \(JobB RUNNING, JobC PENDING\)"):
        resume_plan(active, SPEC)
    done = _run(**dict.fromkeys(("JobA", "JobB", "JobC", "JobD", "JobE"), "SUCCEEDED"))
    with pytest.raises(RunStateError, match="every job of the run succeeded"):
        resume_plan(done, SPEC)


def test_failed_children_are_read_from_every_page_once_each_in_order() -> None:
    batch = FailedChildren({"b": [7, 2, 9, 2, 4]}, page=2)
    assert failed_indices(batch, "b") == [2, 4, 7, 9]  # type: ignore[arg-type]


def test_failed_only_reruns_the_failed_children_of_b_and_c_then_the_rest() -> None:
    # GIVEN a run whose JobB children 3 and 7 failed (so JobC's 3 and 7 never ran)
    run = _run(JobA="SUCCEEDED", JobB="FAILED", JobC="FAILED", JobD="FAILED", JobE="FAILED")
    batch = FailedChildren({"id-JobB": [3, 7], "id-JobC": [3, 7]})
    # WHEN a failed-only resume is planned
    plan = plan_resume(batch, run, SPEC, failed_only=True)  # type: ignore[arg-type]
    # THEN JobA is kept, JobB and JobC re-run for children 3 and 7, the rest whole
    assert plan.keep == {"JobA": "id-JobA"}
    assert plan.reruns == {"JobB": [3, 7], "JobC": [3, 7]}
    assert plan.array_size == 10
    assert plan.describe() == (
        "keeping JobA; JobB for children 3, 7 only; JobC for children 3, 7 only; "
        "re-submitting the rest"
    )


def test_an_array_whose_children_all_failed_is_run_whole() -> None:
    run = _run(JobA="SUCCEEDED", JobB="FAILED", JobC="FAILED")
    batch = FailedChildren({"id-JobB": list(range(10)), "id-JobC": [1]})
    plan = plan_resume(batch, run, SPEC, failed_only=True)  # type: ignore[arg-type]
    assert (plan.keep, plan.reruns) == ({"JobA": "id-JobA"}, {})


def test_an_array_with_no_failed_child_listed_ends_the_partial_reruns() -> None:
    run = _run(JobA="SUCCEEDED", JobB="FAILED", JobC="FAILED")
    batch = FailedChildren({"id-JobB": [1], "id-JobC": []})
    plan = plan_resume(batch, run, SPEC, failed_only=True)  # type: ignore[arg-type]
    assert plan.reruns == {"JobB": [1]}


def test_a_plain_resume_reruns_everything_from_the_first_job_that_did_not_succeed() -> None:
    run = _run(JobA="SUCCEEDED", JobB="FAILED", JobC="FAILED")
    plan = plan_resume(FailedChildren({"id-JobB": [1]}), run, SPEC, failed_only=False)  # type: ignore[arg-type]
    assert (plan.keep, plan.reruns) == ({"JobA": "id-JobA"}, {})
    assert plan.describe() == "keeping JobA; re-submitting the rest"


def test_a_resume_carries_the_runs_size_parameters_and_settings_over() -> None:
    # GIVEN a run whose first job had the run's settings and another variable, and whose JobE
    # had its parameters
    run = _run(JobA="FAILED")
    run["JobA"] = JobProgress(
        "JobA",
        "id-JobA",
        "FAILED",
        environment={contract.INPUT_PREFIX: "in/", contract.RUN_ID: "r1"},
    )
    run["JobB"] = JobProgress("JobB", "id-JobB", "FAILED", array_size=None)
    run["JobC"] = JobProgress("JobC", "id-JobC", "FAILED", array_size=6)
    run["JobE"] = JobProgress("JobE", "id-JobE", "FAILED", parameters={"Recipient": "a@b.io"})
    plan = plan_resume(FailedChildren({}), run, SPEC, failed_only=False)  # type: ignore[arg-type]
    # THEN the size of the first input-scaled array that has one, JobE's parameters, and of
    # the first job's environment the run's settings only
    assert plan == ResumePlan(
        keep={},
        reruns={},
        array_size=6,
        parameters={"Recipient": "a@b.io"},
        environment={contract.INPUT_PREFIX: "in/"},
    )
    assert plan.describe() == "keeping nothing; re-submitting the rest"


def test_a_run_without_jobe_or_sizes_carries_nothing_over() -> None:
    run = {"JobA": JobProgress("JobA", "id-JobA", "FAILED")}
    plan = plan_resume(FailedChildren({}), run, SPEC, failed_only=False)  # type: ignore[arg-type]
    assert (plan.array_size, plan.parameters, plan.environment) == (None, {}, {})
