"""The local services' HTTP server (pipeline.local.server) and their state folder: what the
job programs' clients rely on from the server, and what survives the services."""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from pipeline.local import server as server_module
from pipeline.local.deployment import resource_names
from pipeline.local.server import STATS_PATH, make_server
from pipeline.local.services import LocalServices

pytestmark = pytest.mark.slow  # each module starts the services (moto) in this process


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalServices]:
    services = LocalServices(with_pipeline=True, inputs={})
    services.start()
    try:
        yield services
    finally:
        services.stop()


def _s3(aws: LocalServices, config: Config | None = None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=aws.endpoint,
        aws_access_key_id=aws.credentials.access_key_id,
        aws_secret_access_key=aws.credentials.secret_access_key,
        region_name="us-east-1",
        config=config,
    )


def test_an_empty_object_is_stored_without_waiting(aws: LocalServices) -> None:
    # GIVEN a client that gives up quickly and never retries, as a stalled server would show
    s3 = _s3(aws, Config(read_timeout=5, retries={"mode": "standard", "max_attempts": 1}))
    bucket = resource_names()["input_bucket"]
    # WHEN it puts empty bodies: botocore sends `Expect: 100-continue` with a streamed one and
    # Content-Length 0 (a server must not then wait for a body, nor sit on its 100 Continue)
    s3.put_object(Bucket=bucket, Key="empty/bytes", Body=b"")
    s3.put_object(Bucket=bucket, Key="empty/stream", Body=io.BytesIO(b""))
    s3.put_object(Bucket=bucket, Key="one/stream", Body=io.BytesIO(b"x"))
    # THEN each is stored, at once
    assert s3.get_object(Bucket=bucket, Key="empty/stream")["ContentLength"] == 0
    assert s3.get_object(Bucket=bucket, Key="one/stream")["Body"].read() == b"x"


def test_connections_are_kept_alive(aws: LocalServices) -> None:
    # GIVEN one connection to the server
    where = urlsplit(aws.endpoint)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
    connection.connect()
    first_socket = connection.sock
    # WHEN two requests go over it
    for _ in range(2):
        connection.request("GET", STATS_PATH, headers=_signed_headers(aws, STATS_PATH))
        response = connection.getresponse()
        response.read()
        # THEN neither answer closes it: a job process's requests share one connection
        assert response.status == 200
        assert response.getheader("Connection", "").lower() != "close"
        assert connection.sock is first_socket
    connection.close()


def test_metadata_keys_keep_their_underscores(aws: LocalServices) -> None:
    # GIVEN an object stored with metadata keys spelled with an underscore and with a dash
    s3 = _s3(aws)
    bucket = resource_names()["input_bucket"]
    metadata = {"my_key": "1", "other-key": "2"}
    s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata=metadata)
    # THEN both come back as spelled (moto's request handler builds the request environment)
    assert s3.head_object(Bucket=bucket, Key="meta")["Metadata"] == metadata


# --- the server itself, around a small application ---------------------------------------------


