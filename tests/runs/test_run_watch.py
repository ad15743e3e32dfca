"""pipeline/runs/watch.py: following a run until it ends. The run is the chain as the command
submits it (arrays of 2) on the engine's Batch (:func:`helpers.batch.engine_batch`), its jobs
held until the test places them; each wait of the watch goes through the ``sleep`` it is
given, which is where the test moves the run on, so the watch sees what Batch reports after
each step (an array parent stays PENDING while its children run)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from helpers.batch import EngineBatch, engine_batch
from pipeline.document import PipelineDocument
from pipeline.runs.chain import submit_pipeline
from pipeline.runs.progress import SubmittedRun
from pipeline.runs.requests import run_config
from pipeline.runs.watch import watch


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        harness.hold_new_jobs()  # the test places every job
        yield harness


def _submitted(aws: EngineBatch) -> SubmittedRun:
    document = PipelineDocument(aws.queue_arn, aws.definition_arns)
    return submit_pipeline(aws.reader, document, run_config(array_size=2))


class Steps:
    """The watch's ``sleep``: records each wait, then the run's next step happens."""

    def __init__(self, *steps: Callable[[], None]) -> None:
        self.steps = list(steps)
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        assert self.steps, "the watch waited once more than the run has steps"
        self.steps.pop(0)()


def test_a_run_is_followed_until_its_last_job_succeeds(aws: EngineBatch) -> None:
    # GIVEN a run whose JobA runs; after the first wait every job but JobE has succeeded and
    # JobE runs; after the second JobE has succeeded
    run = _submitted(aws)
    ids = run.job_ids
    aws.start(ids["JobA"])

    def up_to_jobe() -> None:
        for key in ("JobA", "JobB", "JobC", "JobD"):
            aws.succeed(ids[key])
        aws.start(ids["JobE"])

    steps = Steps(up_to_jobe, lambda: aws.succeed(ids["JobE"]))
    seen: list[list[str]] = []
    # WHEN it is watched
    result = watch(
        aws.batch,
        run,
        interval=7.0,
        sleep=steps,
        on_poll=lambda progress: seen.append([p.status for p in progress]),
    )
    # THEN it succeeds after three polls, two waits of the interval apart
    assert result.succeeded
    assert result.failure is None
    assert steps.waits == [7.0, 7.0]
    assert seen == [
        ["RUNNING", "PENDING", "PENDING", "PENDING", "PENDING"],
        ["SUCCEEDED"] * 4 + ["RUNNING"],
        ["SUCCEEDED"] * 5,
    ]


def _child_failed_while_its_sibling_runs(aws: EngineBatch) -> SubmittedRun:
    """A run whose JobA succeeded and whose JobB child 0 failed while child 1 still runs."""
    run = _submitted(aws)
    aws.succeed(run.job_ids["JobA"])
    aws.start(run.job_ids["JobB"])
    aws.fail_child(run.job_ids["JobB"], 0)
    return run


def test_a_failed_job_ends_the_watch_at_once_naming_it(aws: EngineBatch) -> None:
    # GIVEN a run with a failed child, and jobs that have not ended
    run = _child_failed_while_its_sibling_runs(aws)
    polls: list[int] = []
    waits = Steps()
    # WHEN it is watched
    result = watch(aws.batch, run, sleep=waits, on_poll=lambda progress: polls.append(1))
    # THEN the first poll ends the watch, naming the failed child, though the run goes on
    assert not result.succeeded
    assert result.failure is not None
    assert (result.failure.job_key, result.failure.child_index) == ("JobB", 0)
    assert (len(polls), waits.waits) == (1, [])
    assert any(p.is_active for p in result.progress)


def test_settling_waits_for_every_job_to_end_before_reporting_a_failure(aws: EngineBatch) -> None:
    # GIVEN the same run, whose JobB child 1 then succeeds and whose jobs then run as they may
    run = _child_failed_while_its_sibling_runs(aws)

    def the_rest() -> None:
        aws.succeed(f"{run.job_ids['JobB']}:1")
        aws.run_at_once()

    steps = Steps(the_rest)
    polls: list[int] = []
    # WHEN it is watched, settling
    result = watch(
        aws.batch, run, sleep=steps, settle=True, on_poll=lambda progress: polls.append(1)
    )
    # THEN the failure is reported once every job has ended: JobB failed, and Batch failed
    # the jobs after it
    assert not result.succeeded
    assert len(polls) == 2
    assert [p.status for p in result.progress] == ["SUCCEEDED"] + ["FAILED"] * 4
    assert result.failure is not None
    assert result.failure.job_key == "JobB"
