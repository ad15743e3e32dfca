"""The local services' door (pipeline/local/guard.py), request by request: what botocore signs
with the services' credentials passes; an unsigned request, another key, a wrong secret, a
changed body, another Host, a browser's Origin, a CORS preflight, an expired presigned URL and
moto's own API do not, each answered as AWS answers it and reaching nothing behind the door.
The requests are made by botocore's own signer, so a door that drifted from AWS's signature
rules would refuse real clients here first."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from pipeline.local.batch.in_process import call_app
from pipeline.local.guard import Door
from pipeline.local.sigv4 import Credentials, verify

PORT = 4566
ENDPOINT = f"http://127.0.0.1:{PORT}"
CREDENTIALS = Credentials("AKIATESTTESTTESTTEST", "a-secret-of-forty-characters-for-tests-1")


class Behind:
    """What stands behind the door: it records every request that reaches it."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        self.reached.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}")
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]


def _environ(request: AWSRequest) -> tuple[dict[str, Any], bytes]:
    """The WSGI environ a server makes of ``request`` (as it goes on the wire)."""
    url = urlsplit(request.url)
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "PATH_INFO": url.path,
        "REQUEST_URI": url.path + (f"?{url.query}" if url.query else ""),
        "QUERY_STRING": url.query,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
    }
    for name, value in request.headers.items():
        if name.lower() in ("content-type", "content-length"):
            continue
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    environ.setdefault("HTTP_HOST", url.netloc)
    return environ, body


def _signed(
    method: str = "POST",
    path: str = "/v1/describejobqueues",
    body: bytes = b"{}",
    *,
    service: str = "batch",
    credentials: Credentials = CREDENTIALS,
    headers: dict[str, str] | None = None,
) -> tuple[dict[str, Any], bytes]:
    request = AWSRequest(method=method, url=ENDPOINT + path, data=body, headers=headers or {})
    request.headers["Content-Type"] = "application/json"
    SigV4Auth(
        BotoCredentials(credentials.access_key_id, credentials.secret_access_key),
        service,
        "us-east-1",
    ).add_auth(request)
    return _environ(request)


def _through(environ: dict[str, Any], body: bytes) -> tuple[int, dict[str, str], bytes, Behind]:
    behind = Behind()
    door = Door(behind, CREDENTIALS, lambda: PORT)
    status, headers, answer = call_app(door, environ, body)
    return status, headers, answer, behind


def test_a_request_signed_with_the_services_credentials_passes() -> None:
    status, headers, _, behind = _through(*_signed())
    assert status == 200
    assert behind.reached == ["POST /v1/describejobqueues"]
    assert headers["x-amzn-RequestId"]


@pytest.mark.parametrize(
    ("what", "make", "code"),
    [
        (
            "no signature",
            lambda: (
                {
                    "REQUEST_METHOD": "POST",
                    "PATH_INFO": "/v1/submitjob",
                    "HTTP_HOST": f"127.0.0.1:{PORT}",
                    "CONTENT_TYPE": "text/plain",
                },
                b"{}",
            ),
            "MissingAuthenticationTokenException",
        ),
        (
            "another access key",
            lambda: _signed(credentials=Credentials("AKIAOTHEROTHEROTHERR", "x" * 40)),
            "UnrecognizedClientException",
        ),
        (
            "the right key with a wrong secret",
            lambda: _signed(credentials=Credentials(CREDENTIALS.access_key_id, "y" * 40)),
            "InvalidSignatureException",
        ),
        (
            "a body changed after signing",
            lambda: (_signed()[0], b'{"jobQueues": ["other"]}'),
            "InvalidSignatureException",
        ),
        (
            "a Host of another name",
            lambda: (
                {**_signed()[0], "HTTP_HOST": f"attacker.example:{PORT}"},
                b"{}",
            ),
            "AccessDeniedException",
        ),
        (
            "a browser's Origin",
            lambda: _signed(headers={"Origin": "https://attacker.example"}),
            "AccessDeniedException",
        ),
        (
            "moto's reset API, signed",
            lambda: _signed(path="/moto-api/reset", body=b""),
            "AccessDeniedException",
        ),
        (
            "moto's instance metadata, signed",
            lambda: _signed(method="GET", path="/latest/meta-data/iam/", body=b""),
            "AccessDeniedException",
        ),
        (
            "a second Credential planted in the Authorization header",
            lambda: _with_authorization(
                lambda value: value.replace(
                    "Credential=",
                    "Credential=AKIAOTHER/20990101/eu-west-1/batch/aws4_request, Credential=",
                    1,
                )
            ),
            "IncompleteSignatureException",
        ),
        (
            "a signature that leaves the Host out",
            lambda: _with_authorization(lambda value: value.replace(";host;", ";")),
            "IncompleteSignatureException",
        ),
        (
            "an unsigned body outside S3",
            lambda: _signed(headers={"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD"}),
            "InvalidSignatureException",
        ),
        (
            "an access key that is not ASCII",
            lambda: _signed(credentials=Credentials("AKIA" + "\u00e9" * 16, "x" * 40)),
            "UnrecognizedClientException",
        ),
    ],
)
def test_a_request_that_may_not_pass_is_refused_as_aws_refuses_it(
    what: str, make: Callable[[], tuple[dict[str, Any], bytes]], code: str
) -> None:
    # GIVEN a request with `what`; WHEN it reaches the door
    status, headers, answer, behind = _through(*make())
    # THEN it is a 403 in AWS's JSON error shape naming why, and nothing behind saw it
    assert status == 403, what
    assert headers["x-amzn-ErrorType"] == code
    assert json.loads(answer)["__type"] == code
    assert headers["x-amzn-RequestId"]
    assert behind.reached == []


