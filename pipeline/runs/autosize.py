"""A run sized to its input: how many JobB and JobC children a run gets when the user gives
no ``--array-size`` (or ``--array-size auto``), and the listing it is sized from.

The submitter lists the prefix the run will process as JobA will (ListObjectsV2, the same
rejects: :func:`pipeline.contract.check_listed`) and gives the run one child per
``objects_per_child`` objects (:data:`pipeline.spec.OBJECTS_PER_CHILD` by default, rounded
down, so that many or more per child on average), within AWS Batch's array sizes and at most
the deployed size. JobA balances its shards by bytes, largest object first into the lightest
shard (:func:`pipeline.jobs.job_a.plan_shards`): a child of large objects gets fewer of
them, and with at least as many objects as children no child is without one. Objects
written or removed between this listing and JobA's change only how many each child gets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pipeline.batch_facts import MIN_ARRAY_SIZE
from pipeline.contract import DEFAULT_MAX_OBJECT_BYTES, INPUT_PREFIX, MAX_OBJECT_BYTES, check_listed
from pipeline.errors import ServiceError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from pipeline.document import PipelineDocument

GIVEN = "given"
"""The size the user (or library caller) gave: exact."""
RESUMED = "resumed"
"""A resume: the run's own size (its shards are already written)."""
AUTO = "auto"
"""Sized to the listed input."""
DEPLOYED = "deployed"
"""The deployed size: the input was not listed (no S3 client, or BucketA is not known)."""


@dataclass(frozen=True)
class InputListing:
    """What a listing of the run's input found, counted as JobA counts it."""

    bucket: str
    prefix: str
    objects: int
    """Objects JobA will put in a shard."""
    rejected: int = 0
    """Objects JobA will reject (empty, over the size limit, markers, archived, ...)."""
    bytes: int = 0
    """The objects' total size."""
    complete: bool = True
    """False: the listing stopped once it had counted enough to size the run."""

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class InputLocation:
    """Where a run's input is, and JobA's size limit for it."""

    bucket: str
    prefix: str
    max_object_bytes: int


def input_location(
    document: PipelineDocument, *, input_prefix: str | None, max_object_bytes: int | None
) -> InputLocation | None:
    """The prefix of BucketA a run with these settings processes, as its JobA will see them
    (the run's own, else what the job definitions set, else the whole bucket and JobA's
    default limit); None when the document does not name BucketA."""
    bucket = document.resources.get("input_bucket")
    if not bucket:
        return None
    settings: Mapping[str, str] = {
        **dict(document.definition_settings),
        **dict(document.spec.jobs[0].environment),
    }
    limit = max_object_bytes
    if limit is None:
        text = settings.get(MAX_OBJECT_BYTES, "")
        limit = int(text) if text.isdigit() else DEFAULT_MAX_OBJECT_BYTES
    prefix = input_prefix if input_prefix is not None else settings.get(INPUT_PREFIX, "")
    return InputLocation(bucket, prefix, limit)


def list_input(
    s3: S3Client, location: InputLocation, *, stop_at: int | None = None
) -> InputListing:
    """Count the objects under the location's prefix as JobA will shard them: one
    ListObjectsV2 call per 1,000 keys (the permission is ``s3:ListBucket`` on the bucket).
    ``stop_at``: stop once that many are counted (more would not change the size), so a
    bucket of millions is not listed to the end before a run that JobA lists anyway."""
    objects = rejected = total = 0
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=location.prefix, EncodingType="url"
    )
    for page in _answered(pages, location):
        if stop_at is not None and objects >= stop_at:
            break
        for listed in page.get("Contents", []):
            size = int(listed.get("Size", 0))
            _, reason = check_listed(
                str(listed.get("Key", "")),
                size,
                str(listed.get("StorageClass", "STANDARD")),
                location.max_object_bytes,
            )
            if reason is None:
                objects += 1
                total += size
            else:
                rejected += 1
    complete = stop_at is None or objects < stop_at
    return InputListing(location.bucket, location.prefix, objects, rejected, total, complete)


def _answered(pages: Iterable[Any], location: InputLocation) -> Iterator[Any]:
    """The pages, or :class:`ServiceError` saying what to do when S3 refuses the listing."""
    try:
        yield from pages
    except ClientError as error:
        info = error.response.get("Error", {})
        raise ServiceError(
            f"listing s3://{location.bucket}/{location.prefix} to size the run to its input "
            f"failed ({info.get('Code')}: {info.get('Message')}): give array_size, or allow "
            "s3:ListBucket on the bucket"
        ) from None


@dataclass(frozen=True)
class SizeChoice:
    """A run's array size and why it is that size."""

    size: int
    how: str
    """:data:`GIVEN`, :data:`RESUMED`, :data:`AUTO` or :data:`DEPLOYED`."""
    deployed: int
    """The deployed size, the most an automatic size may be."""
    objects: int | None = None
    """The input's objects, when it was listed."""
    per_child: int | None = None
    """The target an automatic size used: one child per this many objects."""

    def describe(self) -> str:
        """One line: the size, and why (``array size 3: 300 objects, 100 per child on average
        (auto: a child per 100 objects, at most 10,000 deployed)``)."""
        head = f"array size {self.size:,}"
        if self.how == GIVEN:
            return f"{head}: as given"
        if self.how == RESUMED:
            return f"{head}: the run's own"
        if self.how == DEPLOYED or self.objects is None or self.per_child is None:
            return f"{head}: the deployed size (the input was not listed, so not sized to it)"
        objects = f"{self.objects:,} object{'s' * (self.objects != 1)}"
        mean = self.objects / self.size
        average = f"{mean:,.0f}" if mean.is_integer() else f"{mean:,.1f}"
        wanted = self.objects // self.per_child
        rule = "a child per " + (f"{self.per_child:,} objects" if self.per_child > 1 else "object")
        why = f"{rule}, at most {self.deployed:,} deployed"
        if wanted > self.deployed:  # (the listing may have stopped here: "at least")
            return (
                f"{head}: at least {self.objects:,} objects (auto: {rule} would make more "
                f"than the {self.deployed:,} deployed)"
            )
        if wanted < MIN_ARRAY_SIZE:
            why = (
                f"fewer than {MIN_ARRAY_SIZE * self.per_child:,} objects, and AWS Batch's "
                f"smallest array is {MIN_ARRAY_SIZE}"
            )
        return f"{head}: {objects}, {average} per child on average (auto: {why})"

    def as_json(self) -> dict[str, Any]:
        return {
            "arraySize": self.size,
            "how": self.how,
            "deployed": self.deployed,
            "objects": self.objects,
            "objectsPerChild": self.per_child,
            "reason": self.describe(),
        }


def choose_size(objects: int, *, deployed: int, per_child: int) -> SizeChoice:
    """The array size for ``objects`` inputs: one child per ``per_child`` objects (rounded
    down: that many or more per child on average), at least AWS Batch's smallest array and at
    most ``deployed``. So there are never more children than objects, and with at least
    :data:`~pipeline.batch_facts.MIN_ARRAY_SIZE` objects no child is without one; with
    fewer, the smallest array has a child with nothing to do."""
    size = min(max(objects // per_child, MIN_ARRAY_SIZE), max(deployed, MIN_ARRAY_SIZE))
    return SizeChoice(size, AUTO, deployed, objects, per_child)
