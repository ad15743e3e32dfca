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

import contextlib
import hashlib
import hmac
import json
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from pipeline.local.batch.in_process import WsgiApp

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 15 * 60
"""AWS refuses a request signed more than 15 minutes from its own clock."""
UNSIGNED_PAYLOADS = frozenset(
    {
        "UNSIGNED-PAYLOAD",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    }
)
"""``X-Amz-Content-Sha256`` values that sign the headers but not the body (S3)."""
CLOSED_PATHS = ("/moto-api", "/latest/")
ACCESS_KEY_ID_ENV = "PIPELINE_LOCAL_ACCESS_KEY_ID"
SECRET_ACCESS_KEY_ENV = "PIPELINE_LOCAL_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class Credentials:
    """The one access key the local services accept."""

    access_key_id: str
    secret_access_key: str

    @classmethod
    def random(cls) -> Credentials:
        """New credentials, as an access key looks (``AKIA`` and 16 characters) and a
        40-character secret, from the operating system's random source."""
        upper = string.ascii_uppercase + "234567"
        key = "AKIA" + "".join(secrets.choice(upper) for _ in range(16))
        return cls(key, secrets.token_urlsafe(30))

    def as_environment(self) -> dict[str, str]:
        """As AWS clients read them: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


@dataclass(frozen=True)
class Issued:
    """Temporary credentials the services' STS issued (AssumeRole, GetSessionToken, ...)."""

    secret_access_key: str
    session_token: str
    expires: float


def issued_credentials(body: bytes, now: float) -> dict[str, Issued]:
    """The temporary credentials an STS answer (query protocol XML) hands out, by access key;
    they expire when the answer says, and within 12 hours (STS's longest) whatever it says."""
    import re

    text = body.decode("utf-8", "replace")
    found: dict[str, Issued] = {}
    for block in re.findall(r"<Credentials>(.*?)</Credentials>", text, flags=re.S):
        fields = dict(re.findall(r"<(\w+)>([^<]*)</\1>", block))
        key, secret = fields.get("AccessKeyId"), fields.get("SecretAccessKey")
        if not key or not secret:
            continue
        expires = now + 12 * 3600
        with contextlib.suppress(ValueError):
            stamp = fields.get("Expiration", "").replace("Z", "+00:00")
            expires = min(expires, datetime.fromisoformat(stamp).timestamp())
        found[key] = Issued(secret, fields.get("SessionToken", ""), expires)
    return found


class RefusedError(Exception):
    """A request the door does not let through; ``code`` names why as AWS would."""

    def __init__(self, code: str, message: str, *, s3_code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.s3_code = s3_code or code
        self.message = message


@dataclass(frozen=True)
class Signed:
    """What a request's signature says of it."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    presigned: bool
    expires: int | None = None


def header(environ: Mapping[str, Any], name: str) -> str | None:
    """A request header from a WSGI environ (``Content-Type`` is ``CONTENT_TYPE``)."""
    key = name.upper().replace("-", "_")
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        value = environ.get(key)
        return str(value) if value not in (None, "") else None
    value = environ.get(f"HTTP_{key}")
    return None if value is None else str(value)


def raw_path(environ: Mapping[str, Any]) -> str:
    """The request's path as it was sent (percent-encoded), without its query."""
    uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if uri:
        path = str(uri).split("?", 1)[0]
        if "://" in path:  # an absolute-form request target
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        return path
    decoded = str(environ.get("PATH_INFO", "/"))
    return quote(decoded.encode("latin-1"), safe="/~!$&'()*+,;=:@")


def parse_signature(environ: Mapping[str, Any]) -> Signed | None:
    """The SigV4 signature of a request, from ``Authorization`` or a presigned URL's query;
    None for a request that carries none."""
    authorization = header(environ, "Authorization")
    if authorization:
        if not authorization.startswith(ALGORITHM + " "):
            raise RefusedError(
                "IncompleteSignatureException",
                f"Only {ALGORITHM} signatures are accepted",
                s3_code="AccessDenied",
            )
        fields = dict(
            part.strip().split("=", 1)
            for part in authorization[len(ALGORITHM) :].split(",")
            if "=" in part
        )
        try:
            credential = fields["Credential"]
            signed_headers = fields["SignedHeaders"]
            signature = fields["Signature"]
        except KeyError as missing:
            raise RefusedError(
                "IncompleteSignatureException",
                f"Authorization header requires {missing.args[0]}",
                s3_code="AuthorizationHeaderMalformed",
            ) from None
        amz_date = header(environ, "X-Amz-Date") or ""
        return _signed(credential, signed_headers, signature, amz_date, presigned=False)
    query = dict(parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True))
    if "X-Amz-Signature" not in query and "X-Amz-Credential" not in query:
        return None
    if query.get("X-Amz-Algorithm") != ALGORITHM:
        raise RefusedError(
            "IncompleteSignatureException",
            f"Only {ALGORITHM} presigned URLs are accepted",
            s3_code="AuthorizationQueryParametersError",
        )
    try:
        signed = _signed(
            query["X-Amz-Credential"],
            query["X-Amz-SignedHeaders"],
            query["X-Amz-Signature"],
            query["X-Amz-Date"],
            presigned=True,
        )
        expires = int(query["X-Amz-Expires"])
    except (KeyError, ValueError):
        raise RefusedError(
            "IncompleteSignatureException",
            "A presigned URL needs X-Amz-Credential, X-Amz-Date, X-Amz-Expires, "
            "X-Amz-SignedHeaders and X-Amz-Signature",
            s3_code="AuthorizationQueryParametersError",
        ) from None
    return Signed(**{**signed.__dict__, "expires": expires})


