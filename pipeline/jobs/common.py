"""What the five job programs share: their environment, AWS clients, S3 helpers, errors.

Jobs read only environment variables (see :mod:`pipeline.contract`) and their ``Ref::``
parameters. Clients are made in each program's ``main`` and passed to the functions that do
the work, so tests pass moto clients.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline import contract
from pipeline.batch_facts import ARRAY_INDEX_VARIABLE, JOB_ID_VARIABLE

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Transient errors (throttling, 5xx, connection resets) are retried by botocore with backoff;
# what still fails is reported with the key involved.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=32)
# Presigned links use Signature Version 4 (SigV2 links are deprecated and unsupported in newer
# regions).
S3_CONFIG = CLIENT_CONFIG.merge(Config(signature_version="s3v4"))


class JobError(Exception):
    """A failure the job reports in one line (naming the object involved) and exits 1 for."""


class TransientJobError(JobError):
    """A transient failure (throttling, 5xx, timeouts, connections) that outlived the job's own
    retries; the job exits with ``contract.EXIT_TRANSIENT`` and Batch retries the attempt."""


# Error codes AWS services use for throttling and momentary unavailability.
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)


def is_transient(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    code = error.response.get("Error", {}).get("Code", "")
    return code in _TRANSIENT_CODES or int(status) >= 500


@dataclass(frozen=True)
class RunContext:
    """The run as the environment describes it."""

    run_id: str
    array_size: int
    input_bucket: str
    cpu_results_bucket: str
    memory_results_bucket: str
    output_bucket: str
    metadata_table: str
    notification_topic_arn: str
    max_object_bytes: int = contract.DEFAULT_MAX_OBJECT_BYTES
    input_prefix: str = ""
    """Only BucketA's objects under this prefix are the run's inputs."""
    link_expiry_seconds: int = contract.DEFAULT_LINK_EXPIRY_SECONDS

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        describe_job: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> RunContext:
        """The run from the job's environment; a job submitted without the run id (a plain
        request, as the User Guide writes them) finds it with ``describe_job`` (DescribeJobs,
        by default): see :func:`run_id_of`."""
        env = os.environ if env is None else env

        def need(name: str) -> str:
            value = env.get(name, "")
            if not value:
                raise JobError(
                    f"environment variable {name} is not set; submit runs with "
                    "`python -m pipeline.submit`, which sets it"
                )
            return value

        def number(name: str, default: int) -> int:
            raw = env.get(name) or str(default)
            if not raw.isdigit() or int(raw) < 1:
                raise JobError(
                    f"environment variable {name} must be a positive whole number; got {raw!r}"
                )
            return int(raw)

        return cls(
            run_id=run_id_of(env, describe_job or _describe_job),
            array_size=number(contract.ARRAY_SIZE, 0) if need(contract.ARRAY_SIZE) else 0,
            input_bucket=need(contract.INPUT_BUCKET),
            cpu_results_bucket=need(contract.CPU_RESULTS_BUCKET),
            memory_results_bucket=need(contract.MEMORY_RESULTS_BUCKET),
            output_bucket=need(contract.OUTPUT_BUCKET),
            metadata_table=need(contract.METADATA_TABLE),
            notification_topic_arn=need(contract.NOTIFICATION_TOPIC_ARN),
            max_object_bytes=number(contract.MAX_OBJECT_BYTES, contract.DEFAULT_MAX_OBJECT_BYTES),
            input_prefix=input_prefix(env.get(contract.INPUT_PREFIX, "")),
            link_expiry_seconds=min(
                number(contract.LINK_EXPIRY_SECONDS, contract.DEFAULT_LINK_EXPIRY_SECONDS),
                contract.MAX_LINK_EXPIRY_SECONDS,
            ),
        )


MAX_CHAIN = 20
"""Most jobs followed back through ``dependsOn`` to find a plain request's run."""


def run_id_of(env: Mapping[str, str], describe_job: Callable[[str], Mapping[str, Any]]) -> str:
    """The run a job belongs to: the run id the submitter set (``PIPELINE_RUN_ID``), or, for a
    job submitted without it, the job ID of the first job of its ``dependsOn`` chain (JobA's),
    followed back from the job's own ID with DescribeJobs. Each plain run is so named after
    its JobA, and two at once never share a run id."""
    given = env.get(contract.RUN_ID, "")
    if given:
        return given
    job_id = env.get(JOB_ID_VARIABLE, "").split(":")[0]
    if not job_id:
        raise JobError(
            f"environment variable {contract.RUN_ID} is not set and this is not an AWS Batch "
            f"job (no {JOB_ID_VARIABLE}) to find the run from; submit runs with "
            "`python -m pipeline.submit`, which sets it"
        )
    for _ in range(MAX_CHAIN):
        earlier = [d.get("jobId", "") for d in describe_job(job_id).get("dependsOn") or []]
        earlier = [e for e in earlier if e]
        if not earlier:
            return job_id
        job_id = earlier[0].split(":")[0]  # an array child's ID is <parent>:<index>
    raise JobError(f"job {job_id}'s dependsOn chain is longer than {MAX_CHAIN} jobs")


def _describe_job(job_id: str) -> Mapping[str, Any]:
    """DescribeJobs of one job (the job role's batch:DescribeJobs)."""
    with reporting(
        f"DescribeJobs {job_id} (to find the run of a request without {contract.RUN_ID})"
    ):
        found = make_client("batch").describe_jobs(jobs=[job_id])["jobs"]
    if not found:
        raise JobError(f"DescribeJobs {job_id}: no such job, so its run cannot be found")
    return dict(found[0])


def input_prefix(value: str) -> str:
    try:
        return contract.check_input_prefix(value)
    except ValueError as error:
        raise JobError(f"environment variable {contract.INPUT_PREFIX}: {error}") from None


