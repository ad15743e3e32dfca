"""JobA: list and validate BucketA; write N manifest shards balanced by bytes, and a rejects list.

Every listed object ends up in exactly one shard or in the rejects list, with a reason.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.jobs.bucket_io import list_objects, put_json
from pipeline.jobs.program import in_threads, job_main
from pipeline.jobs.run_context import RunContext

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str


check = contract.check_listed
"""Which listed objects are inputs: the one rule, which the submitter applies too when it
sizes a run to its input (:func:`pipeline.contract.check_listed`)."""


def plan_shards(objects: list[Listed], shards: int) -> list[list[Listed]]:
    """Assign objects to ``shards`` shards balancing total bytes (largest first to the
    lightest shard). Deterministic: the same listing always gives the same shards."""
    plan: list[list[Listed]] = [[] for _ in range(shards)]
    heap = [(0, index) for index in range(shards)]
    for obj in sorted(objects, key=lambda o: (-o.size, o.key)):
        total, index = heapq.heappop(heap)
        plan[index].append(obj)
        heapq.heappush(heap, (total + obj.size, index))
    return [sorted(shard, key=lambda o: o.key) for shard in plan]


def run(s3: S3Client, ctx: RunContext, *, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    # Objects written after this instant are not part of the run (JobD tells them apart from
    # lost ones); S3 times are whole seconds, so the instant is taken a second early.
    listed_at = int(clock()) - 1
    valid: list[Listed] = []
    rejects: list[dict[str, Any]] = []
    listed = 0
    for obj in list_objects(s3, ctx.input_bucket, ctx.input_prefix, url_encoded=True):
        listed += 1
        key, reason = check(
            obj["Key"], obj["Size"], obj.get("StorageClass", "STANDARD"), ctx.max_object_bytes
        )
        if reason:
            rejects.append({"key": key, "size": obj["Size"], "reason": reason})
        else:
            valid.append(Listed(key, obj["Size"], obj.get("ETag", "").strip('"')))
    shards = plan_shards(valid, ctx.array_size)

    def write_shard(index: int) -> None:
        objects = shards[index]
        put_json(
            s3,
            ctx.cpu_results_bucket,
            contract.manifest_key(ctx.run_id, index),
            {
                "run_id": ctx.run_id,
                "shard": index,
                "bytes": sum(o.size for o in objects),
                "objects": [{"key": o.key, "size": o.size, "etag": o.etag} for o in objects],
            },
        )

    in_threads(write_shard, list(range(ctx.array_size)))
    rejects.sort(key=lambda r: r["key"])
    put_json(s3, ctx.output_bucket, contract.listing_rejects_key(ctx.run_id), {"rejects": rejects})
    summary = {
        "listed": listed,
        "valid": len(valid),
        "rejected": len(rejects),
        "valid_bytes": sum(o.size for o in valid),
        "shards": ctx.array_size,
        "shard_bytes": [sum(o.size for o in shard) for shard in shards],
        "shard_objects": [len(shard) for shard in shards],
        "largest_object": max((o.size for o in valid), default=0),
        "listed_at": listed_at,
        "input_prefix": ctx.input_prefix,
    }
    put_json(s3, ctx.output_bucket, contract.listing_key(ctx.run_id), summary)
    return {k: v for k, v in summary.items() if not k.startswith("shard_")}


def main() -> int:
    return job_main("JobA", lambda job: run(job.client("s3"), job.ctx), timed=True)


if __name__ == "__main__":
    raise SystemExit(main())
