"""The step runner: everything around a step but the step itself.

For each object of a stage it stages the input to local disk (a pinned, streamed read), calls
the step (a Python function, in this process or a process pool; or a command), keeps what the
step wrote and returned, and records the object as done or rejected. A step that raises, or a
command that exits non-zero, rejects its object with the message; a transient failure
(:class:`pipeline.steps.TransientStepError`, or exit code 75) fails the whole child with the
transient exit code, which its retry strategy retries.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from pipeline import contract
from pipeline.contract import EXIT_TRANSIENT
from pipeline.jobs.aws_calls import JobError, TransientJobError
from pipeline.jobs.bucket_io import put_json
from pipeline.jobs.run_context import RunContext
from pipeline.steps import ObjectRef, Step, TransientStepError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHUNK = 1024 * 1024
MULTIPART_THRESHOLD = 8 * 1024 * 1024
POOL_THRESHOLD = 16 * 1024 * 1024
"""Below this many bytes in a shard, Python steps run in this process: starting a pool of
worker interpreters costs more than a few megabytes of work."""
TRANSFER_CONFIG = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, max_concurrency=4)
FACTS_LIMIT = 64 * 1024
"""Most bytes of JSON a step may return for one object: facts and attributes are records'
and items' fields, not data."""


class ObjectRejectedError(Exception):
    """The step could not do its work on this object; the message says why."""


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


def call_python(reference: str, source: str, target: str, obj: ObjectRef) -> Any:
    """In this process or a pool's worker: the step's function on one object."""
    function = Step.python(reference).load()
    return function(Path(source), Path(target), obj)


def run_command(step: Step, source: Path, target: Path) -> Any:
    """A command step on one object. Its standard output is the output when the template has
    no ``{output}``; otherwise, a JSON object it prints is what it returns. Its standard error
    goes to a file beside the output (bounded memory whatever it prints); on a failure its
    last lines go to this job's log and its last line into the reject's reason."""
    paths = {"input": str(source), "output": str(target)}
    writes_output = "{output}" in step.label
    command: str | list[str]
    if isinstance(step.target, str):
        command = step.target.format(**{k: shlex.quote(v) for k, v in paths.items()})
    else:
        command = [argument.format(**paths) for argument in step.target]
    printed = target.with_name(target.name + ".stdout")
    errors = target.with_name(target.name + ".stderr")
    try:
        with (printed if writes_output else target).open("wb") as out, errors.open("wb") as err:
            finished = subprocess.run(
                command,
                shell=isinstance(command, str),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **dict(step.environment)},
                cwd=source.parent,
                check=False,
            )
        if finished.returncode != 0:
            tail = _tail(errors)
            for line in tail[-20:]:
                print(f"  | {line}", file=sys.stderr)
            said = tail[-1] if tail else ""
            if finished.returncode == EXIT_TRANSIENT:
                raise TransientStepError(said or "the command exited 75")
            raise ObjectRejectedError(
                f"the command exited {finished.returncode}: {said or 'no output'}"
            )
        if not target.exists():
            raise ObjectRejectedError("the command wrote no output")
        return _printed_mapping(printed) if writes_output else None
    finally:
        printed.unlink(missing_ok=True)
        errors.unlink(missing_ok=True)


def _tail(path: Path, size: int = 8192) -> list[str]:
    """The last lines of ``path`` (its last ``size`` bytes), blank ones left out."""
    with path.open("rb") as reader:
        reader.seek(max(0, path.stat().st_size - size))
        text = reader.read().decode(errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _printed_mapping(path: Path) -> Any:
    """A JSON object the command printed, if what it printed is one (and small)."""
    if path.stat().st_size > FACTS_LIMIT:
        return None
    try:
        printed = json.loads(path.read_bytes() or b"null")
    except ValueError:
        return None
    return printed if isinstance(printed, dict) else None


class StepCaller:
    """Calls one step on one staged object; Python steps in a pool of ``workers`` processes
    when there is enough work for one."""

    def __init__(self, step: Step, *, workers: int) -> None:
        self.step = step
        self.pool = _pool(workers if step.kind == "python" else 1)
        self.commands = threading.BoundedSemaphore(max(1, workers))
        """Commands at once: as many as the child has CPUs for (JobC: one)."""

    def __call__(self, source: Path, target: Path, obj: ObjectRef) -> Mapping[str, Any] | None:
        try:
            if self.step.kind == "command":
                with self.commands:
                    returned = run_command(self.step, source, target)
            else:
                future = self.pool.submit(
                    call_python, str(self.step.target), str(source), str(target), obj
                )
                returned = future.result()
        except (TransientStepError, TransientJobError) as error:
            raise TransientJobError(f"{obj.key!r}: {error}") from error
        except ObjectRejectedError:
            raise
        except Exception as error:  # the step's own failure: this object is rejected
            raise ObjectRejectedError(f"{type(error).__name__}: {error}") from error
        return checked_mapping(returned)

    def close(self) -> None:
        self.pool.shutdown()


def checked_mapping(returned: Any) -> Mapping[str, Any] | None:
    """What a step returned, if it is a small JSON mapping (or nothing)."""
    if returned is None:
        return None
    if not isinstance(returned, Mapping):
        raise ObjectRejectedError(f"the step returned a {type(returned).__name__}, not a mapping")
    try:
        size = len(json.dumps(returned, sort_keys=True))
    except (TypeError, ValueError) as error:
        raise ObjectRejectedError(f"the step returned what JSON cannot hold: {error}") from None
    if size > FACTS_LIMIT:
        raise ObjectRejectedError(
            f"the step returned {size:,} bytes of JSON; at most {FACTS_LIMIT:,}"
        )
    return dict(returned)


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
) -> list[dict[str, Any]]:
    """Write a stage child's record: its entries in key order, the record it read (for
    JobD's checks) and, when known, its seconds (for JobE's summary). Returns the entries
    done, those not rejected."""
    entries.sort(key=lambda e: e["key"])
    record: dict[str, Any] = {
        "run_id": ctx.run_id,
        "shard": index,
        "step": step.label,
        "objects": entries,
        contract.READ_RECORD: read,
    }
    if seconds is not None:
        record["seconds"] = round(seconds, 3)
    put_json(s3, bucket, key, record)
    return [e for e in entries if "rejected" not in e]


def free_space(folder: Path) -> int:
    return shutil.disk_usage(folder).free