def _signed(
    credential: str, signed_headers: str, signature: str, amz_date: str, *, presigned: bool
) -> Signed:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise RefusedError(
            "IncompleteSignatureException",
            f"Credential {credential!r} is not ACCESS_KEY/DATE/REGION/SERVICE/aws4_request",
            s3_code="AuthorizationHeaderMalformed",
        )
    access_key, date, region, service, _ = parts
    return Signed(
        access_key,
        date,
        region,
        service,
        tuple(signed_headers.split(";")),
        signature,
        amz_date,
        presigned,
    )


def canonical_request(
    environ: Mapping[str, Any], signed: Signed, body: bytes, payload_hash: str
) -> str:
    """The canonical request a client signed, rebuilt from what arrived."""
    path = raw_path(environ) or "/"
    if signed.service != "s3":  # S3 signs the path as sent; the others a normalized one
        from botocore.utils import normalize_url_path

        path = quote(normalize_url_path(path), safe="/~")
    pairs = []
    for pair in str(environ.get("QUERY_STRING", "")).split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if signed.presigned and key == "X-Amz-Signature":
            continue
        pairs.append((key, value))
    query = "&".join(f"{key}={value}" for key, value in sorted(pairs))
    headers = []
    for name in signed.signed_headers:
        sent = header(environ, name)
        if sent is None:
            raise RefusedError(
                "InvalidSignatureException",
                f"The request signs the header {name!r} but does not carry it",
                s3_code="SignatureDoesNotMatch",
            )
        headers.append(f"{name}:{' '.join(sent.split())}")
    return "\n".join(
        [
            str(environ.get("REQUEST_METHOD", "GET")).upper(),
            path,
            query,
            "\n".join(headers) + "\n",
            ";".join(signed.signed_headers),
            payload_hash,
        ]
    )


