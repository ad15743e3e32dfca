"""The contract between the submitter and the job programs: environment variables and the
layout of every object a run writes.

The submitter, the job programs (:mod:`pipeline.jobs`), the constructs and the local services
read these names from here, and nowhere else. Plain data and pure functions: no AWS, no
third-party imports, nothing of the library's own.
"""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import unquote_to_bytes

# --- environment ------------------------------------------------------------------------------

RUN_ID = "PIPELINE_RUN_ID"
ARRAY_SIZE = "PIPELINE_ARRAY_SIZE"
"""Number of manifest shards: JobA writes this many; JobB and JobC have this many children."""
INPUT_BUCKET = "PIPELINE_INPUT_BUCKET"
CPU_RESULTS_BUCKET = "PIPELINE_CPU_RESULTS_BUCKET"
MEMORY_RESULTS_BUCKET = "PIPELINE_MEMORY_RESULTS_BUCKET"
OUTPUT_BUCKET = "PIPELINE_OUTPUT_BUCKET"
METADATA_TABLE = "PIPELINE_METADATA_TABLE"
NOTIFICATION_TOPIC_ARN = "PIPELINE_NOTIFICATION_TOPIC_ARN"

MAX_OBJECT_BYTES = "PIPELINE_MAX_OBJECT_BYTES"
"""Objects larger than this are rejected by JobA (default :data:`DEFAULT_MAX_OBJECT_BYTES`)."""
LINK_EXPIRY_SECONDS = "PIPELINE_LINK_EXPIRY_SECONDS"
"""Lifetime of the presigned link JobE sends (default six hours, at most seven days). A link
signed with a job role's temporary credentials stops working when they expire, whatever this
says, so the default does not promise more than a task role's session usually lasts."""
WORKERS = "PIPELINE_WORKERS"
"""Optional cap on JobB's process pool; by default it is the container's CPU allowance."""

INPUT_PREFIX = "PIPELINE_INPUT_PREFIX"
"""Only BucketA's objects under this S3 prefix are the run's inputs (default: the whole
bucket). A run started by an upload lists the prefix of its :data:`READY_MARKER`."""
READY_MARKER = "_READY"
"""The object that says "the inputs under this prefix are complete": writing
``<prefix>_READY`` (``incoming/2026-11-26/_READY``, or ``_READY`` for the whole bucket)
starts a run of that prefix when the pipeline runs on upload. A marker is never an input:
JobA rejects every object so named, with that reason."""
MAX_INPUT_PREFIX_BYTES = 1024
"""An S3 key is at most 1,024 bytes, so a longer prefix could match nothing."""
INDEX_MAP = "PIPELINE_INDEX_MAP"
"""Set on a re-run of failed children only: comma-separated original indices, one per child."""
STEP = "PIPELINE_STEP"
"""The step a job runs (JobB: the CPU step, JobC: the memory step, JobE: the aggregate step),
as the JSON of :meth:`pipeline.steps.Step.as_json`; set by the job definition."""
CHECKS = "PIPELINE_CHECKS"
"""JobD: the steps' checks, a JSON list of references."""
MAX_REJECTED_SHARE = "PIPELINE_MAX_REJECTED_SHARE"
"""JobD: the share of listed objects that may be rejected before the run fails (0 to 1)."""
RETRY_REJECTED = "PIPELINE_RETRY_REJECTED"
"""Set by ``resume --rejected`` on every job it submits: the retry's token. JobB and JobC run
the steps again on their shard's rejected objects only (keeping every other entry), JobD
checks the run as it then stands, and JobE writes the summary anew (once per token)."""
RETRIED = "retried"
"""The field of a shard record's entry that a retry of the rejected objects made: its token."""
MEMORY_BEFORE = "memory_before"
"""The field of a retry's JobB record holding the shard's JobC entries as they were, for the
JobC after it to keep those it does not redo."""
ALLOW_EMPTY_RUNS = "PIPELINE_ALLOW_EMPTY_RUNS"
"""JobD: ``true`` lets a run that processed no object succeed (unset: such a run fails)."""

DEFAULT_MAX_OBJECT_BYTES = 5 * 1024**3
DEFAULT_LINK_EXPIRY_SECONDS = 6 * 3600
MAX_LINK_EXPIRY_SECONDS = 7 * 24 * 3600

EXIT_TRANSIENT = 75
"""A job program's exit code for a transient failure that outlived its own retries
(throttling, a 5xx, a timeout, a dropped connection): the job's retry strategy retries it
(EX_TEMPFAIL in sysexits.h). Any other non-zero exit is final."""

VALIDATION_STEPS = 10
"""JobD's checks, one per array child, run in order."""

TABLE_PARTITION_KEY = "run_id"
TABLE_SORT_KEY = "object_key"
"""One item per valid object: (run id, object key) is deterministic, so retries overwrite."""


def table_keys() -> dict[str, list[dict[str, str]]]:
    """The metadata table's keys as CreateTable takes them (``KeySchema`` and
    ``AttributeDefinitions``), for the local deployment and the tests' tables."""
    return {
        "KeySchema": [
            {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": TABLE_PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": TABLE_SORT_KEY, "AttributeType": "S"},
        ],
    }


