"""The one skeleton of every job program: read the run, do the work, record its time, end with
the contract's exit code; and the CPUs the container may use."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.jobs.aws_calls import JobError, TransientJobError, make_client
from pipeline.jobs.bucket_io import dumps, put_json
from pipeline.jobs.run_context import RunContext

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def cpu_allowance() -> int:
    """How many CPUs this container may use: the smallest of its CPU quota (cgroup v2
    ``cpu.max`` or v1 CFS quota), its CPU affinity, and ``PIPELINE_WORKERS`` if set; never
    ``os.cpu_count()`` of the host, which a container with a 1-vCPU share would overrun."""
    limits = [len(os.sched_getaffinity(0))] if hasattr(os, "sched_getaffinity") else []
    quota = _cgroup_quota()
    if quota:
        limits.append(quota)
    configured = os.environ.get(contract.WORKERS, "")
    if configured.isdigit() and int(configured) > 0:
        limits.append(int(configured))
    return max(1, min(limits)) if limits else 1


def _cgroup_quota() -> int | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return math.ceil(int(quota) / int(period))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return math.ceil(quota_us / period_us) if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def run_main(job: str, work: Callable[[], dict[str, Any] | None]) -> int:
    """Run a job program: one line on stderr and exit code 1 on failure, 0 on success."""
    started = time.monotonic()
    try:
        result = work() or {}
    except TransientJobError as error:
        print(f"{job}: transient error (retried by Batch): {error}", file=sys.stderr, flush=True)
        return contract.EXIT_TRANSIENT
    except JobError as error:
        print(f"{job}: error: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"{job}: done in {time.monotonic() - started:.2f}s {dumps(result).decode()}", flush=True)
    return 0


@dataclass
class JobRun:
    """What the skeleton hands a job program's work: the run, its clients, when it started."""

    name: str
    ctx: RunContext
    started: float
    timing_index: int | None = None
    """The child whose time is recorded, for a timed job that is an array (JobD)."""

    def client(self, service: str) -> Any:
        return make_client(service)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


def job_main(
    name: str, work: Callable[[JobRun], dict[str, Any] | None], *, timed: bool = False
) -> int:
    """The one skeleton of every job program: read the run from the environment, do the work,
    record how long it took when ``timed`` (even when it failed), and end as the contract
    says (0, 1, or the transient code), with one line about it. SIGTERM (a stop) ends it as
    Ctrl-C would, so what it holds on disk is cleaned up on the way out."""
    import signal

    started = time.monotonic()

    def stopped(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stopped)

    def run() -> dict[str, Any] | None:
        job = JobRun(name, RunContext.from_env(), started)
        try:
            return work(job)
        finally:
            if timed:
                with contextlib.suppress(JobError):
                    record_timing(make_client("s3"), job.ctx, name, job.timing_index, job.seconds)

    return run_main(name, run)


def in_threads(work: Callable[[Any], Any], items: list[Any], threads: int = 16) -> list[Any]:
    """``work`` over ``items`` on a thread pool (I/O-bound S3 calls), results in input order."""
    from concurrent.futures import ThreadPoolExecutor

    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(work, items))


def record_timing(
    s3: S3Client, ctx: RunContext, job: str, index: int | None, seconds: float
) -> None:
    """How long this job (or child) took, for JobE's summary."""
    put_json(
        s3,
        ctx.output_bucket,
        contract.timing_key(ctx.run_id, job, index),
        {"job": job, "index": index, "seconds": round(seconds, 3)},
    )