def array_index(env: Mapping[str, str] | None = None, *, size: int | None = None) -> int:
    """This child's index in the original array, checked against the array size.

    Normally ``AWS_BATCH_JOB_ARRAY_INDEX``. A re-run of only the failed children
    (``resume --failed-only``) is a smaller array, or a standard job for a single child, with
    ``PIPELINE_INDEX_MAP`` listing the original indices: child k does original index map[k].
    """
    env = os.environ if env is None else env
    raw = env.get(ARRAY_INDEX_VARIABLE, "")
    mapped = env.get(contract.INDEX_MAP, "")
    if mapped:
        try:
            originals = [int(i) for i in mapped.split(",")]
        except ValueError:
            raise JobError(f"{contract.INDEX_MAP}={mapped!r} is not a list of indices") from None
        if not raw and len(originals) == 1:
            index = originals[0]
        elif raw.isdigit() and int(raw) < len(originals):
            index = originals[int(raw)]
        else:
            raise JobError(
                f"{ARRAY_INDEX_VARIABLE}={raw!r} does not select one of {contract.INDEX_MAP}="
                f"{mapped!r}"
            )
    elif raw.isdigit():
        index = int(raw)
    else:
        raise JobError(
            f"{ARRAY_INDEX_VARIABLE} is {raw!r}; this program runs as an array child, whose "
            "index AWS Batch sets"
        )
    if size is not None and index >= size:
        raise JobError(f"array index {index} is outside the array of {size}")
    return index


_CLIENT_SETTINGS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
_clients: dict[tuple[str, tuple[str | None, ...]], Any] = {}


def make_client(service: str) -> Any:
    """A client for ``service``, made once per process and per client environment (endpoint,
    credentials, region). A process forked from one that made the same client, unused (the
    local launcher does, so that a child does not spend ~20 ms building it), gets that one:
    it holds no open connection, so the child's requests go over connections of its own."""
    import boto3

    key = (service, tuple(os.environ.get(name) for name in _CLIENT_SETTINGS))
    if key not in _clients:
        config = S3_CONFIG if service == "s3" else CLIENT_CONFIG
        _clients[key] = boto3.client(service, config=config)  # type: ignore[call-overload]
    return _clients[key]


@contextmanager
def reporting(what: str) -> Iterator[None]:
    """Turn an AWS error that retries did not cure into a JobError naming ``what``."""
    try:
        yield
    except ClientError as error:
        info = error.response.get("Error", {})
        kind = TransientJobError if is_transient(error) else JobError
        raise kind(f"{what}: {info.get('Code')}: {info.get('Message')}") from error
    except (ConnectionError, BotoCoreError) as error:
        # Connection resets, read and connect timeouts: botocore retried them already.
        kind = TransientJobError if _is_network(error) else JobError
        raise kind(f"{what}: {error}") from error


def _is_network(error: Exception) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return isinstance(error, ConnectionError | BotoConnectionError | HTTPClientError)


def s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def dumps(data: Any) -> bytes:
    """Deterministic JSON: a retried job writes byte-identical objects."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def put_json(s3: S3Client, bucket: str, key: str, data: Any) -> None:
    with reporting(f"PutObject {s3_url(bucket, key)}"):
        s3.put_object(Bucket=bucket, Key=key, Body=dumps(data), ContentType="application/json")


def create_json(s3: S3Client, bucket: str, key: str, data: Any) -> bool:
    """Write ``data`` only if no object has ``key`` (S3's conditional ``If-None-Match: *``);
    False when one has, whoever wrote it, even a moment before."""
    try:
        with reporting(f"PutObject {s3_url(bucket, key)}"):
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=dumps(data),
                ContentType="application/json",
                IfNoneMatch="*",
            )
    except JobError as error:
        cause = error.__cause__
        if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
            "PreconditionFailed",
            "412",
        ):
            return False
        raise
    return True


def get_json(s3: S3Client, bucket: str, key: str) -> Any:
    with reporting(f"GetObject {s3_url(bucket, key)}"):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        return json.loads(body)
    except ValueError as error:
        raise JobError(f"{s3_url(bucket, key)} is not valid JSON: {error}") from error


def get_json_if_exists(s3: S3Client, bucket: str, key: str) -> Any | None:
    """Like :func:`get_json`, but None when there is no such object."""
    try:
        return get_json(s3, bucket, key)
    except JobError as error:
        cause = error.__cause__
        if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
            "NoSuchKey",
            "404",
        ):
            return None
        raise


def list_objects(
    s3: S3Client, bucket: str, prefix: str = "", *, url_encoded: bool = False
) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix``, 1,000 per ListObjectsV2 call."""
    paginator = s3.get_paginator("list_objects_v2")
    extra: dict[str, Any] = {"EncodingType": "url"} if url_encoded else {}
    with reporting(f"ListObjectsV2 {s3_url(bucket, prefix)}"):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **extra):
            for obj in page.get("Contents", []):
                yield dict(obj)


def delete_prefix(s3: S3Client, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix``, 1,000 per DeleteObjects call; returns the count."""
    deleted = 0
    batch: list[Any] = []

    def flush() -> None:
        nonlocal deleted
        if not batch:
            return
        with reporting(f"DeleteObjects {s3_url(bucket, prefix)}"):
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise JobError(
                f"DeleteObjects {s3_url(bucket, first.get('Key', '?'))}: {first.get('Code')}: "
                f"{first.get('Message')}"
            )
        deleted += len(batch)
        batch.clear()

    for obj in list(list_objects(s3, bucket, prefix)):
        batch.append({"Key": obj["Key"]})
        if len(batch) == 1000:
            flush()
    flush()
    return deleted


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
