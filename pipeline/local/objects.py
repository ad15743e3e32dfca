"""Many S3 objects at once, without a round trip each: the local services put a run's inputs
into BucketA in their own process, and hand a run's outputs back in batches.

Both go through S3's REST API as moto serves it (a PUT or GET of ``/BUCKET/KEY`` handed to the
services' application in this process), so what they write is journaled and replayed like any
client's request; they skip the HTTP round trip and botocore's request building, which are
most of a small object's cost.

A batch of objects travels in one answer (``POST /_pipeline/objects`` with the bucket and
keys as JSON, signed like every request): for each object found, in the order asked, a JSON
line ``{"key", "length"}``, then its body and a newline. The reader never takes a key for a
path: what to call each copy is the caller's decision.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from pipeline.local.batch.in_process import WsgiApp, call_app

OBJECTS_PATH = "/_pipeline/objects"
BATCH_BYTES = 32 * 1024 * 1024
"""The most a batch of objects holds (a larger object travels alone)."""
BATCH_OBJECTS = 1000


def s3_environ(
    method: str, bucket: str, key: str, *, region: str, access_key_id: str
) -> dict[str, Any]:
    """The WSGI environ of an S3 request for ``/bucket/key``, as a client signing for S3 in
    ``region`` sends it: what the services' application routes and journals by (the
    signature's scope; the door in front of it, which checks signatures, is not on this
    path)."""
    day = datetime.now(UTC).strftime("%Y%m%d")
    path = f"/{bucket}/{key}".encode()
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path.decode("latin-1"),  # as a WSGI server hands a decoded path on
        "QUERY_STRING": "",
        "HTTP_HOST": "localhost",
        "HTTP_AUTHORIZATION": (
            f"AWS4-HMAC-SHA256 Credential={access_key_id}/{day}/{region}/s3/aws4_request, "
            "SignedHeaders=host, Signature=0"
        ),
        "HTTP_X_AMZ_CONTENT_SHA256": "UNSIGNED-PAYLOAD",
        "CONTENT_TYPE": "application/octet-stream",
    }


def put_objects(
    app: WsgiApp,
    bucket: str,
    objects: Mapping[str, bytes],
    *,
    region: str,
    access_key_id: str,
    progress: Callable[[int], None] = lambda _done: None,
) -> None:
    """PUT each of ``objects`` (key -> body) into ``bucket`` through ``app``; ``progress(n)``
    is told after each object. An object S3 refuses raises, naming its key."""
    for done, (key, body) in enumerate(objects.items(), start=1):
        environ = s3_environ("PUT", bucket, key, region=region, access_key_id=access_key_id)
        status, _, answer = call_app(app, environ, body)
        if status != 200:
            raise OSError(f"S3 refused {key!r} in {bucket} ({status}): {answer[:200]!r}")
        progress(done)


def objects_answer(
    app: WsgiApp, bucket: str, keys: Iterable[str], *, region: str, access_key_id: str
) -> Iterator[bytes]:
    """The answer to a batch: each of ``keys`` found in ``bucket`` (GET through ``app``),
    framed; a key that is not there is left out."""
    for key in keys:
        environ = s3_environ("GET", bucket, key, region=region, access_key_id=access_key_id)
        status, _, body = call_app(app, environ, b"")
        if status == 200:
            yield json.dumps({"key": key, "length": len(body)}).encode() + b"\n"
            yield body + b"\n"


def batch_request(body: bytes) -> tuple[str, list[str]]:
    """(bucket, keys) of a ``POST /_pipeline/objects`` body; ValueError when it is not one."""
    asked = json.loads(body)
    if not isinstance(asked, dict):
        raise ValueError("the body must be a JSON object")
    bucket, keys = asked.get("bucket"), asked.get("keys")
    if not isinstance(bucket, str) or not isinstance(keys, list):
        raise ValueError('the body must name "bucket" (a string) and "keys" (a list)')
    if not all(isinstance(key, str) for key in keys) or len(keys) > BATCH_OBJECTS:
        raise ValueError(f'"keys" must be at most {BATCH_OBJECTS} strings')
    return bucket, keys


def read_objects(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(key, body) of each object in a batch's answer; ValueError when it is cut short or
    is not one."""
    while line := stream.readline():
        header = json.loads(line)
        key, length = header["key"], header["length"]
        if not isinstance(key, str) or not isinstance(length, int) or length < 0:
            raise ValueError(f"not an object's header: {line[:200]!r}")
        body = stream.read(length)
        if len(body) != length or stream.read(1) != b"\n":
            raise ValueError(f"the answer ends inside {key!r}")
        yield key, body


def batches(sizes: Mapping[str, int]) -> Iterator[list[str]]:
    """The keys of ``sizes`` (key -> bytes) in batches of at most :data:`BATCH_BYTES` and
    :data:`BATCH_OBJECTS` (an object larger than a batch is a batch of its own)."""
    batch: list[str] = []
    held = 0
    for key, size in sizes.items():
        if batch and (held + size > BATCH_BYTES or len(batch) >= BATCH_OBJECTS):
            yield batch
            batch, held = [], 0
        batch.append(key)
        held += size
    if batch:
        yield batch