def signature_of(secret: str, signed: Signed, canonical: str) -> str:
    """The signature of ``canonical`` under ``secret``, for the date, region and service the
    client named."""
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, signed.amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret}".encode()
    for part in (signed.date, signed.region, signed.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify(
    environ: Mapping[str, Any],
    body: bytes,
    credentials: Credentials,
    now: float | None = None,
    issued: Mapping[str, Issued] | None = None,
) -> Signed:
    """The request's signature, checked; :class:`RefusedError` when it is missing or wrong.
    ``issued``: temporary credentials the services' own STS gave signed callers, by access
    key, accepted with their session token until they expire."""
    signed = parse_signature(environ)
    if signed is None:
        raise RefusedError(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token: sign requests with the local services' credentials",
            s3_code="AccessDenied",
        )
    current = time.time() if now is None else now
    temporary = (issued or {}).get(signed.access_key_id)
    if temporary is not None and temporary.expires > current:
        token = header(environ, "X-Amz-Security-Token") or dict(
            parse_qsl(str(environ.get("QUERY_STRING", "")))
        ).get("X-Amz-Security-Token", "")
        if not hmac.compare_digest(token, temporary.session_token):
            raise RefusedError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid",
                s3_code="InvalidToken",
            )
        credentials = Credentials(signed.access_key_id, temporary.secret_access_key)
    elif not hmac.compare_digest(signed.access_key_id, credentials.access_key_id):
        import sys

        print(
            signed,
            dict((k, v) for k, v in environ.items() if k.startswith("HTTP")),
            file=sys.stderr,
        )
        raise RefusedError(
            "UnrecognizedClientException",
            "The security token included in the request is invalid: use the local services' "
            "credentials (serve --json prints them)",
            s3_code="InvalidAccessKeyId",
        )
    try:
        when = datetime.strptime(signed.amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise RefusedError(
            "IncompleteSignatureException",
            "The request's X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ",
            s3_code="AccessDenied",
        ) from None
    if signed.date != signed.amz_date[:8]:
        raise RefusedError(
            "InvalidSignatureException",
            "The credential's date is not the request's",
            s3_code="SignatureDoesNotMatch",
        )
    age = current - when.timestamp()
    if signed.presigned:
        if age > (signed.expires or 0) or age < -MAX_SKEW_SECONDS:
            raise RefusedError(
                "InvalidSignatureException",
                "Request has expired",
                s3_code="AccessDenied",
            )
    elif abs(age) > MAX_SKEW_SECONDS:
        raise RefusedError(
            "InvalidSignatureException",
            "Signature expired: the request was signed more than 15 minutes from now",
            s3_code="RequestTimeTooSkewed",
        )
    declared = header(environ, "X-Amz-Content-Sha256")
    body_differs = declared is not None and declared not in UNSIGNED_PAYLOADS
    if body_differs and not hmac.compare_digest(str(declared), hashlib.sha256(body).hexdigest()):
        raise RefusedError(
            "InvalidSignatureException",
            "The body does not match its signed hash",
            s3_code="XAmzContentSHA256Mismatch",
        )
    if declared is not None:
        payload_hash = declared
    elif signed.presigned and signed.service == "s3":
        payload_hash = "UNSIGNED-PAYLOAD"
    else:
        payload_hash = hashlib.sha256(body).hexdigest()
    canonical = canonical_request(environ, signed, body, payload_hash)
    expected = signature_of(credentials.secret_access_key, signed, canonical)
    if not hmac.compare_digest(expected, signed.signature):
        raise RefusedError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided",
            s3_code="SignatureDoesNotMatch",
        )
    return signed


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
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        import io

        environ["wsgi.input"] = io.BytesIO(body)
        try:
            service = self.check(environ, body)
        except RefusedError as refused:
            self.on_refused(f"{refused.code}: {refused.message}")
            return _refusal(environ, refused, request_id, start_response)
        environ["pipeline.signing_service"] = service

        def with_request_id(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], Any]:
            names = {name.lower() for name, _ in headers}
            if "x-amzn-requestid" not in names:
                headers = [*headers, ("x-amzn-RequestId", request_id)]
            return start_response(status, headers, exc_info)  # type: ignore[no-any-return]

        answer = self.app(environ, with_request_id)
        if service != "sts":
            return answer
        payload = b"".join(answer)
        getattr(answer, "close", lambda: None)()
        with self._lock:  # what STS issued a signed caller is accepted from now on
            self.issued.update(issued_credentials(payload, time.time()))
        return [payload]

    def check(self, environ: Mapping[str, Any], body: bytes) -> str:
        """The service the request is signed for; :class:`RefusedError` when it may not pass."""
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


def signed_get(
    url: str, credentials: Mapping[str, str], region: str, *, timeout: float = 30
) -> Any:
    """GET ``url`` of the local services (``/_pipeline/health``, ``/_pipeline/stats``),
    signed with ``credentials`` as any AWS client signs; its JSON answer."""
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    request = AWSRequest(method="GET", url=url)
    SigV4Auth(
        BotoCredentials(credentials["AWS_ACCESS_KEY_ID"], credentials["AWS_SECRET_ACCESS_KEY"]),
        "batch",
        region,
    ).add_auth(request)
    prepared = urllib.request.Request(url, headers=dict(request.headers.items()))
    with urllib.request.urlopen(prepared, timeout=timeout) as answer:
        return json.loads(answer.read())
