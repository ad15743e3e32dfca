"""JobB[i]: CPU-heavy work on every object of shard i, using all the CPUs it was given.

Per object: a SHA-256 digest and bzip2 compression at its highest level, streamed from disk
to disk in a process pool sized from the container's CPU allowance. Objects move through
boto3's managed transfer (multipart, to and from temporary files), never whole in memory.
Results are keyed by the input key's digest, so a retried child overwrites its own output.
"""

from __future__ import annotations

import bz2
import hashlib
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from pipeline import contract
from pipeline.jobs.common import (
    JobError,
    RunContext,
    array_index,
    cpu_allowance,
    get_json,
    make_client,
    put_json,
    reporting,
    run_main,
    s3_url,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHUNK = 1024 * 1024
MULTIPART_THRESHOLD = 8 * 1024 * 1024
POOL_THRESHOLD = 16 * 1024 * 1024
"""Below this many bytes in a shard, the work runs in this process: starting a pool of
worker interpreters costs more than compressing a few megabytes."""
TRANSFER_CONFIG = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, max_concurrency=4)


def digest_and_compress(source: str, target: str) -> tuple[str, int, int]:
    """(sha256 hex, bytes read, bytes written); streams, so memory stays flat."""
    digest = hashlib.sha256()
    compressor = bz2.BZ2Compressor(9)
    size = 0
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(CHUNK):
            size += len(chunk)
            digest.update(chunk)
            writer.write(compressor.compress(chunk))
        writer.write(compressor.flush())
        written = writer.tell()
    return digest.hexdigest(), size, written


def download(s3: S3Client, bucket: str, key: str, size: int, etag: str, path: str) -> None:
    """Stream an object to ``path``, exactly as JobA listed it: every GET carries ``IfMatch``
    with the listed ETag, so an object overwritten since fails with PreconditionFailed instead
    of being processed in its new form. Large objects go through boto3's managed transfer
    (parallel ranged GETs); below its multipart threshold that would only add a HeadObject, as
    the size is already known from the manifest, so a single streamed GET does."""
    pinned = {"IfMatch": f'"{etag}"'} if etag else {}
    try:
        if size >= MULTIPART_THRESHOLD:
            s3.download_file(bucket, key, path, ExtraArgs=pinned, Config=TRANSFER_CONFIG)
            return
        body = (
            s3.get_object(Bucket=bucket, Key=key, IfMatch=pinned["IfMatch"])
            if pinned
            else s3.get_object(Bucket=bucket, Key=key)
        )["Body"]
        with open(path, "wb") as target:
            for chunk in body.iter_chunks(CHUNK):
                target.write(chunk)
    except ClientError as error:
        info = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if info.get("Code") in ("PreconditionFailed", "412") or status == 412:
            raise JobError(
                f"input {key!r} changed after JobA listed it (its ETag is no longer {etag}); "
                "this run processes inputs as listed, so it produces no output for it: start a "
                "new run to process the new version"
            ) from error
        raise


def upload(s3: S3Client, path: str, size: int, bucket: str, key: str) -> None:
    """Large results through boto3's managed transfer (multipart, parallel parts); below its
    multipart threshold that would be one PutObject behind a thread pool, so one PutObject."""
    if size >= MULTIPART_THRESHOLD:
        s3.upload_file(path, bucket, key, Config=TRANSFER_CONFIG)
        return
    with open(path, "rb") as body:
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def scratch_slots(largest: int, free: int, wanted: int) -> int:
    """How many objects may be in flight at once: each needs its download and its compressed
    result on disk (at most about twice the object), within 80% of the free scratch space."""
    if largest <= 0:
        return wanted
    slots = int(free * 0.8) // (2 * largest)
    if slots < 1:
        raise JobError(
            f"the largest object of this shard ({largest:,} bytes) needs about "
            f"{2 * largest:,} bytes of scratch space and {free:,} are free; give the "
            "compute environments' launch template a larger root volume"
        )
    return min(wanted, slots)


