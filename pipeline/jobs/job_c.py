"""JobC[i]: the memory stage over JobB child i's results (N_TO_N: it starts when B[i] has
succeeded): the memory step on each result, one DynamoDB item and one output per object.

Each result JobB kept is staged from BucketB, the step runs on it, what it wrote goes to BucketC
and what it returned becomes the object's item, under a deterministic key with the pipeline's
own attributes (BatchWriteItem, unprocessed items retried with backoff), so a retried child
overwrites its own outputs and items. The shard's record lists each object as done (its output,
its digest and the step's attributes) or rejected (the step's message).
"""

from __future__ import annotations

import hashlib
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.jobs.aws_calls import TransientJobError, reporting
from pipeline.jobs.bucket_io import get_json, get_json_if_exists, s3_url
from pipeline.jobs.items import ItemError, item_of
from pipeline.jobs.program import JobRun, job_main
from pipeline.jobs.retry import redone_by_cpu
from pipeline.jobs.run_context import RunContext, array_index
from pipeline.jobs.runner import (
    ObjectRejectedError,
    Staged,
    StepCaller,
    for_each,
    keep_record,
    load_step,
    upload,
)
from pipeline.steps import DEFAULT_STEPS, ObjectRef, Step

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

BATCH_WRITE_LIMIT = 25
WRITE_ATTEMPTS = 8
THREADS = 8
CHUNK = 1024 * 1024


def run(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    ctx: RunContext,
    index: int,
    *,
    step: Step = DEFAULT_STEPS.memory,
    sleep: Callable[[float], None] = time.sleep,
    started: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The memory stage over shard ``index``; its record carries the child's seconds when
    ``started`` (a reading of ``clock``) is given, for JobE's summary. In a retry of the
    run's rejected objects (``ctx.retry_rejected``), only the objects the retry's JobB redid
    and did run again (see :mod:`pipeline.jobs.retry`)."""
    kept: list[dict[str, Any]] = []
    if ctx.retry_rejected:
        cpu_index = get_json_if_exists(
            s3, ctx.cpu_results_bucket, contract.cpu_index_key(ctx.run_id, index)
        )
        redone, done_by_cpu = redone_by_cpu(cpu_index or {"objects": []}, ctx.retry_rejected)
        if cpu_index is None or not redone:
            return {"shard": index, "objects": 0, "retried": 0}
        before = cpu_index.get(contract.MEMORY_BEFORE) or {"objects": []}
        kept = [e for e in before["objects"] if e["key"] not in redone]
    else:
        cpu_index = get_json(s3, ctx.cpu_results_bucket, contract.cpu_index_key(ctx.run_id, index))
        done_by_cpu = [e for e in cpu_index["objects"] if "rejected" not in e]
    caller = StepCaller(step, workers=1, stage="memory")

    def process(_number: int, entry: dict[str, Any], staged: Staged) -> dict[str, Any]:
        ref = ObjectRef(entry["key"], entry["size"], entry.get("etag", ""))
        with reporting(f"GetObject {s3_url(ctx.cpu_results_bucket, entry['result_key'])}"):
            body = s3.get_object(Bucket=ctx.cpu_results_bucket, Key=entry["result_key"])["Body"]
            with staged.source.open("wb") as target:
                for chunk in body.iter_chunks(CHUNK):
                    target.write(chunk)
        try:
            attributes = caller(staged.source, staged.target, ref) or {}
            if not staged.target.exists():
                raise ObjectRejectedError("it wrote no output")
            output_key = contract.memory_output_key(ctx.run_id, ref.key)
            output = {
                "output_key": output_key,
                "output_md5": _md5(staged.target),
                "output_size": staged.target.stat().st_size,
            }
            item = item_of(ctx.run_id, index, ref.key, output, attributes, entry.get("facts"))
        except ItemError as not_an_item:
            return {"key": ref.key, "rejected": f"memory step: {not_an_item}"}
        except ObjectRejectedError as rejected:
            message = str(rejected)
            prefix = "" if message.startswith("memory step:") else "memory step: "
            return {"key": ref.key, "rejected": f"{prefix}{message}"}
        with reporting(f"PutObject {s3_url(ctx.memory_results_bucket, output_key)}"):
            upload(s3, staged.target, ctx.memory_results_bucket, output_key)
        return {"key": ref.key, **output, "attributes": attributes, "item": item}

    with tempfile.TemporaryDirectory(prefix="jobc-") as folder:
        try:
            entries = for_each(done_by_cpu, process, scratch=Path(folder), threads=THREADS)
        finally:
            caller.close()
    write_items(
        dynamodb, ctx.metadata_table, [e.pop("item") for e in entries if "item" in e], sleep=sleep
    )
    done = keep_record(
        s3,
        ctx.memory_results_bucket,
        contract.memory_index_key(ctx.run_id, index),
        ctx=ctx,
        index=index,
        step=step,
        entries=[*kept, *entries],
        read=cpu_index,
        seconds=None if started is None else clock() - started,
    )
    return {"shard": index, "objects": len(done), "rejected": len(entries) + len(kept) - len(done)}


def _md5(path: Path) -> str:
    """S3's ETag of a single-part upload is the MD5 of the body: JobD compares them to find an
    output changed after it was written."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_items(
    dynamodb: DynamoDBClient,
    table: str,
    items: list[dict[str, Any]],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """BatchWriteItem in groups of 25; items DynamoDB leaves unprocessed (throttling, hot
    partitions) are sent again with exponential backoff and jitter."""
    for start in range(0, len(items), BATCH_WRITE_LIMIT):
        pending: list[Any] = [
            {"PutRequest": {"Item": item}} for item in items[start : start + BATCH_WRITE_LIMIT]
        ]
        for attempt in range(WRITE_ATTEMPTS):
            with reporting(f"BatchWriteItem {table}"):
                response = dynamodb.batch_write_item(RequestItems={table: pending})
            pending = response.get("UnprocessedItems", {}).get(table, [])
            if not pending:
                break
            sleep(min(0.05 * 2**attempt, 5.0) * (0.5 + random.random() / 2))
        else:
            first = pending[0]["PutRequest"]["Item"][contract.TABLE_SORT_KEY]["S"]
            raise TransientJobError(
                f"BatchWriteItem {table}: {len(pending)} items still unprocessed after "
                f"{WRITE_ATTEMPTS} attempts, first {first!r}"
            )


def main() -> int:
    def work(job: JobRun) -> dict[str, Any]:
        index = array_index(size=job.ctx.array_size)
        return run(
            job.client("s3"),
            job.client("dynamodb"),
            job.ctx,
            index,
            step=load_step(),
            started=job.started,
        )

    return job_main("JobC", work)


if __name__ == "__main__":
    raise SystemExit(main())