def marker_prefix(key: str) -> str | None:
    """The input prefix a ready marker stands for (``incoming/a/_READY`` -> ``incoming/a/``,
    ``_READY`` -> ``""``), or None when ``key`` is not a marker."""
    head, slash, name = key.rpartition("/")
    if name != READY_MARKER:
        return None
    return head + slash


def check_input_prefix(prefix: str) -> str:
    """The one rule for an input prefix, applied by the submitter and by JobA."""
    if len(prefix.encode("utf-8")) > MAX_INPUT_PREFIX_BYTES:
        raise ValueError(
            f"the input prefix is {len(prefix.encode('utf-8')):,} bytes; S3 keys are at most "
            f"{MAX_INPUT_PREFIX_BYTES:,}, so give a shorter prefix"
        )
    if marker_prefix(prefix) is not None:
        raise ValueError(
            f"the input prefix {prefix!r} names a ready marker; give the folder it marks "
            f"({marker_prefix(prefix)!r})"
        )
    return prefix


ARCHIVED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
"""Storage classes whose objects must be restored before they can be read."""


def check_listed(
    raw_key: str, size: int, storage_class: str, max_bytes: int
) -> tuple[str, str | None]:
    """(key as text, reason to reject or None): the one rule for which listed objects of
    BucketA are a run's inputs, applied by JobA and by the submitter when it sizes a run to
    its input. ``raw_key`` is URL-encoded, as ListObjectsV2 returns it with EncodingType=url,
    so keys that are not valid UTF-8 can be told apart."""
    raw = unquote_to_bytes(raw_key)
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw_key, "key is not valid UTF-8"
    return key, rejection(key, size, storage_class, max_bytes)


def rejection(key: str, size: int, storage_class: str, max_bytes: int) -> str | None:
    """Why JobA rejects the object ``key`` (text) as listed, or None for an input."""
    if key.endswith("/"):
        return "directory marker, not an object"
    if marker_prefix(key) is not None:
        return f"ready marker, not an input ({READY_MARKER})"
    if size == 0:
        return "empty object (0 bytes)"
    if size > max_bytes:
        return f"larger than the {max_bytes:,}-byte limit ({size:,} bytes)"
    if storage_class in ARCHIVED_CLASSES:
        return f"in archived storage class {storage_class}; restore it first"
    return None


# --- parameters ---------------------------------------------------------------------------------

# Bucket names as S3 accepts them today (3-63 lowercase letters, digits, '.', '-'), and the
# legacy names older us-east-1 buckets may still have (up to 255 characters, with capitals and
# underscores), so a workflow's `s3://JobD-Output-Bucket` is a name, not an error.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


def source_bucket_name(url: str) -> str:
    """The bucket named by JobE's SourceBucket parameter, ``s3://bucket``: the one rule the
    CLI (before anything is submitted) and JobE (when it runs) apply. JobE reads the run's
    report under ``runs/<run-id>/`` in that bucket, so a prefix is refused by both."""
    if not url.startswith("s3://"):
        raise ValueError(
            f"SourceBucket must be an s3:// URL like s3://my-output-bucket; got {url!r}"
        )
    name, slash, rest = url[len("s3://") :].partition("/")
    if slash and rest:
        raise ValueError(
            f"SourceBucket names a bucket, not a prefix (JobE reads runs/<run-id>/ in it); "
            f"use s3://{name}, got {url!r}"
        )
    if not _BUCKET.fullmatch(name) or ".." in name:
        raise ValueError(
            f"SourceBucket {url!r} does not name an S3 bucket (3-255 letters, digits, '.', '-' "
            "or '_', starting and ending with a letter or digit)"
        )
    return name


# --- object layout ------------------------------------------------------------------------------
# Every object a run writes lives under runs/<run-id>/ in the pipeline's buckets; BucketA (the
# input) is only read.

RUN_PREFIX_PATTERN = "runs/*"


def run_prefix(run_id: str) -> str:
    return f"runs/{run_id}/"


def key_digest(object_key: str) -> str:
    """A fixed-length, filesystem- and URL-safe name for an input key (which may hold spaces,
    unicode or slashes), used to name its results."""
    return hashlib.sha256(object_key.encode("utf-8")).hexdigest()[:32]


def manifest_key(run_id: str, shard: int) -> str:
    """BucketB: the input objects of shard ``shard`` (written by JobA)."""
    return f"{manifests_prefix(run_id)}{shard:05d}.json"


def manifests_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}manifest/"


def listing_key(run_id: str) -> str:
    """Output bucket: JobA's account of the listing (counts, bytes, shard sizes)."""
    return f"{run_prefix(run_id)}listing.json"


def listing_rejects_key(run_id: str) -> str:
    """Output bucket: the objects JobA rejected when it listed them, each with its reason."""
    return f"{run_prefix(run_id)}listing-rejects.json"


def rejects_key(run_id: str) -> str:
    """Output bucket: every object the run rejected (JobA's, and those a step rejected), each
    with its reason and stage; written by JobE."""
    return f"{run_prefix(run_id)}rejects.json"


