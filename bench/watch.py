"""DescribeJobs calls per poll while watching a run, for array sizes 10, 1,000 and 10,000.

Measured on the library's own Batch engine in process, side by side in one run: the jobs are
held for three polls (JobA running, the rest waiting), then run to their end, and every Batch
API call the watcher makes is counted. The goal is the same number of calls per poll whatever
the array size (children are counted from the parent's statusSummary, never listed).

    .venv/bin/python bench/watch.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "job_images"), str(REPO / "tests")]
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
)

from helpers.batch import engine_batch  # noqa: E402
from pipeline.document import PipelineDocument  # noqa: E402
from pipeline.runs.chain import submit_pipeline  # noqa: E402
from pipeline.runs.progress import JobProgress  # noqa: E402
from pipeline.runs.requests import run_config  # noqa: E402
from pipeline.runs.watch import watch  # noqa: E402

HELD_POLLS = 3


def measure(size: int) -> tuple[int, int]:
    """(polls, Batch calls made by the watcher) for one run of ``size`` children."""
    with engine_batch() as aws:
        aws.hold_new_jobs()
        run = submit_pipeline(
            aws.batch,
            PipelineDocument(aws.queue_arn, aws.definition_arns),
            run_config(array_size=size),
        )
        aws.start(run.jobs[0].job_id)
        aws.count_calls()
        polls = 0

        def on_poll(_progress: list[JobProgress]) -> None:
            nonlocal polls
            polls += 1
            if polls == HELD_POLLS:
                aws.succeed(run.jobs[0].job_id)
                aws.run_at_once()

        result = watch(aws.batch, run, interval=0, on_poll=on_poll)
        assert result.succeeded
        return polls, sum(aws.calls.values())


def main() -> None:
    print("Batch API calls per watch poll (the engine in process):")
    per_poll = {}
    for size in (10, 1_000, 10_000):
        polls, calls = measure(size)
        per_poll[size] = calls / polls
        print(
            f"  array size {size:>6,}: {calls} calls over {polls} polls = "
            f"{calls / polls:g} per poll"
        )
    ratio = per_poll[10_000] / per_poll[10]
    print(f"  ratio 10,000 / 10: {ratio:g} (goal: 1, equal calls whatever the size)")


if __name__ == "__main__":
    main()
