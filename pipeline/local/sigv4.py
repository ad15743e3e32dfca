"""AWS Signature Version 4, checked as AWS checks it (AWS General Reference, "Create a
signed AWS API request" and "Authenticating requests: Using query parameters"): the local
services' credentials, the temporary ones their STS issues, and a request's signature parsed
and verified against them. An S3 upload in signed chunks (``STREAMING-AWS4-HMAC-SHA256-
PAYLOAD``) has its headers' signature checked, not each chunk's."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

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
"""``X-Amz-Content-Sha256`` values that sign the headers but not the body: S3's only
("Signature Calculations for the Authorization Header", Amazon S3 API Reference)."""
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600
"""The longest ``X-Amz-Expires`` a presigned URL may have: seven days ("Authenticating
Requests: Using Query Parameters", Amazon S3 API Reference)."""


@dataclass(frozen=True)
class Credentials:
    """The one access key the local services accept."""

    access_key_id: str
    secret_access_key: str

    @classmethod
    def random(cls, prefix: str = "AKIA") -> Credentials:
        """New credentials, as an access key looks (``AKIA``, or ``ASIA`` for temporary
        ones, and 16 characters) and a 40-character secret, from the operating system's
        random source."""
        upper = string.ascii_uppercase + "234567"
        key = prefix + "".join(secrets.choice(upper) for _ in range(16))
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


def reissue(body: bytes, now: float) -> tuple[bytes, dict[str, Issued]]:
    """An STS answer (query protocol XML) with each set of temporary credentials it hands out
    replaced by new random ones, and those by access key. moto's STS hands out fixed, published
    example keys, which anyone could sign with; these are known only to the caller. They
    expire when the answer says, and within 12 hours (STS's longest) whatever it says."""
    import re

    found: dict[str, Issued] = {}

    def replaced(block: re.Match[str]) -> str:
        fields = dict(re.findall(r"<(\w+)>([^<]*)</\1>", block.group(1)))
        if not fields.get("AccessKeyId") or not fields.get("SecretAccessKey"):
            return block.group(0)
        fresh = Credentials.random("ASIA")
        token = secrets.token_urlsafe(96)
        expires = now + 12 * 3600
        with contextlib.suppress(ValueError):
            stamp = fields.get("Expiration", "").replace("Z", "+00:00")
            expires = min(expires, datetime.fromisoformat(stamp).timestamp())
        found[fresh.access_key_id] = Issued(fresh.secret_access_key, token, expires)
        inner = re.sub(
            r"<(AccessKeyId|SecretAccessKey|SessionToken)>[^<]*</\1>",
            lambda field: {
                "AccessKeyId": f"<AccessKeyId>{fresh.access_key_id}</AccessKeyId>",
                "SecretAccessKey": (
                    f"<SecretAccessKey>{fresh.secret_access_key}</SecretAccessKey>"
                ),
                "SessionToken": f"<SessionToken>{token}</SessionToken>",
            }[field.group(1)],
            block.group(1),
        )
        return f"<Credentials>{inner}</Credentials>"

    text = body.decode("utf-8", "replace")
    answer = re.sub(r"<Credentials>(.*?)</Credentials>", replaced, text, flags=re.S)
    return answer.encode(), found


def known(access_key_id: str, credentials: Credentials) -> bool:
    """Whether ``access_key_id`` is the services' own (compared in constant time)."""
    return hmac.compare_digest(access_key_id.encode(), credentials.access_key_id.encode())


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
        pairs = [
            part.strip().split("=", 1)
            for part in authorization[len(ALGORITHM) :].split(",")
            if "=" in part
        ]
        fields = dict(pairs)
        if len(fields) != len(pairs):  # one reader may take the first, another the last
            raise RefusedError(
                "IncompleteSignatureException",
                "The Authorization header names a field twice",
                s3_code="AuthorizationHeaderMalformed",
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
    listed = parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    query = dict(listed)
    if "X-Amz-Signature" not in query and "X-Amz-Credential" not in query:
        return None
    names = [name for name, _ in listed if name.startswith("X-Amz-")]
    if len(set(names)) != len(names):
        raise RefusedError(
            "IncompleteSignatureException",
            "The presigned URL names a parameter twice",
            s3_code="AuthorizationQueryParametersError",
        )
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
        if not 1 <= expires <= MAX_PRESIGNED_SECONDS:
            raise ValueError(expires)
    except (KeyError, ValueError):
        raise RefusedError(
            "IncompleteSignatureException",
            "A presigned URL needs X-Amz-Credential, X-Amz-Date, X-Amz-Expires (1 to "
            f"{MAX_PRESIGNED_SECONDS}), X-Amz-SignedHeaders and X-Amz-Signature",
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
    # "The host header must be included as a signed header" (IAM User Guide, "Create a
    # signed AWS API request"): unsigned, it could name any address.
    if "host" not in signed_headers.split(";"):
        raise RefusedError(
            "IncompleteSignatureException",
            "The host header must be signed",
            s3_code="AuthorizationHeaderMalformed",
        )
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
        if not hmac.compare_digest(token.encode(), temporary.session_token.encode()):
            raise RefusedError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid",
                s3_code="InvalidToken",
            )
        credentials = Credentials(signed.access_key_id, temporary.secret_access_key)
    elif not known(signed.access_key_id, credentials):
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
    if declared in UNSIGNED_PAYLOADS and signed.service != "s3":
        raise RefusedError(
            "InvalidSignatureException",
            f"An unsigned body ({declared}) is S3's only: sign the body",
            s3_code="SignatureDoesNotMatch",
        )
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


def signed_request(
    url: str,
    credentials: Mapping[str, str],
    region: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    service: str = "batch",
    timeout: float = 30,
) -> Any:
    """Send ``url`` of the local services a request signed with ``credentials``
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) as any AWS client signs it; the
    answer, a file-like object to read and close (an HTTPError for a status over 399)."""
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(
        BotoCredentials(credentials["AWS_ACCESS_KEY_ID"], credentials["AWS_SECRET_ACCESS_KEY"]),
        service,
        region,
    ).add_auth(request)
    prepared = urllib.request.Request(
        url, data=body or None, headers=dict(request.headers.items()), method=method
    )
    return urllib.request.urlopen(prepared, timeout=timeout)


def signed_get(
    url: str, credentials: Mapping[str, str], region: str, *, timeout: float = 30
) -> Any:
    """GET ``url`` of the local services (``/_pipeline/health``, ``/_pipeline/stats``),
    signed; its JSON answer."""
    import json

    with signed_request(url, credentials, region, timeout=timeout) as answer:
        return json.loads(answer.read())
