"""The job programs' reads and writes of S3 objects: deterministic JSON, conditional creates,
listings and prefix deletes, each AWS error reported with the object it concerned."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pipeline.jobs.aws_calls import JobError, reporting

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


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
