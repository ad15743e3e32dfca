"""The local services on one loopback port: AWS Batch (this library's engine) and the other
services (moto), with connections kept alive, and a journal of what changed S3 and DynamoDB.

A request goes to AWS Batch when its signature names the service ``batch`` (every SDK and the
AWS CLI sign Batch requests); everything else goes to moto, which tells the services apart
the same way. ``GET /_pipeline/stats`` answers with the requests served, the seconds spent
on them and the server's CPU time; ``GET /_pipeline/health`` with ``ok``; ``POST
/_pipeline/objects`` with a batch of S3 objects (:mod:`.objects`).

How it serves: one thread per connection (werkzeug's ``ThreadedWSGIServer``), which reads a
request whole, runs the application and writes the answer, then waits for the next request
on the same connection. Each job process opens one connection per client and keeps it until
it exits. werkzeug's own handler closes every connection, because http.server cannot drain
a body the application did not read; here the body is always read first, so the stream is
drained by construction and the connection can be kept.
"""

from __future__ import annotations

import errno
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from pipeline.local.batch.journal import AppendOnlyFile
from pipeline.local.moto_app import WsgiApp, request_handler
from pipeline.local.objects import OBJECTS_PATH, batch_request, objects_answer

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

STATS_PATH = "/_pipeline/stats"
HEALTH_PATH = "/_pipeline/health"
DYNAMODB_WRITES = frozenset(
    {
        "PutItem",
        "BatchWriteItem",
        "UpdateItem",
        "DeleteItem",
        "TransactWriteItems",
        "CreateTable",
        "DeleteTable",
        "UpdateTable",
    }
)
IDLE_SECONDS = 60
"""How long a connection may wait between requests (or within one) before it is closed."""
MAX_CONNECTIONS = 1024
LISTEN_BACKLOG = 128
"""Connections the kernel holds before the server accepts them (werkzeug's own figure)."""
"""The most connections served at once (or half the open-file limit, if lower)."""
_KEPT_ENVIRON = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "SERVER_NAME")


def credential_scope(environ: dict[str, Any]) -> list[str]:
    """The parts of a SigV4 request's credential (header or presigned URL): access key id,
    day, region, service, ``aws4_request``; empty when it has none."""
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    if "Credential=" in authorization:
        scope = authorization.split("Credential=", 1)[1].split(",", 1)[0]
    else:
        credential = parse_qs(str(environ.get("QUERY_STRING", ""))).get("X-Amz-Credential")
        if not credential:
            return []
        scope = credential[0]
    parts = scope.split("/")
    return parts if len(parts) >= 5 else []


def signing_service(environ: dict[str, Any]) -> str | None:
    """The service a SigV4 request is signed for (header or presigned URL), or None."""
    scope = credential_scope(environ)
    return scope[3] if scope else None


class ServiceJournal(AppendOnlyFile):
    """What changed S3 and DynamoDB, request by request, appended as it is answered: a JSON
    line (the request's method, path, query and headers) followed by its body. Replayed into a
    fresh moto, it gives back every bucket's objects and every table's items."""

    @staticmethod
    def wanted(environ: dict[str, Any], service: str | None) -> bool:
        method = environ.get("REQUEST_METHOD")
        if service == "s3":
            return method in ("PUT", "POST", "DELETE")
        if service == "dynamodb":
            target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
            return target.rsplit(".", 1)[-1] in DYNAMODB_WRITES
        return False

    def append_request(self, environ: dict[str, Any], body: bytes) -> None:
        kept: dict[str, Any] = {
            key: value
            for key, value in environ.items()
            if (key.startswith("HTTP_") or key in _KEPT_ENVIRON) and isinstance(value, str)
        }
        for key, value in environ.items():  # moto's record of header spellings
            if key.startswith("moto.") and isinstance(value, dict):
                kept[key] = value
        header = json.dumps({"environ": kept, "length": len(body)}).encode()
        self.append(header + b"\n" + body + b"\n")


