"""Who may talk to the local services: the one door in front of them on the network.

The services run jobs as commands on this machine, so a request that reaches them can run
code as the user. Every request on the listening socket must therefore:

- name the address it was sent to in ``Host``: ``127.0.0.1:PORT`` or ``localhost:PORT``,
  the port the services listen on (a page that rebinds a name of its own to 127.0.0.1
  sends its own name, and is refused);
- come from no browser: a request with an ``Origin`` header, and every ``OPTIONS``
  (a CORS preflight), is refused without CORS headers, so a page of another origin can
  neither send a request that reaches the services nor read an answer;
- carry an AWS Signature Version 4 (in ``Authorization``, or as a presigned URL's query)
  made with the services' own credentials (or with temporary ones their STS issued to a
  caller who signed with them, until those expire), checked here as AWS checks it (AWS General
  Reference, "Create a signed AWS API request"): the canonical request rebuilt from what
  arrived, the string to sign, the HMAC-SHA256 key chain, a date within 15 minutes (a
  presigned URL: within its ``X-Amz-Expires``), and a signed payload hash that matches the
  body;
- not ask for moto's own API (``/moto-api``, which resets every service) or its instance
  metadata emulation (``/latest/...``): closed whatever the signature.

A refused request is answered as AWS answers it, 403 with the service's error shape
(``UnrecognizedClientException``, ``InvalidSignatureException``, S3's
``SignatureDoesNotMatch``, ...), and reaches nothing behind the door. Clients inside the
services' own process (seeding, log shipping) call the application directly.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipeline.local.batch.in_process import WsgiApp
from pipeline.local.sigv4 import (
    Credentials,
    Issued,
    RefusedError,
    header,
    known,
    parse_signature,
    reissue,
    verify,
)

CLOSED_PATHS = ("/moto-api", "/latest/")
ACCESS_KEY_ID_ENV = "PIPELINE_LOCAL_ACCESS_KEY_ID"
SECRET_ACCESS_KEY_ENV = "PIPELINE_LOCAL_SECRET_ACCESS_KEY"


class Door:
    """A WSGI application in front of ``app`` that lets through only what the module's
    description says. ``port`` is read when a request arrives (the server picks it)."""

    def __init__(
        self,
        app: WsgiApp,
        credentials: Credentials,
        port: Callable[[], int],
        *,
        batch_region: str | None = None,
        on_refused: Callable[[str], None] = lambda _why: None,
    ) -> None:
        """``batch_region``: the one region the AWS Batch behind the door answers for; a
        Batch request signed for another is refused, rather than answered with another
        region's ARNs."""
        self.app = app
        self.batch_region = batch_region
        self.credentials = credentials
        self.port = port
        self.on_refused = on_refused
        self.issued: dict[str, Issued] = {}
        self._lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request_id = str(uuid.uuid4())
        try:
            self.admit(environ)
            # Only now the body: a request that cannot pass costs no memory for one.
            body = environ["wsgi.input"].read()
            service = self.check(environ, body)
        except RefusedError as refused:
            self.on_refused(f"{refused.code}: {escaped(refused.message)}")
            return _refusal(environ, refused, request_id, start_response)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["pipeline.signing_service"] = service
        kept: list[Any] = []

        def with_request_id(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], Any]:
            names = {name.lower() for name, _ in headers}
            if "x-amzn-requestid" not in names:
                headers = [*headers, ("x-amzn-RequestId", request_id)]
            if service == "sts":  # sent once its credentials are replaced (their length)
                kept[:] = [status, headers, exc_info]
                return lambda _data: None
            return start_response(status, headers, exc_info)  # type: ignore[no-any-return]

        answer = self.app(environ, with_request_id)
        if service != "sts":
            return answer
        try:
            payload = b"".join(answer)
        finally:
            getattr(answer, "close", lambda: None)()
        payload, issued = reissue(payload, time.time())
        with self._lock:  # what STS issued a signed caller is accepted from now on
            self.issued.update(issued)
        status, headers, exc_info = kept
        headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(payload)))], exc_info)
        return [payload]

    def admit(self, environ: Mapping[str, Any]) -> None:
        """What can be checked before the body is read: the address, no browser, no closed
        path, and a signature by a key these services know; :class:`RefusedError` if not."""
        port = self.port()
        host = (header(environ, "Host") or "").lower()
        if host not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            raise RefusedError(
                "AccessDeniedException",
                f"Host {host!r} is not these services' address (127.0.0.1:{port})",
                s3_code="AccessDenied",
            )
        if header(environ, "Origin") is not None or environ.get("REQUEST_METHOD") == "OPTIONS":
            raise RefusedError(
                "AccessDeniedException",
                "Requests from a browser are refused: the local services run commands",
                s3_code="AccessDenied",
            )
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(CLOSED_PATHS):
            raise RefusedError(
                "AccessDeniedException",
                f"{path} is not served",
                s3_code="AccessDenied",
            )
        signed = parse_signature(environ)
        if signed is not None and not known(signed.access_key_id, self.credentials):
            with self._lock:
                issued = self.issued.get(signed.access_key_id)
            if issued is None or issued.expires <= time.time():
                raise RefusedError(
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid: use the local "
                    "services' credentials (serve --json prints them)",
                    s3_code="InvalidAccessKeyId",
                )

    def check(self, environ: Mapping[str, Any], body: bytes) -> str:
        """The service the request is signed for; :class:`RefusedError` when it may not pass."""
        with self._lock:
            issued = dict(self.issued)
        signed = verify(environ, body, self.credentials, issued=issued)
        if signed.service == "batch" and self.batch_region not in (None, signed.region):
            raise RefusedError(
                "InvalidRegionException",
                f"these local services serve AWS Batch in {self.batch_region}, and the request "
                f"is signed for {signed.region}: set AWS_DEFAULT_REGION={self.batch_region}, or "
                f"start them with --region {signed.region}",
            )
        return signed.service


