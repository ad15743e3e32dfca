"""JobC[i]: memory-heavy work on JobB child i's results (N_TO_N: it starts when B[i] succeeds).

Per object: the compressed result is streamed, decompressed in bounded pieces and measured
(digest, size, byte entropy, lines); one DynamoDB item per object under a deterministic key
(BatchWriteItem, unprocessed items retried with backoff) and one output object in BucketC.

Memory is bounded by the threads and the piece size, not by the objects: each of ``THREADS``
threads holds one compressed chunk (``CHUNK``) and at most ``CHUNK`` decompressed bytes at a
time, so a 5 GiB object needs no more than a 5 KiB one (``bench/jobc_memory.py`` measures it).
"""

from __future__ import annotations

import bz2
import hashlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.jobs.common import (
    JobError,
    RunContext,
    TransientJobError,
    array_index,
    dumps,
    get_json,
    in_threads,
    make_client,
    put_json,
    reporting,
    run_main,
    s3_url,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

BATCH_WRITE_LIMIT = 25
WRITE_ATTEMPTS = 8
THREADS = 8
CHUNK = 1024 * 1024
"""Bytes read from S3, and at most this many decompressed, at a time per thread."""


class Measure:
    """Statistics of one decompressed object, fed in pieces."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.counts: Counter[int] = Counter()
        self.size = 0
        self.newlines = 0
        self.last = b""

    def update(self, piece: bytes) -> None:
        if not piece:
            return
        self.digest.update(piece)
        self.counts.update(piece)
        self.size += len(piece)
        self.newlines += piece.count(b"\n")
        self.last = piece[-1:]

    def result(self) -> dict[str, Any]:
        size = self.size
        counts = self.counts.values()
        entropy = -sum(c / size * math.log2(c / size) for c in counts) if size else 0.0
        return {
            "sha256": self.digest.hexdigest(),
            "size": size,
            "entropy_bits_per_byte": round(entropy, 6),
            "distinct_bytes": len(self.counts),
            "lines": self.newlines + (1 if size and self.last != b"\n" else 0),
        }


def measure(data: bytes) -> dict[str, Any]:
    """Statistics of one decompressed object held in memory (small objects, tests)."""
    stats = Measure()
    stats.update(data)
    return stats.result()


def measure_compressed(chunks: Iterable[bytes]) -> dict[str, Any]:
    """Statistics of the object a bzip2 stream decompresses to, in bounded memory: never more
    than one compressed chunk and ``CHUNK`` decompressed bytes at a time (a small input that
    decompresses to gigabytes is taken a piece at a time)."""
    stats = Measure()
    decompressor = bz2.BZ2Decompressor()
    for chunk in chunks:
        stats.update(decompressor.decompress(chunk, max_length=CHUNK))
        while not decompressor.eof and decompressor.needs_input is False:
            stats.update(decompressor.decompress(b"", max_length=CHUNK))
    if not decompressor.eof:
        raise ValueError("the compressed stream ends early")
    return stats.result()


def run(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    ctx: RunContext,
    index: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
    started: float | None = None,
) -> dict[str, Any]:
    """Process shard ``index``; its done record carries the child's seconds when ``started``
    (a ``time.monotonic()``) is given, for JobE's summary."""
    cpu_index = get_json(s3, ctx.cpu_results_bucket, contract.cpu_index_key(ctx.run_id, index))

    def process(entry: dict[str, Any]) -> dict[str, Any]:
        try:
            with reporting(f"GetObject {s3_url(ctx.cpu_results_bucket, entry['result_key'])}"):
                stream = s3.get_object(Bucket=ctx.cpu_results_bucket, Key=entry["result_key"])
                stats = measure_compressed(stream["Body"].iter_chunks(CHUNK))
        except (OSError, ValueError, EOFError) as error:
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

    items = in_threads(process, cpu_index["objects"], threads=THREADS)
    write_items(dynamodb, ctx.metadata_table, items, sleep=sleep)
    record: dict[str, Any] = {
        "run_id": ctx.run_id,
        "shard": index,
        "keys": sorted(e["key"] for e in cpu_index["objects"]),
        contract.READ_RECORD: cpu_index,
    }
    if started is not None:
        record["seconds"] = round(time.monotonic() - started, 3)
    put_json(s3, ctx.memory_results_bucket, contract.memory_index_key(ctx.run_id, index), record)
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
        return run(make_client("s3"), make_client("dynamodb"), ctx, index, started=started)

    return run_main("JobC", work)


if __name__ == "__main__":
    raise SystemExit(main())