def _with_authorization(change: Callable[[str], str]) -> tuple[dict[str, Any], bytes]:
    """A signed request whose Authorization header ``change`` rewrote."""
    environ, body = _signed()
    environ["HTTP_AUTHORIZATION"] = change(environ["HTTP_AUTHORIZATION"])
    return environ, body


class Unreadable(io.RawIOBase):
    """A body that must not be read."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the door read the body of a request it refuses")


def test_a_request_the_door_refuses_is_refused_before_its_body_is_read() -> None:
    # GIVEN a huge body from someone without the services' key
    environ, _ = _signed(credentials=Credentials("AKIAOTHEROTHEROTHERR", "x" * 40))
    environ |= {"wsgi.input": Unreadable(), "CONTENT_LENGTH": str(300 * 1024 * 1024)}
    refusals: list[str] = []
    door = Door(Behind(), CREDENTIALS, lambda: PORT, on_refused=refusals.append)
    started: list[str] = []
    # WHEN it reaches the door, THEN it is refused without a byte of the body read
    door(environ, lambda status, headers, exc_info=None: started.append(status))
    assert started == ["403 Forbidden"]
    assert refusals == [
        "UnrecognizedClientException: The security token included in the request is invalid: "
        "use the local services' credentials (serve --json prints them)"
    ]


def test_a_refusal_is_logged_with_its_control_characters_escaped() -> None:
    # GIVEN a request for a closed path that carries a terminal's escape sequence
    refusals: list[str] = []
    door = Door(Behind(), CREDENTIALS, lambda: PORT, on_refused=refusals.append)
    environ, body = _signed(path="/moto-api\x1b]0;owned\x07", body=b"")
    # WHEN it is refused, THEN the log line holds the sequence escaped, never raw
    call_app(door, environ, body)
    assert refusals == ["AccessDeniedException: /moto-api\\x1b]0;owned\\x07 is not served"]


def test_a_presigned_url_may_last_seven_days_at_most() -> None:
    request = AWSRequest(method="GET", url=ENDPOINT + "/bucket/key")
    S3SigV4QueryAuth(
        BotoCredentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key),
        "s3",
        "us-east-1",
        expires=8 * 24 * 3600,
    ).add_auth(request)
    status, _, answer, behind = _through(*_environ(request))
    assert status == 403
    assert b"X-Amz-Expires (1 to 604800)" in answer
    assert behind.reached == []


def test_a_cors_preflight_gets_no_cors_headers() -> None:
    environ = {
        "REQUEST_METHOD": "OPTIONS",
        "PATH_INFO": "/v1/submitjob",
        "HTTP_HOST": f"127.0.0.1:{PORT}",
        "HTTP_ORIGIN": "https://attacker.example",
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
    }
    status, headers, _, behind = _through(environ, b"")
    assert status == 403
    assert not any(name.lower().startswith("access-control-") for name in headers)
    assert behind.reached == []


def test_an_s3_refusal_is_s3s_xml() -> None:
    environ, body = _signed(
        method="GET",
        path="/bucket/key",
        body=b"",
        service="s3",
        credentials=Credentials("AKIAOTHEROTHEROTHERR", "x" * 40),
    )
    status, headers, answer, _ = _through(environ, body)
    assert status == 403
    assert b"<Code>InvalidAccessKeyId</Code>" in answer
    assert headers["Content-Type"] == "application/xml"


def _presigned(expires: int) -> tuple[dict[str, Any], bytes]:
    request = AWSRequest(method="GET", url=f"{ENDPOINT}/bucket/report.json")
    S3SigV4QueryAuth(
        BotoCredentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key),
        "s3",
        "us-east-1",
        expires=expires,
    ).add_auth(request)  # the query now holds the signature
    return _environ(request)


def test_a_presigned_url_passes_until_it_expires() -> None:
    # GIVEN a presigned GET made now for 60 s
    environ, body = _presigned(60)
    # THEN it passes now, and not two minutes from now
    assert verify(environ, body, CREDENTIALS).presigned
    with pytest.raises(Exception, match="Request has expired"):
        verify(environ, body, CREDENTIALS, now=time.time() + 120)


def test_a_request_signed_long_ago_is_refused() -> None:
    environ, body = _signed()
    with pytest.raises(Exception, match="more than 15 minutes"):
        verify(environ, body, CREDENTIALS, now=time.time() + 16 * 60)


PUBLISHED_ANSWER = (
    b"<GetSessionTokenResponse><GetSessionTokenResult><Credentials>"
    b"<AccessKeyId>AKIAIOSFODNN7EXAMPLE</AccessKeyId>"
    b"<SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>"
    b"<SessionToken>the-published-token</SessionToken>"
    b"<Expiration>2999-01-01T00:00:00Z</Expiration>"
    b"</Credentials></GetSessionTokenResult></GetSessionTokenResponse>"
)
"""What moto's STS answers every caller: AWS's published example keys."""


def _sts_behind(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response(
        "200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(PUBLISHED_ANSWER)))]
    )
    return [PUBLISHED_ANSWER]


def test_sts_hands_out_credentials_of_its_own_that_pass_with_their_token_only() -> None:
    # GIVEN a door in front of an STS that hands every caller the same published keys
    door = Door(_sts_behind, CREDENTIALS, lambda: PORT)
    published = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY")
    # WHEN a signed caller asks for a session token
    status, headers, answer = call_app(
        door, *_signed(path="/", body=b"Action=GetSessionToken&Version=2011-06-15", service="sts")
    )
    # THEN it gets new random credentials, not the published ones, in an answer of the
    # right length
    assert status == 200
    assert b"EXAMPLE" not in answer
    assert int(headers["Content-Length"]) == len(answer)
    issued = dict(re.findall(r"<(\w+)>([^<]*)</\1>", answer.decode()))
    temporary = Credentials(issued["AccessKeyId"], issued["SecretAccessKey"])
    assert temporary.access_key_id.startswith("ASIA")
    # AND the published keys do not pass, with or without the token
    for headers_sent in ({}, {"X-Amz-Security-Token": "the-published-token"}):
        status, _, _ = call_app(door, *_signed(credentials=published, headers=headers_sent))
        assert status == 403
    # AND the issued ones pass with their token only, until they expire
    token = {"X-Amz-Security-Token": issued["SessionToken"]}
    with_token = _signed(credentials=temporary, headers=token)
    assert call_app(door, *with_token)[0] == 200
    assert call_app(door, *_signed(credentials=temporary))[0] == 403
    with pytest.raises(Exception, match="security token included in the request is invalid"):
        verify(*with_token, CREDENTIALS, issued=door.issued, now=time.time() + 13 * 3600)
    # AND a second caller gets other credentials
    again = call_app(
        door, *_signed(path="/", body=b"Action=GetSessionToken&Version=2011-06-15", service="sts")
    )[2]
    assert re.findall(rb"<AccessKeyId>([^<]*)<", again) != [temporary.access_key_id.encode()]


def test_random_credentials_differ_each_time_and_look_like_aws_keys() -> None:
    first, second = Credentials.random(), Credentials.random()
    assert first != second
    assert first.access_key_id.startswith("AKIA")
    assert len(first.access_key_id) == 20
    assert len(first.secret_access_key) == 40


def test_the_door_reads_a_body_once_and_hands_it_on_whole() -> None:
    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b""]

    environ, body = _signed(body=b'{"jobQueues": ["ProdQueue"]}')
    environ["wsgi.input"] = io.BytesIO(body)
    call_app(Door(app, CREDENTIALS, lambda: PORT), environ, body)
    assert seen == [b'{"jobQueues": ["ProdQueue"]}']


def test_a_batch_request_for_another_region_is_refused_naming_both() -> None:
    # GIVEN a door in front of AWS Batch for us-east-1, and a request signed for eu-west-1
    request = AWSRequest(method="POST", url=ENDPOINT + "/v1/describejobqueues", data=b"{}")
    request.headers["Content-Type"] = "application/json"
    SigV4Auth(
        BotoCredentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key),
        "batch",
        "eu-west-1",
    ).add_auth(request)
    behind = Behind()
    door = Door(behind, CREDENTIALS, lambda: PORT, batch_region="us-east-1")
    # WHEN it reaches the door, THEN it is refused saying which region is served
    status, _, answer = call_app(door, *_environ(request))
    assert status == 403
    assert "serve AWS Batch in us-east-1" in json.loads(answer)["message"]
    assert behind.reached == []