def cpu_result_key(run_id: str, object_key: str) -> str:
    """BucketB: the CPU step's result for one input object."""
    return f"{run_prefix(run_id)}cpu/{key_digest(object_key)}"


def cpu_index_key(run_id: str, shard: int) -> str:
    """BucketB: JobB's record of shard ``shard`` (digest and sizes per object, and the
    child's seconds: JobB and JobC keep their timings in the records they write anyway, and
    JobE sums them from JobD's shard view, instead of a timing object per child each way).
    It carries the manifest JobB read, as read, under :data:`READ_RECORD`."""
    return f"{cpu_indexes_prefix(run_id)}{shard:05d}.json"


def cpu_indexes_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}cpu-index/"


READ_RECORD = "read"
"""The field of a shard record that holds, unchanged, the record its writer read: JobB's index
holds the manifest, JobC's record holds JobB's index (and so the manifest too). JobD reads
the JobC records only, and knows each copy for the stored object when the MD5 of its bytes
(the pipeline's one serialization, ``pipeline.jobs.bucket_io.dumps``) is the stored object's ETag,
which it lists. The S3 API Reference (Object, ETag): "Objects created by the PUT Object, POST
Object, or Copy operation, or through the AWS Management Console, and are encrypted by SSE-S3
or plaintext, have ETags that are an MD5 digest of their object data"; BucketB and BucketC
are SSE-S3 and the records are single PutObjects. A copy that does not match (the object
changed since, or a bucket with another encryption) is read from S3 instead."""


def memory_output_key(run_id: str, object_key: str) -> str:
    """BucketC: the memory step's output for one input object."""
    return f"{run_prefix(run_id)}objects/{key_digest(object_key)}"


def memory_index_key(run_id: str, shard: int) -> str:
    """BucketC: JobC's record that shard ``shard`` is done (and the child's seconds, and
    JobB's index as read, under :data:`READ_RECORD`)."""
    return f"{run_prefix(run_id)}memory-index/{shard:05d}.json"


def shard_view_key(run_id: str, validation_job_id: str) -> str:
    """BucketB: every shard's manifest, JobB index and JobC record in one object, written by
    the first of JobD's checks and read by the nine after it (instead of 3 x N reads each);
    named by the JobD job, so a resubmitted JobD reads the shards afresh."""
    return f"{shard_views_prefix(run_id)}{validation_job_id}.json"


def report_key(run_id: str, step: int) -> str:
    """Output bucket: the result of JobD's check ``step``."""
    return f"{run_prefix(run_id)}report/check-{step:02d}.json"


def summary_key(run_id: str) -> str:
    """Output bucket: JobE's summary of the run, the object the notification links to."""
    return f"{run_prefix(run_id)}summary.json"


def notified_key(run_id: str, retry: str = "") -> str:
    """Output bucket: written once JobE's notification was published, so a retried or
    re-run JobE does not send it again (one per retry of the rejected objects)."""
    return f"{run_prefix(run_id)}notified{'-' + retry if retry else ''}.json"


def shard_views_prefix(run_id: str) -> str:
    """BucketB: where the shard views of a run's JobD jobs are (see :func:`shard_view_key`)."""
    return f"{run_prefix(run_id)}shard-view/"


def timing_key(run_id: str, job: str, index: int | None) -> str:
    """Output bucket: how long one job (or child) took; kept apart from the outputs so those
    stay byte-identical when a child runs twice."""
    suffix = "" if index is None else f"-{index:05d}"
    return f"{run_prefix(run_id)}timings/{job}{suffix}.json"


# --- what a job's log says of an object a step is slow on ----------------------------------------
# The runner writes these lines; ``status`` and the watch read them back (the last ones of a
# running child's log) to say which object a long-running child is on.

SLOW_OBJECT_AFTER_SECONDS = 60
"""An object a step has been on this long is named in the job's log, and then in progress."""
_SLOW_OBJECT = re.compile(r"^(\w+) step: on (\".*\") since (\d+(?:\.\d+)?) \(")
_OBJECT_DONE = re.compile(r"^(\w+) step: done with (\".*\") after ")


def slow_object_line(stage: str, key: str, since: float, seconds: float) -> str:
    """The runner's line for an object its step has been on since ``since`` (epoch seconds)."""
    return f"{stage} step: on {json.dumps(key)} since {since:.0f} ({seconds:.0f} s so far)"


def object_done_line(stage: str, key: str, seconds: float) -> str:
    """The runner's line when an object it named as slow is done (or rejected)."""
    return f"{stage} step: done with {json.dumps(key)} after {seconds:.0f} s"


def slow_object(lines: list[str]) -> tuple[str, str, float] | None:
    """(stage, key, since) of the object a log's lines last named as slow and not yet done,
    or None."""
    done: set[str] = set()
    for line in reversed(lines):
        text = line.strip()
        finished = _OBJECT_DONE.match(text)
        if finished:
            done.add(finished.group(2))
            continue
        slow = _SLOW_OBJECT.match(text)
        if slow and slow.group(2) not in done:
            return slow.group(1), str(json.loads(slow.group(2))), float(slow.group(3))
    return None