def _echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers with what it was sent; /fail raises; /sized says a Content-Length itself;
    /refuse answers without reading the body."""
    path = environ["PATH_INFO"]
    if path == "/fail":
        raise RuntimeError("the application failed")
    body = b"" if path == "/refuse" else environ["wsgi.input"].read()
    headers = [("Content-Type", "application/octet-stream")]
    if path == "/sized":
        headers.append(("Content-Length", "1000"))  # as a HEAD answer says of its object
    start_response("200 OK", headers)
    return [f"{environ['REQUEST_METHOD']} {path} ".encode(), body]


@pytest.fixture
def echo() -> Iterator[http.client.HTTPConnection]:
    server = make_server(_echo)
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


def test_a_body_left_unread_closes_the_connection_instead_of_being_read(
    echo: http.client.HTTPConnection,
) -> None:
    # GIVEN a request that says a large body and sends only its headers
    echo.putrequest("PUT", "/refuse")
    echo.putheader("Content-Length", str(300 * 1024 * 1024))
    echo.endheaders()
    # WHEN the application answers without reading it, THEN the answer comes at once, and
    # the connection is closed rather than drained
    response = echo.getresponse()
    assert (response.status, response.getheader("Connection")) == (200, "close")


@pytest.fixture
def small_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The server with a cap of 2 connections and 1 s of idleness; its port."""
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(server_module, "IDLE_SECONDS", 1)
    server = make_server(_echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_connections_over_the_cap_are_closed_at_once(small_server: int) -> None:
    # GIVEN as many connections as the cap, each answered
    held = [http.client.HTTPConnection("127.0.0.1", small_server, timeout=10) for _ in range(2)]
    for connection in held:
        assert _ask(connection, "GET", "/held")[0] == 200
    # WHEN one more connects, THEN it is closed without an answer
    extra = http.client.HTTPConnection("127.0.0.1", small_server, timeout=10)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
        _ask(extra, "GET", "/extra")
    extra.close()
    # AND once one of the others closes, a new connection is served
    held[0].close()
    deadline = time.monotonic() + 10
    while True:
        again = http.client.HTTPConnection("127.0.0.1", small_server, timeout=10)
        try:
            assert _ask(again, "GET", "/again")[0] == 200
            break
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            assert time.monotonic() < deadline, "no connection was served after one closed"
            time.sleep(0.05)
        finally:
            again.close()
    held[1].close()


def test_a_connection_that_says_nothing_is_closed(small_server: int) -> None:
    # GIVEN a connection that sends nothing
    idle = socket.create_connection(("127.0.0.1", small_server), timeout=10)
    # THEN the server closes it after its idle time (1 s here, 60 s in use)
    started = time.monotonic()
    assert idle.recv(1) == b""
    assert 0.5 < time.monotonic() - started < 9
    idle.close()


# --- moto's parts, and the state folder ---------------------------------------------------------


def test_moto_still_assembles_its_server_from_the_parts_we_name() -> None:
    """pipeline/local/moto_app.py names moto's application and request handler as moto's own
    ThreadedMotoServer assembles them; a moto release that changes that must be noticed."""
    import inspect

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from pipeline.local import moto_app

    source = inspect.getsource(ThreadedMotoServer)
    for name in ("DomainDispatcherApplication", "create_backend_app", "MotoRequestHandler"):
        assert name in source, (
            f"moto no longer builds ThreadedMotoServer from {name}: update "
            "pipeline/local/moto_app.py to how this moto release serves its application"
        )
    assert callable(moto_app.moto_application())
    assert issubclass(moto_app.request_handler(), object)


def test_buckets_and_tables_come_back_from_the_state_folder(tmp_path: Path) -> None:
    # GIVEN services on a state folder, with an object, an item and a job
    names = resource_names()
    first = LocalServices(state_dir=tmp_path, with_pipeline=True, inputs={"in/a.txt": b"data"})
    first.start()
    try:
        s3 = _s3(first)
        s3.put_object(Bucket=names["output_bucket"], Key="runs/x/kept.json", Body=b"{}")
        s3.delete_object(Bucket=names["input_bucket"], Key="in/a.txt")
        s3.put_object(Bucket=names["input_bucket"], Key="in/b.txt", Body=b"more")
        dynamodb = _client(first, "dynamodb")
        dynamodb.put_item(
            TableName=names["metadata_table"],
            Item={"run_id": {"S": "x"}, "object_key": {"S": "k"}, "size": {"N": "1"}},
        )
    finally:
        first.stop()
    # WHEN services start again on it
    second = LocalServices(state_dir=tmp_path, with_pipeline=True, inputs={"in/a.txt": b"data"})
    second.start()
    try:
        s3 = _s3(second)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=names["input_bucket"])["Contents"]]
        body = s3.get_object(Bucket=names["output_bucket"], Key="runs/x/kept.json")["Body"]
        item = _client(second, "dynamodb").get_item(
            TableName=names["metadata_table"],
            Key={"run_id": {"S": "x"}, "object_key": {"S": "k"}},
        )["Item"]
    finally:
        second.stop()
    # THEN every change is there, in order, and the inputs were not seeded twice
    assert keys == ["in/b.txt"]
    assert body.read() == b"{}"
    assert item["size"] == {"N": "1"}
    assert not second.fresh


def test_one_state_folder_is_served_by_one_services_at_a_time(tmp_path: Path) -> None:
    from pipeline.local.services import StateInUseError

    first = LocalServices(state_dir=tmp_path)
    first.start()
    try:
        with pytest.raises(StateInUseError, match="in use by another command"):
            LocalServices(state_dir=tmp_path).start()
    finally:
        first.stop()


def _signed_headers(aws: LocalServices, path: str) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=aws.endpoint + path)
    credentials = Credentials(aws.credentials.access_key_id, aws.credentials.secret_access_key)
    SigV4Auth(credentials, "batch", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def _client(aws: LocalServices, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=aws.endpoint,
        aws_access_key_id=aws.credentials.access_key_id,
        aws_secret_access_key=aws.credentials.secret_access_key,
        region_name="us-east-1",
    )


def test_the_pipeline_is_deployed_in_the_region_and_at_the_size_asked(tmp_path: Path) -> None:
    # GIVEN services for eu-west-1 whose pipeline has arrays of 5
    services = LocalServices(with_pipeline=True, inputs={}, region="eu-west-1", array_size=5)
    services.start()
    try:
        batch = boto3.client(
            "batch",
            endpoint_url=services.endpoint,
            aws_access_key_id=services.credentials.access_key_id,
            aws_secret_access_key=services.credentials.secret_access_key,
            region_name="eu-west-1",
        )
        definitions = batch.describe_job_definitions(
            jobDefinitionName="JobB-CPU-Intensive-Processing"
        )
        queue = batch.describe_job_queues()["jobQueues"][0]
    finally:
        services.stop()
    # THEN ARNs are the region's, and JobB's definition sets the size
    (job_b,) = definitions["jobDefinitions"]
    assert job_b["jobDefinitionArn"].startswith("arn:aws:batch:eu-west-1:")
    assert queue["jobQueueArn"].startswith("arn:aws:batch:eu-west-1:")
    environment = {e["name"]: e["value"] for e in job_b["containerProperties"]["environment"]}
    assert environment["PIPELINE_ARRAY_SIZE"] == "5"


def test_a_port_is_checked_and_one_in_use_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    def serve(port: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.local", "serve", f"--port={port}"],
            env={"PATH": "/usr/bin:/bin", "PIPELINE_LOCAL_STATE_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # a port out of range is refused (it was taken modulo 65,536, or a traceback)
    for wrong in ("99999", "-5", "abc"):
        tried = serve(wrong)
        assert (tried.returncode, tried.stdout) == (252, ""), tried.stderr
        assert tried.stderr.startswith(f"error: argument --port: '{wrong}' is not a port: give ")
    # a port in use is one line saying what to change (werkzeug printed two and exited 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        tried = serve(str(port))
    assert (tried.returncode, tried.stdout) == (252, "")
    assert tried.stderr == (
        f"error: port {port} on 127.0.0.1 is in use: give another --port, or 0 for a free one\n"
    )
