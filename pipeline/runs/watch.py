"""Follow a run until it ends, one DescribeJobs call per poll."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.runs.failures import Failure, first_failure
from pipeline.runs.progress import JobProgress, SubmittedRun, describe_jobs

if TYPE_CHECKING:
    from pipeline.runs.api import BatchApi


@dataclass(frozen=True)
class WatchResult:
    succeeded: bool
    progress: list[JobProgress]
    failure: Failure | None = None


def watch(
    batch: BatchApi,
    run: SubmittedRun,
    *,
    interval: float = 10.0,
    on_poll: Callable[[list[JobProgress]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    settle: bool = False,
) -> WatchResult:
    """Poll until the last job succeeds or any job fails. Each poll is one DescribeJobs call
    per 100 jobs of the run (one, for the five jobs), whatever the array sizes.

    With ``settle``, a failure is reported only once every job of the run has ended (what a
    local run does before it shuts everything down); otherwise at once, since a failed job
    means the run cannot succeed."""
    last_key = run.jobs[-1].key
    while True:
        progress = describe_jobs(batch, run.job_ids)
        if on_poll:
            on_poll(progress)
        failed = any(p.has_failed for p in progress)
        if failed and (not settle or not any(p.is_active for p in progress)):
            return WatchResult(False, progress, first_failure(batch, progress))
        if any(p.key == last_key and p.status == "SUCCEEDED" for p in progress):
            return WatchResult(True, progress)
        sleep(interval)
