"""pipeline/runs/watch.py: following a run until it ends. The Batch here answers each poll
with the next of a list of states; the waits go through the ``sleep`` it is given."""

from __future__ import annotations

from typing import Any

from pipeline.runs.progress import SubmittedJob, SubmittedRun
from pipeline.runs.watch import watch


class Polls:
    """DescribeJobs answering each poll with the next of ``states`` (key -> status)."""

    def __init__(self, *states: dict[str, str]) -> None:
        self.states = list(states)
        self.polls = 0

    def describe_jobs(self, *, jobs: list[str]) -> dict[str, Any]:
        state = self.states[min(self.polls, len(self.states) - 1)]
        self.polls += 1
        return {
            "jobs": [
                {"jobId": f"id-{key}", "status": status, "statusReason": "r"}
                for key, status in state.items()
            ]
        }


RUN = SubmittedRun("r1", tuple(SubmittedJob(k, f"id-{k}") for k in ("JobA", "JobB", "JobE")))


def test_a_run_is_followed_until_its_last_job_succeeds() -> None:
    batch = Polls(
        {"JobA": "RUNNING", "JobB": "PENDING", "JobE": "PENDING"},
        {"JobA": "SUCCEEDED", "JobB": "SUCCEEDED", "JobE": "RUNNING"},
        {"JobA": "SUCCEEDED", "JobB": "SUCCEEDED", "JobE": "SUCCEEDED"},
    )
    sleeps: list[float] = []
    seen: list[list[str]] = []
    result = watch(
        batch,  # type: ignore[arg-type]
        RUN,
        interval=7.0,
        sleep=sleeps.append,
        on_poll=lambda progress: seen.append([p.status for p in progress]),
    )
    assert result.succeeded
    assert result.failure is None
    assert (batch.polls, sleeps) == (3, [7.0, 7.0])
    assert seen[-1] == ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]


def test_a_failed_job_ends_the_watch_at_once_naming_it() -> None:
    batch = Polls({"JobA": "FAILED", "JobB": "PENDING", "JobE": "PENDING"})
    result = watch(batch, RUN, sleep=lambda _: None)  # type: ignore[arg-type]
    assert not result.succeeded
    assert result.failure is not None
    assert result.failure.job_key == "JobA"
    assert batch.polls == 1


def test_settling_waits_for_every_job_to_end_before_reporting_a_failure() -> None:
    batch = Polls(
        {"JobA": "FAILED", "JobB": "RUNNING", "JobE": "PENDING"},
        {"JobA": "FAILED", "JobB": "FAILED", "JobE": "FAILED"},
    )
    result = watch(batch, RUN, sleep=lambda _: None, settle=True)  # type: ignore[arg-type]
    assert not result.succeeded
    assert batch.polls == 2
    assert [p.status for p in result.progress] == ["FAILED", "FAILED", "FAILED"]