def process_shard(
    s3: S3Client, ctx: RunContext, objects: list[dict[str, Any]], workers: int
) -> list[dict[str, Any]]:
    """Download, digest, compress and upload each of ``objects``; one entry per object."""
    with tempfile.TemporaryDirectory(prefix="jobb-") as scratch, _pool(workers) as pool:
        # I/O threads feed the CPU pool; each holds one object at a time (its download and its
        # compressed result), so scratch space is bounded by threads x 2 x the largest object,
        # and the threads are as many as the free space allows.
        threads = scratch_slots(
            max((o["size"] for o in objects), default=0),
            shutil.disk_usage(scratch).free,
            max(2, workers + 1),
        )

        def process(numbered: tuple[int, dict[str, Any]]) -> dict[str, Any]:
            number, obj = numbered
            source = os.path.join(scratch, f"{number}.in")
            target = os.path.join(scratch, f"{number}.bz2")
            result_key = contract.cpu_result_key(ctx.run_id, obj["key"])
            try:
                with reporting(f"download {s3_url(ctx.input_bucket, obj['key'])}"):
                    download(
                        s3, ctx.input_bucket, obj["key"], obj["size"], obj.get("etag", ""), source
                    )
                sha256, size, compressed = pool.submit(digest_and_compress, source, target).result()
                with reporting(f"upload {s3_url(ctx.cpu_results_bucket, result_key)}"):
                    upload(s3, target, compressed, ctx.cpu_results_bucket, result_key)
            finally:
                for path in (source, target):
                    Path(path).unlink(missing_ok=True)
            return {
                "key": obj["key"],
                "size": size,
                "sha256": sha256,
                "result_key": result_key,
                "compressed_size": compressed,
            }

        if len(objects) <= 1:  # nothing to overlap: no threads to start
            entries = [process(numbered) for numbered in enumerate(objects)]
        else:
            with ThreadPoolExecutor(max_workers=threads) as io_threads:
                entries = list(io_threads.map(process, enumerate(objects)))
    return entries


def run(
    s3: S3Client, ctx: RunContext, index: int, workers: int, *, started: float | None = None
) -> dict[str, Any]:
    """Process shard ``index``; its index record carries the child's seconds when ``started``
    (a ``time.monotonic()``) is given, for JobE's summary (see ``contract.cpu_index_key``)."""
    manifest = get_json(s3, ctx.cpu_results_bucket, contract.manifest_key(ctx.run_id, index))
    objects = manifest["objects"]
    if sum(o["size"] for o in objects) < POOL_THRESHOLD:
        workers = 1
    # An empty shard (more children than objects) needs no scratch space and no workers.
    entries = process_shard(s3, ctx, objects, workers) if objects else []
    entries.sort(key=lambda e: e["key"])
    record: dict[str, Any] = {
        "run_id": ctx.run_id,
        "shard": index,
        "objects": entries,
        contract.READ_RECORD: manifest,
    }
    if started is not None:
        record["seconds"] = round(time.monotonic() - started, 3)
    put_json(s3, ctx.cpu_results_bucket, contract.cpu_index_key(ctx.run_id, index), record)
    return {
        "shard": index,
        "objects": len(entries),
        "bytes": sum(e["size"] for e in entries),
        "compressed_bytes": sum(e["compressed_size"] for e in entries),
        "workers": workers,
    }


class _InlineExecutor(Executor):
    """One worker: run in the calling thread, one task at a time (so one CPU), with no
    process to start."""

    def __init__(self) -> None:
        self._one_at_a_time = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: Future[Any] = Future()
        with self._one_at_a_time:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:  # re-raised by .result() in the caller
                future.set_exception(error)
        return future


def _pool(workers: int) -> Executor:
    if workers <= 1:
        return _InlineExecutor()
    # spawn, not fork: the I/O threads are already running when workers start.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def main() -> int:
    def work() -> dict[str, Any]:
        started = time.monotonic()
        ctx = RunContext.from_env()
        index = array_index(size=ctx.array_size)
        return run(make_client("s3"), ctx, index, cpu_allowance(), started=started)

    return run_main("JobB", work)


if __name__ == "__main__":
    raise SystemExit(main())
