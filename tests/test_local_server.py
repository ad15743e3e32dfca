"""The embedded AWS services' HTTP server (pipeline.local.server): what the job programs' clients
rely on from it."""

from __future__ import annotations

import http.client
import io
from collections.abc import Iterator
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from pipeline.local.server import STATS_PATH
from pipeline.local.services import LocalAws, local_aws


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with local_aws() as services:
        yield services


def test_an_empty_object_is_stored_without_waiting(aws: LocalAws) -> None:
    # GIVEN a client that gives up quickly and never retries, as a stalled server would show
    s3 = boto3.client(
        "s3",
        endpoint_url=aws.endpoint,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        region_name="us-east-1",
        config=Config(read_timeout=5, retries={"mode": "standard", "max_attempts": 1}),
    )
    bucket = aws.names["input_bucket"]
    # WHEN it puts empty bodies: botocore sends `Expect: 100-continue` with a streamed one and
    # Content-Length 0 (waitress 3.0.2 alone would answer 100 Continue, then wait for a body)
    s3.put_object(Bucket=bucket, Key="empty/bytes", Body=b"")
    s3.put_object(Bucket=bucket, Key="empty/stream", Body=io.BytesIO(b""))
    s3.put_object(Bucket=bucket, Key="one/stream", Body=io.BytesIO(b"x"))
    # THEN each is stored, at once
    assert s3.get_object(Bucket=bucket, Key="empty/stream")["ContentLength"] == 0
    assert s3.get_object(Bucket=bucket, Key="one/stream")["Body"].read() == b"x"


def test_connections_are_kept_alive(aws: LocalAws) -> None:
    # GIVEN one connection to the server
    where = urlsplit(aws.endpoint)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
    connection.connect()
    first_socket = connection.sock
    # WHEN two requests go over it
    for _ in range(2):
        connection.request("GET", STATS_PATH)
        response = connection.getresponse()
        response.read()
        # THEN neither answer closes it: a job process's requests share one connection
        assert response.status == 200
        assert response.getheader("Connection", "").lower() != "close"
        assert connection.sock is first_socket
    connection.close()
