"""JobC[i]: memory-heavy work on JobB child i's results (N_TO_N: it starts when B[i] succeeds).

Per object: the compressed result is loaded and decompressed in memory and measured (digest,
size, byte entropy, lines); one DynamoDB item per object under a deterministic key
(BatchWriteItem, unprocessed items retried with backoff) and one output object in BucketC.
"""

from __future__ import annotations

import bz2
import hashlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from batch_jobs import contract
from batch_jobs.common import (
    JobError,
    RunContext,
    TransientJobError,
    array_index,
    dumps,
    get_json,
    in_threads,
    make_client,
    put_json,
    record_timing,
    reporting,
    run_main,
    s3_url,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

BATCH_WRITE_LIMIT = 25
WRITE_ATTEMPTS = 8


def measure(data: bytes) -> dict[str, Any]:
    """Statistics of one decompressed object."""
    counts = Counter(data)
    size = len(data)
    entropy = -sum(c / size * math.log2(c / size) for c in counts.values()) if size else 0.0
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": size,
        "entropy_bits_per_byte": round(entropy, 6),
        "distinct_bytes": len(counts),
        "lines": data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0),
    }


def run(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    ctx: RunContext,
    index: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    cpu_index = get_json(s3, ctx.cpu_results_bucket, contract.cpu_index_key(ctx.run_id, index))

    def process(entry: dict[str, Any]) -> dict[str, Any]:
        with reporting(f"GetObject {s3_url(ctx.cpu_results_bucket, entry['result_key'])}"):
            compressed = s3.get_object(Bucket=ctx.cpu_results_bucket, Key=entry["result_key"])[
                "Body"
            ].read()
        try:
            stats = measure(bz2.decompress(compressed))
        except (OSError, ValueError) as error:
            raise JobError(
                f"{s3_url(ctx.cpu_results_bucket, entry['result_key'])} (input {entry['key']!r}) "
                f"does not decompress: {error}"
            ) from error
        output_key = contract.memory_output_key(ctx.run_id, entry["key"])
        body = dumps({"key": entry["key"], "shard": index, **stats})
        with reporting(f"PutObject {s3_url(ctx.memory_results_bucket, output_key)}"):
            s3.put_object(
                Bucket=ctx.memory_results_bucket,
                Key=output_key,
                Body=body,
                ContentType="application/json",
            )
        return {
            contract.TABLE_PARTITION_KEY: {"S": ctx.run_id},
            contract.TABLE_SORT_KEY: {"S": entry["key"]},
            "shard": {"N": str(index)},
            "size": {"N": str(entry["size"])},
            "compressed_size": {"N": str(entry["compressed_size"])},
            "sha256_original": {"S": entry["sha256"]},
            "sha256_roundtrip": {"S": stats["sha256"]},
            "roundtrip_size": {"N": str(stats["size"])},
            "entropy_bits_per_byte": {"N": str(stats["entropy_bits_per_byte"])},
            "lines": {"N": str(stats["lines"])},
            "output_key": {"S": output_key},
            # S3's ETag of a single-part upload is the MD5 of the body: JobD compares it with
            # the listing to catch an output changed after it was written.
            "output_md5": {"S": hashlib.md5(body, usedforsecurity=False).hexdigest()},
        }

    items = in_threads(process, cpu_index["objects"], threads=8)
    write_items(dynamodb, ctx.metadata_table, items, sleep=sleep)
    put_json(
        s3,
        ctx.memory_results_bucket,
        contract.memory_index_key(ctx.run_id, index),
        {
            "run_id": ctx.run_id,
            "shard": index,
            "keys": sorted(e["key"] for e in cpu_index["objects"]),
        },
    )
    return {"shard": index, "objects": len(items)}


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
    def work() -> dict[str, Any]:
        started = time.monotonic()
        ctx = RunContext.from_env()
        index = array_index(size=ctx.array_size)
        s3 = make_client("s3")
        result = run(s3, make_client("dynamodb"), ctx, index)
        record_timing(s3, ctx, "JobC", index, time.monotonic() - started)
        return result

    return run_main("JobC", work)


if __name__ == "__main__":
    raise SystemExit(main())