def journaled_requests(path: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(environ, body) of each whole request in a service journal; a request cut short (the
    writer was killed while writing it) ends the reading."""
    if not path.exists():
        return
    data = path.read_bytes()
    position = 0
    while position < len(data):
        end = data.find(b"\n", position)
        if end < 0:
            return
        try:
            header = json.loads(data[position:end])
            length = int(header["length"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path} is damaged at byte {position}") from None
        body = data[end + 1 : end + 1 + length]
        if len(body) < length or data[end + 1 + length : end + 2 + length] != b"\n":
            return
        yield dict(header["environ"]), body
        position = end + 2 + length


class Dispatcher:
    """The services' one application: AWS Batch, moto, stats, and the S3/DynamoDB journal."""

    def __init__(self, moto: WsgiApp, batch: WsgiApp) -> None:
        self.moto = moto
        self.batch = batch
        self.journal: ServiceJournal | None = None
        self.before_logs: Callable[[], None] = lambda: None
        self.health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"}
        """What ``/_pipeline/health`` answers."""
        """Called before each CloudWatch Logs request (job logs are shipped then)."""
        self.requests = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO")
        if path == STATS_PATH:
            return self._answer(start_response, self.stats())
        if path == HEALTH_PATH:
            return self._answer(start_response, self.health())
        if path == OBJECTS_PATH:
            return self._objects(environ, start_response)
        started = time.perf_counter()
        try:
            service = signing_service(environ)
            if service == "batch":
                return list(self.batch(environ, start_response))
            if service == "logs":
                self.before_logs()
            journal = self.journal
            if journal is None or not journal.wanted(environ, service):
                return list(self.moto(environ, start_response))
            body = environ["wsgi.input"].read()
            environ["wsgi.input"] = io.BytesIO(body)
            statuses: list[str] = []

            def recording(line: str, headers: Any, exc_info: Any = None) -> Any:
                statuses.append(line)
                return start_response(line, headers, exc_info)

            answer = list(self.moto(environ, recording))
            if statuses and statuses[0][:1] == "2":
                journal.append_request(environ, body)
            return answer
        finally:
            with self._lock:
                self.requests += 1
                self.seconds += time.perf_counter() - started

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {
                "requests": self.requests,
                "seconds": self.seconds,
                "cpu_seconds": time.process_time(),
            }

    def _objects(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """A batch of S3 objects in one answer, read as the caller's S3 GETs would be."""
        if environ.get("REQUEST_METHOD") != "POST":
            return self._answer(
                start_response, {"message": "POST a batch"}, "405 Method Not Allowed"
            )
        try:
            bucket, keys = batch_request(environ["wsgi.input"].read())
        except ValueError as error:
            return self._answer(start_response, {"message": str(error)}, "400 Bad Request")
        access_key_id, _, region, *_ = credential_scope(environ) or ["", "", ""]
        answer = objects_answer(self.moto, bucket, keys, region=region, access_key_id=access_key_id)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return list(answer)

    @staticmethod
    def _answer(
        start_response: Callable[..., Any], data: dict[str, Any], status: str = "200 OK"
    ) -> list[bytes]:
        body = json.dumps(data).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [body]


class Body:
    """A request's body as the application reads it: at most ``length`` bytes of ``stream``
    (None: a chunked body, to its end); ``finished`` once it was read whole."""

    def __init__(self, stream: Any, length: int | None) -> None:
        self.stream = stream
        self.left = length
        self.finished = length == 0

    def read(self, size: int = -1) -> bytes:
        if self.finished:
            return b""
        if self.left is None:
            data = bytes(self.stream.read() if size < 0 else self.stream.read(size))
            self.finished = size < 0 or not data
            return data
        data = bytes(self.stream.read(self.left if size < 0 else min(size, self.left)))
        self.left -= len(data)
        if not data:  # the client stopped sending before the end: nothing more will come
            self.left = 0
            return b""
        self.finished = self.left == 0
        return data


def make_server(
    app: WsgiApp, port: int = 0, *, on_exhausted: Callable[[str], None] | None = None
) -> BaseWSGIServer:
    """A threaded server of ``app`` on loopback ``port`` (0: a free one), connections kept
    alive; call its ``serve_forever``. ``on_exhausted(why)`` is told when it cannot accept a
    connection for want of file descriptors (the accept loop would otherwise retry in
    silence as fast as it can)."""
    from werkzeug.serving import make_server as werkzeug_server

    class KeptAlive(request_handler()):  # type: ignore[misc]
        """moto's request handler, answering on a connection it keeps open."""

        protocol_version = "HTTP/1.1"
        timeout = IDLE_SECONDS  # a connection that says nothing this long is closed
        server_version = "array-job-pipeline-local"
        sys_version = ""
        wbufsize = -1  # status line, headers and body go out in one write
        disable_nagle_algorithm = True

        def handle_expect_100(self) -> bool:
            # With a buffered writer, `100 Continue` (botocore asks for it with a PutObject
            # body) must be sent now, or the client waits a second before sending the body.
            answered = bool(super().handle_expect_100())
            self.wfile.flush()
            return answered

        def run_wsgi(self) -> None:
            environ = self.make_environ()
            try:
                chunked = environ.pop("wsgi.input_terminated", False)
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length < 0:
                    raise ValueError(length)
            except ValueError:
                self.send_error(400, "Bad Content-Length or chunked body")
                self.close_connection = True
                return
            # The application reads the body when it wants it (the door, once a request may
            # pass). One it left unread is not drained: the connection is closed instead.
            body = Body(
                environ["wsgi.input"] if chunked else self.rfile, None if chunked else length
            )
            environ["wsgi.input"] = body
            started: list[Any] = []
            written: list[bytes] = []

            def start_response(
                status: str, headers: list[tuple[str, str]], exc_info: Any = None
            ) -> Callable[[bytes], object]:
                started[:] = [status, headers]
                return written.append

            try:
                answer: Iterable[bytes] = app(environ, start_response)
                try:
                    payload = b"".join([*written, *answer])
                finally:
                    getattr(answer, "close", lambda: None)()
                status, headers = started
            except Exception as error:  # the application failed: a 500, connection closed
                self.log_error("%s: %r", environ.get("PATH_INFO"), error)
                status, headers, payload = (
                    "500 INTERNAL SERVER ERROR",
                    [("Connection", "close")],
                    b"",
                )
            if not body.finished:
                self.close_connection = True
                headers = [*headers, ("Connection", "close")]
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            for name, value in headers:
                self.send_header(name, value)
            has_body = self.command != "HEAD" and int(code) >= 200 and int(code) not in (204, 304)
            if has_body and not any(name.lower() == "content-length" for name, _ in headers):
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if has_body:
                self.wfile.write(payload)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """No line per request: thousands nobody reads."""

    # The socket is bound here, not by werkzeug, which prints a port in use and exits the
    # process; an OSError says it in one line where the services are started.
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", port))
        listening.listen(LISTEN_BACKLOG)
    except OSError as error:
        listening.close()
        if error.errno == errno.EADDRINUSE:
            raise OSError(
                error.errno,
                f"port {port} on 127.0.0.1 is in use: give another --port, or 0 for a free one",
            ) from None
        raise
    with listening:
        server = werkzeug_server(
            "127.0.0.1",
            port,
            app,
            threaded=True,
            request_handler=KeptAlive,
            fd=listening.fileno(),
        )
    accept = server.get_request

    # Connections are capped well below the open-file limit, so that no number of them (any
    # user of the machine can open them, signed or not) takes the descriptors the journals
    # and job logs need: one over the cap is closed at once.
    import resource

    cap = min(MAX_CONNECTIONS, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2)
    open_connections = [0]
    lock = threading.Lock()
    shutdown_request = server.shutdown_request

    def get_request() -> tuple[Any, Any]:
        try:
            connection, address = accept()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE) and on_exhausted is not None:
                on_exhausted(f"cannot accept connections: {error.strerror} ({open_files()})")
                time.sleep(0.1)  # until the services stop: no busy loop meanwhile
            raise
        with lock:
            full = open_connections[0] >= cap
            open_connections[0] += not full
        if full:
            connection.close()
            raise OSError(errno.EMFILE, f"more than {cap} connections")  # dropped quietly
        return connection, address

    def closed(request: Any) -> None:
        with lock:
            open_connections[0] -= 1
        shutdown_request(request)

    server.get_request = get_request  # type: ignore[method-assign]
    server.shutdown_request = closed  # type: ignore[method-assign]
    return server


def open_files() -> str:
    """This process's open-file limit, as `ulimit -n` says it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"ulimit -n is {soft}, at most {hard}"
