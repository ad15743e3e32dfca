"""The step runner: everything around a step but the step itself.

For each object of a stage it stages the input to local disk (a pinned, streamed read), calls
the step in a worker process (a Python function or a command: see :mod:`.workers`), keeps
what the step wrote and returned, and records the object as done or rejected. A step that
raises, a command that exits non-zero, a step past its ``object_timeout`` and a step that
kills its worker reject that object with the reason; a transient failure
(:class:`pipeline.steps.TransientStepError`, or exit code 75) fails the whole child with the
transient exit code, which its retry strategy retries.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from pipeline import contract
from pipeline.jobs.aws_calls import JobError
from pipeline.jobs.bucket_io import put_json
from pipeline.jobs.run_context import RunContext
from pipeline.jobs.step_calls import (
    FACTS_LIMIT,
    ObjectRejectedError,
    checked_mapping,
    run_command,
)
from pipeline.jobs.workers import StepWorkers
from pipeline.steps import ObjectRef, Step

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "FACTS_LIMIT",
    "ObjectRejectedError",
    "StepCaller",
    "checked_mapping",
    "run_command",
]

CHUNK = 1024 * 1024
MULTIPART_THRESHOLD = 8 * 1024 * 1024
POOL_THRESHOLD = 16 * 1024 * 1024
"""Below this many bytes in a shard, a Python step gets one worker: starting more
interpreters costs more than a few megabytes of work."""
TRANSFER_CONFIG = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, max_concurrency=4)


def load_step(variable: str = contract.STEP) -> Step:
    """The job's step, from its environment (the job definition sets it)."""
    raw = os.environ.get(variable, "")
    if not raw:
        raise JobError(f"environment variable {variable} is not set; the job definition sets it")
    try:
        return Step.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as error:
        raise JobError(f"environment variable {variable} is not a step: {error}") from None


# --- calling a step ---------------------------------------------------------------------------


class StepCaller:
    """Calls one step on one staged object, in a worker process (see
    :mod:`pipeline.jobs.workers`): at most ``workers`` objects at once, each held to the
    step's ``object_timeout``; a worker that dies or times out rejects its object only.
    ``stage`` (``cpu``, ``memory``) names the step in the job's log."""

    def __init__(self, step: Step, *, workers: int, stage: str = "cpu") -> None:
        self.step = step
        self.workers = StepWorkers(step, workers=workers, stage=stage)

    def __call__(self, source: Path, target: Path, obj: ObjectRef) -> Mapping[str, Any] | None:
        return self.workers.call(source, target, obj)

    def close(self) -> None:
        self.workers.close()


# --- staging ----------------------------------------------------------------------------------


def download(s3: S3Client, bucket: str, key: str, etag: str, path: Path) -> None:
    """Stream an object to ``path`` exactly as it was listed: one GET that carries ``IfMatch``
    with the listed ETag, so an object overwritten since fails with PreconditionFailed instead
    of being processed in its new form. Whatever the size, a single streamed GET: boto3's
    managed transfer refuses ``IfMatch`` as an extra argument, and without it the ranged GETs
    could not be pinned to the version JobA listed."""
    pinned = {"IfMatch": f'"{etag}"'} if etag else {}
    try:
        body = (
            s3.get_object(Bucket=bucket, Key=key, IfMatch=pinned["IfMatch"])
            if pinned
            else s3.get_object(Bucket=bucket, Key=key)
        )["Body"]
        with path.open("wb") as target:
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


def upload(s3: S3Client, path: Path, bucket: str, key: str) -> int:
    """Keep a step's output; returns its size. Large ones through boto3's managed transfer
    (multipart, parallel parts); below its threshold, one PutObject."""
    size = path.stat().st_size
    if size >= MULTIPART_THRESHOLD:
        s3.upload_file(str(path), bucket, key, Config=TRANSFER_CONFIG)
        return size
    with path.open("rb") as body:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return size


def scratch_slots(largest: int, free: int, wanted: int) -> int:
    """How many objects may be in flight at once: each needs its input and its output on
    disk (about twice the object, for most steps), within 80% of the free scratch space."""
    if largest <= 0:
        return wanted
    slots = int(free * 0.8) // (2 * largest)
    if slots < 1:
        raise JobError(
            f"the largest object of this shard ({largest:,} bytes) needs about "
            f"{2 * largest:,} bytes of scratch space and {free:,} are free; scratch is a "
            "tmpfs of half the job's memory: raise the job's memory (job_overrides "
            "memory_mib), or reject objects this large (max_object_bytes)"
        )
    return min(wanted, slots)


@dataclass(frozen=True)
class Staged:
    """An object's files in the scratch folder, removed when its turn is over."""

    source: Path
    target: Path

    def remove(self) -> None:
        for path in (self.source, self.target):
            path.unlink(missing_ok=True)


def for_each(
    items: Sequence[Any],
    work: Callable[[int, Any, Staged], dict[str, Any]],
    *,
    scratch: Path,
    threads: int,
) -> list[dict[str, Any]]:
    """``work(number, item, staged)`` for each item on I/O threads, each with a pair of
    scratch files removed after it; the results in the items' order."""

    def one(numbered: tuple[int, Any]) -> dict[str, Any]:
        number, item = numbered
        staged = Staged(scratch / f"{number}.in", scratch / f"{number}.out")
        try:
            return work(number, item, staged)
        finally:
            staged.remove()

    numbered = list(enumerate(items))
    if len(numbered) <= 1 or threads <= 1:
        return [one(n) for n in numbered]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, numbered))


def keep_record(
    s3: S3Client,
    bucket: str,
    key: str,
    *,
    ctx: RunContext,
    index: int,
    step: Step,
    entries: list[dict[str, Any]],
    read: dict[str, Any],
    seconds: float | None,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Write a stage child's record: its entries in key order, the record it read (for
    JobD's checks), ``extra`` fields, and, when known, its seconds (for JobE's summary).
    Returns the entries done, those not rejected."""
    entries.sort(key=lambda e: e["key"])
    record: dict[str, Any] = {
        "run_id": ctx.run_id,
        "shard": index,
        "step": step.label,
        "objects": entries,
        contract.READ_RECORD: read,
        **(extra or {}),
    }
    if seconds is not None:
        record["seconds"] = round(seconds, 3)
    put_json(s3, bucket, key, record)
    return [e for e in entries if "rejected" not in e]


def free_space(folder: Path) -> int:
    return shutil.disk_usage(folder).free