def escaped(text: str) -> str:
    """``text`` with every character that is not printable as its escape, for a log line:
    what a request says may hold a terminal's control sequences."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _refusal(
    environ: Mapping[str, Any],
    refused: RefusedError,
    request_id: str,
    start_response: Callable[..., Any],
) -> list[bytes]:
    """A 403 in the shape the client's protocol expects: REST-XML for S3, the query
    protocol's XML for a form-encoded ``Action`` (SNS, SQS, CloudFormation, IAM, STS), JSON
    for the JSON protocols (``X-Amz-Target``) and REST-JSON (Batch)."""
    headers = [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", refused.code)]
    content_type = header(environ, "Content-Type") or ""
    query_protocol = "x-www-form-urlencoded" in content_type or "Action=" in str(
        environ.get("QUERY_STRING", "")
    )
    if header(environ, "X-Amz-Target") is None and _claimed_service(environ) == "s3":
        body = (
            "<?xml version='1.0' encoding='UTF-8'?>\n<Error>"
            f"<Code>{refused.s3_code}</Code><Message>{_xml(refused.message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers += [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    elif header(environ, "X-Amz-Target") is None and query_protocol:
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{refused.code}</Code><Message>{_xml(refused.message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers.append(("Content-Type", "text/xml"))
    else:
        body = json.dumps({"__type": refused.code, "message": refused.message}).encode()
        headers.append(("Content-Type", "application/x-amz-json-1.1"))
    start_response("403 Forbidden", [*headers, ("Content-Length", str(len(body)))])
    return [body]


def _claimed_service(environ: Mapping[str, Any]) -> str | None:
    """The service a request says it is for, signed or not (to pick the error's shape): its
    signature's, else S3 for a request of S3's verbs with no operation in a header."""
    try:
        signed = parse_signature(environ)
    except RefusedError:
        signed = None
    if signed is not None:
        return signed.service
    if environ.get("REQUEST_METHOD") in ("GET", "PUT", "HEAD", "DELETE"):
        return "s3"
    return None


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
