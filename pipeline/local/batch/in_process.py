"""A WSGI application (the engine's :class:`.responses.BatchService`, or any other) behind a
boto3 client in the same process, with no socket: botocore builds, signs and parses each
request as it would for AWS, and the ``before-send`` event hands it to the application
instead of the network. What a caller driving the engine in-process uses, and what the local
services use to talk to their own parts.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

if TYPE_CHECKING:
    from botocore.awsrequest import AWSResponse

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
IN_PROCESS_ENDPOINT = "http://localhost"
IN_PROCESS = "in-process"
"""The ``unique_id`` of the ``before-send`` handler :func:`in_process_clients` registers."""


def call_app(
    app: WsgiApp, environ: Mapping[str, Any], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """Call a WSGI application in this process; (status code, headers, body)."""
    full: dict[str, Any] = {
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        **environ,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
    }
    status: list[str] = []
    headers: dict[str, str] = {}

    def start_response(
        line: str, given: list[tuple[str, str]], _exc_info: Any = None
    ) -> Callable[[bytes], Any]:
        status.append(line)
        headers.update(given)
        return lambda _data: None

    answered = app(full, start_response)
    try:
        payload = b"".join(answered)
    finally:
        getattr(answered, "close", lambda: None)()
    return int(status[0].split(" ", 1)[0]), headers, payload


class _Body:
    """A response body with the two ways botocore reads one."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data

    def read(self, *_: Any) -> bytes:
        data, self.data = self.data, b""
        return data


def answer(url: str, status: int, headers: Mapping[str, str], body: bytes) -> AWSResponse:
    """An HTTP answer made in this process, for a botocore ``before-send`` handler to return
    in place of one from the network."""
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    answered = HTTPHeaders()
    for name, value in headers.items():
        answered[name] = value
    return AWSResponse(url, status, answered, _Body(body))


def sender(app: WsgiApp) -> Callable[..., AWSResponse]:
    """A botocore ``before-send`` handler that answers every request from ``app``."""

    def send(request: Any, **_: Any) -> AWSResponse:
        url = urlsplit(request.url)
        headers = {
            str(name): value.decode() if isinstance(value, bytes) else str(value)
            for name, value in request.headers.items()
        }
        body = request.body if isinstance(request.body, bytes) else (request.body or b"")
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        environ = {
            "REQUEST_METHOD": request.method,
            "PATH_INFO": unquote_to_bytes(url.path or "/").decode("latin-1"),  # as WSGI has it
            "QUERY_STRING": url.query,
            "SERVER_NAME": url.hostname or "localhost",
            "HTTP_HOST": url.netloc or "localhost",
            "CONTENT_TYPE": headers.get("Content-Type", ""),
            **{
                "HTTP_" + name.upper().replace("-", "_"): value
                for name, value in headers.items()
                if name.lower() not in ("content-type", "content-length", "host")
            },
        }
        status, answered_headers, payload = call_app(app, environ, body)
        return answer(request.url, status, answered_headers, payload)

    return send


def client_session(region: str, credentials: Mapping[str, str]) -> Any:
    """A boto3 session signing with ``credentials`` (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``): one for many clients, which then share what botocore loads."""
    import boto3  # lazy: the engine serves HTTP without importing boto3

    return boto3.Session(
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        region_name=region,
    )


def in_process_clients(
    app: WsgiApp,
    services: Sequence[str],
    *,
    region: str = "",
    credentials: Mapping[str, str] | None = None,
    session: Any = None,
    config: Any = None,
) -> dict[str, Any]:
    """boto3 clients of ``services`` whose requests ``app`` answers in this process, made by
    ``session`` or, without one, by a session of ``region`` and ``credentials``."""
    if session is None:
        assert credentials is not None, "give a session, or a region and credentials"
        session = client_session(region, credentials)
    clients = {}
    for service in services:
        client = session.client(
            service,
            endpoint_url=IN_PROCESS_ENDPOINT,
            config=config,
        )
        client.meta.events.register_first("before-send", sender(app), unique_id=IN_PROCESS)
        clients[service] = client
    return clients
