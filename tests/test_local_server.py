"""The embedded AWS services' HTTP server (pipeline.local.server): what the job programs' clients
rely on from it."""

from __future__ import annotations

import http.client
import io
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from pipeline.local.server import STATS_PATH, serve
from pipeline.local.services import LocalAws, local_aws


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    with local_aws() as services:
        yield services


def _s3(aws: LocalAws, config: Config | None = None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=aws.endpoint,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        region_name="us-east-1",
        config=config,
    )


def test_an_empty_object_is_stored_without_waiting(aws: LocalAws) -> None:
    # GIVEN a client that gives up quickly and never retries, as a stalled server would show
    s3 = _s3(aws, Config(read_timeout=5, retries={"mode": "standard", "max_attempts": 1}))
    bucket = aws.names["input_bucket"]
    # WHEN it puts empty bodies: botocore sends `Expect: 100-continue` with a streamed one and
    # Content-Length 0 (a server must not then wait for a body, nor sit on its 100 Continue)
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


def test_metadata_keys_keep_their_underscores(aws: LocalAws) -> None:
    # GIVEN an object stored with metadata keys spelled with an underscore and with a dash
    s3 = _s3(aws)
    bucket = aws.names["input_bucket"]
    metadata = {"my_key": "1", "other-key": "2"}
    s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata=metadata)
    # THEN both come back as spelled (moto's request handler builds the request environment)
    assert s3.head_object(Bucket=bucket, Key="meta")["Metadata"] == metadata


# --- the server itself, around a small application ---------------------------------------------


def _echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers with what it was sent; /fail raises; /sized says a Content-Length itself."""
    path = environ["PATH_INFO"]
    if path == "/fail":
        raise RuntimeError("the application failed")
    body = environ["wsgi.input"].read()
    headers = [("Content-Type", "application/octet-stream")]
    if path == "/sized":
        headers.append(("Content-Length", "1000"))  # as a HEAD answer says of its object
    start_response("200 OK", headers)
    return [f"{environ['REQUEST_METHOD']} {path} ".encode(), body]


@pytest.fixture
def echo() -> Iterator[http.client.HTTPConnection]:
    server = serve(_echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    yield connection
    connection.close()
    server.shutdown()
    server.server_close()


def _ask(
    connection: http.client.HTTPConnection, method: str, path: str, **kwargs: Any
) -> tuple[int, bytes, http.client.HTTPResponse]:
    connection.request(method, path, **kwargs)
    response = connection.getresponse()
    return response.status, response.read(), response


def test_a_chunked_body_reaches_the_application_whole(
    echo: http.client.HTTPConnection,
) -> None:
    # WHEN a body is sent in chunks, then another request follows on the same connection
    status, body, _ = _ask(echo, "PUT", "/a", body=iter([b"one,", b"two"]), encode_chunked=True)
    # THEN the application read it de-chunked, and the connection is still in step
    assert (status, body) == (200, b"PUT /a one,two")
    assert _ask(echo, "POST", "/b", body=b"three")[:2] == (200, b"POST /b three")


def test_a_head_answer_has_no_body_and_keeps_the_connection_in_step(
    echo: http.client.HTTPConnection,
) -> None:
    # WHEN a HEAD answer says a Content-Length (of the object it describes)
    status, body, response = _ask(echo, "HEAD", "/sized")
    # THEN no body follows it, so the next answer on the connection is read whole
    assert (status, body, response.getheader("Content-Length")) == (200, b"", "1000")
    assert _ask(echo, "GET", "/after")[:2] == (200, b"GET /after ")


def test_an_application_error_is_a_500_and_a_fresh_connection(
    echo: http.client.HTTPConnection,
) -> None:
    status, _, response = _ask(echo, "GET", "/fail")
    assert status == 500
    assert response.getheader("Connection") == "close"
    # a client reconnects and goes on
    echo.close()
    assert _ask(echo, "GET", "/next")[:2] == (200, b"GET /next ")


def test_a_bad_content_length_is_a_400(echo: http.client.HTTPConnection) -> None:
    status, _, _ = _ask(echo, "PUT", "/a", headers={"Content-Length": "-5"})
    assert status == 400
