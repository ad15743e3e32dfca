"""The local pipeline's speed, and what LocalBatch's scheduling costs, measured in one run.

For array sizes 2 and 8, the default local sample (300 objects) goes through A..E under
LocalBatch with moto's server, as `python -m pipeline.submit --local` runs it. Printed:

- objects per second (input objects / wall time from the first SubmitJob to the last job's end);
- scheduling overhead / the jobs' own time: the wall time during which no job process was
  running (the scheduler noticing exits, resolving dependencies, starting processes) divided by
  the time during which at least one was. Goal <= 0.1.

    .venv/bin/python bench/local.py
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.local import LocalBatch
from pipeline.local.backend import LocalBackend
from pipeline.local.sample import sample_objects
from pipeline.runs import engine
from pipeline.runs.progress import SubmittedRun


def attempts(batch: LocalBatch, run: SubmittedRun) -> list[tuple[int, int]]:
    """(start, stop) in ms of every job process of the run."""
    spans = []
    for job in batch.describe_jobs(jobs=list(run.job_ids.values()))["jobs"]:
        size = (job.get("arrayProperties") or {}).get("size")
        leaves = [job]
        if size:
            ids = [s["jobId"] for s in batch.list_jobs(arrayJobId=job["jobId"])["jobSummaryList"]]
            leaves = [
                d
                for i in range(0, len(ids), 100)
                for d in batch.describe_jobs(jobs=ids[i : i + 100])["jobs"]
            ]
        spans += [(a["startedAt"], a["stoppedAt"]) for leaf in leaves for a in leaf["attempts"]]
    return spans


def busy_time(spans: list[tuple[int, int]]) -> int:
    """Length of the union of the spans."""
    total, end = 0, None
    for start, stop in sorted(spans):
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def measure(array_size: int) -> dict[str, Any]:
    inputs = sample_objects()
    backend = LocalBackend()
    document = backend.document()
    config = engine.plan_run(document, engine.RunInputs(array_size=array_size))
    with backend.session(document, inputs=inputs) as session:
        submitted = int(time.time() * 1000)
        run = engine.start(session, document, config)
        outcome = engine.follow(session, run, interval=0.2)
        assert outcome.succeeded, outcome.failure
        spans = attempts(session.batch, run)
    finished = max(stop for _, stop in spans)
    wall = finished - submitted
    busy = busy_time(spans)
    return {
        "objects": len(inputs),
        "wall_s": wall / 1000,
        "objects_per_s": len(inputs) / (wall / 1000),
        "processes": len(spans),
        "overhead_ratio": (wall - busy) / busy,
    }


def main() -> None:
    print("local pipeline (LocalBatch + moto server), default sample:")
    for size in (2, 8):
        m = measure(size)
        print(
            f"  {size} children: {m['objects']} objects in {m['wall_s']:.1f} s = "
            f"{m['objects_per_s']:.1f} objects/s, {m['processes']} job processes, "
            f"scheduling overhead / job time = {m['overhead_ratio']:.3f} (goal <= 0.1)"
        )


if __name__ == "__main__":
    main()
