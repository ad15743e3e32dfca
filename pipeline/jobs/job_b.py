"""JobB[i]: the CPU stage over shard i: the CPU step on each of its objects, with all the CPUs
the child was given.

Each object is staged from BucketA as JobA listed it (pinned by its ETag), the step runs on it
(Python steps in a process pool sized from the container's CPU allowance, commands one per
object), and what the step wrote goes to BucketB, keyed by the input key's digest, so a retried
child overwrites its own results. The shard's record lists each object as done (its result and
the step's facts) or rejected (the step's message).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.jobs.aws_calls import reporting
from pipeline.jobs.bucket_io import get_json, s3_url
from pipeline.jobs.program import JobRun, cpu_allowance, job_main
from pipeline.jobs.retry import shard_before
from pipeline.jobs.run_context import RunContext, array_index
from pipeline.jobs.runner import (
    POOL_THRESHOLD,
    ObjectRejectedError,
    Staged,
    StepCaller,
    download,
    for_each,
    free_space,
    keep_record,
    load_step,
    scratch_slots,
    upload,
)
from pipeline.steps import DEFAULT_STEPS, ObjectRef, Step

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def process_shard(
    s3: S3Client, ctx: RunContext, step: Step, objects: list[dict[str, Any]], workers: int
) -> list[dict[str, Any]]:
    """The step on each of ``objects``; one entry per object, done or rejected."""
    with tempfile.TemporaryDirectory(prefix="jobb-") as folder:
        scratch = Path(folder)
        # I/O threads feed the step; each holds one object at a time (its input and its
        # output), so scratch space is bounded by threads x 2 x the largest object.
        threads = scratch_slots(
            max((o["size"] for o in objects), default=0), free_space(scratch), max(2, workers + 1)
        )
        caller = StepCaller(step, workers=workers, stage="cpu")

        def process(_number: int, obj: dict[str, Any], staged: Staged) -> dict[str, Any]:
            ref = ObjectRef(obj["key"], obj["size"], obj.get("etag", ""))
            entry: dict[str, Any] = {"key": ref.key, "size": ref.size, "etag": ref.etag}
            with reporting(f"download {s3_url(ctx.input_bucket, ref.key)}"):
                download(s3, ctx.input_bucket, ref.key, ref.etag, staged.source)
            try:
                facts = caller(staged.source, staged.target, ref)
            except ObjectRejectedError as rejected:
                return {**entry, "rejected": f"cpu step: {rejected}"}
            if not staged.target.exists():
                return {**entry, "rejected": "cpu step: it wrote no result"}
            result_key = contract.cpu_result_key(ctx.run_id, ref.key)
            with reporting(f"upload {s3_url(ctx.cpu_results_bucket, result_key)}"):
                size = upload(s3, staged.target, ctx.cpu_results_bucket, result_key)
            return {**entry, "result_key": result_key, "result_size": size, "facts": facts or {}}

        try:
            return for_each(objects, process, scratch=scratch, threads=threads)
        finally:
            caller.close()


def run(
    s3: S3Client,
    ctx: RunContext,
    index: int,
    workers: int,
    *,
    step: Step = DEFAULT_STEPS.cpu,
    started: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The CPU stage over shard ``index``; its record carries the child's seconds when
    ``started`` (a reading of ``clock``) is given, for JobE's summary. In a retry of the
    run's rejected objects (``ctx.retry_rejected``), only those of the shard run again (see
    :mod:`pipeline.jobs.retry`)."""
    kept: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if ctx.retry_rejected:
        before = shard_before(s3, ctx, index)
        redo = before.rejected(ctx.retry_rejected)
        if not redo:
            return {"shard": index, "objects": 0, "rejected": 0, "retried": 0}
        manifest = before.manifest
        objects = [o for o in manifest["objects"] if o["key"] in redo]
        kept = [e for e in before.cpu_record["objects"] if e["key"] not in redo]
        extra = {contract.MEMORY_BEFORE: {"objects": before.memory_entries}}
    else:
        manifest = get_json(s3, ctx.cpu_results_bucket, contract.manifest_key(ctx.run_id, index))
        objects = manifest["objects"]
    if sum(o["size"] for o in objects) < POOL_THRESHOLD:
        workers = 1
    # An empty shard (more children than objects) needs no scratch space and no workers.
    entries = process_shard(s3, ctx, step, objects, workers) if objects else []
    if ctx.retry_rejected:
        for entry in entries:
            entry[contract.RETRIED] = ctx.retry_rejected
            if "rejected" in entry:  # a result of an earlier pass would be an orphan
                key = contract.cpu_result_key(ctx.run_id, entry["key"])
                with reporting(f"DeleteObject {s3_url(ctx.cpu_results_bucket, key)}"):
                    s3.delete_object(Bucket=ctx.cpu_results_bucket, Key=key)
    done = keep_record(
        s3,
        ctx.cpu_results_bucket,
        contract.cpu_index_key(ctx.run_id, index),
        ctx=ctx,
        index=index,
        step=step,
        entries=[*kept, *entries],
        read=manifest,
        seconds=None if started is None else clock() - started,
        extra=extra,
    )
    if ctx.retry_rejected:
        redone = [e for e in entries if "rejected" not in e]
        return {"shard": index, "retried": len(entries), "objects": len(redone)}
    return {
        "shard": index,
        "objects": len(done),
        "rejected": len(entries) - len(done),
        "bytes": sum(e["size"] for e in done),
        "result_bytes": sum(e["result_size"] for e in done),
        "workers": workers,
    }


def main() -> int:
    def work(job: JobRun) -> dict[str, Any]:
        index = array_index(size=job.ctx.array_size)
        return run(
            job.client("s3"),
            job.ctx,
            index,
            cpu_allowance(),
            step=load_step(),
            started=job.started,
        )

    return job_main("JobB", work)


if __name__ == "__main__":
    raise SystemExit(main())
