"""AWS calls from a job program: its clients, and what an AWS error becomes (a
:class:`JobError` naming what failed, or a :class:`TransientJobError` that the job's retry
strategy retries)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    pass


# Transient errors (throttling, 5xx, connection resets) are retried by botocore with backoff;
# what still fails is reported with the key involved.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=32)
# Presigned links use Signature Version 4 (SigV2 links are deprecated and unsupported in newer
# regions).
S3_CONFIG = CLIENT_CONFIG.merge(Config(signature_version="s3v4"))


class JobError(Exception):
    """A failure the job reports in one line (naming the object involved) and exits 1 for."""


class TransientJobError(JobError):
    """A transient failure (throttling, 5xx, timeouts, connections) that outlived the job's own
    retries; the job exits with ``contract.EXIT_TRANSIENT`` and Batch retries the attempt."""


# Error codes AWS services use for throttling and momentary unavailability.
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)


def is_transient(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    code = error.response.get("Error", {}).get("Code", "")
    return code in _TRANSIENT_CODES or int(status) >= 500


_CLIENT_SETTINGS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
_clients: dict[tuple[str, tuple[str | None, ...]], Any] = {}


def make_client(service: str) -> Any:
    """A client for ``service``, made once per process and per client environment (endpoint,
    credentials, region): every call of a program shares it. A client made before a process
    forks holds no connection until used, so a forked process that gets it opens its own."""
    import boto3  # lazy: a job program that makes no AWS call does not import it

    key = (service, tuple(os.environ.get(name) for name in _CLIENT_SETTINGS))
    if key not in _clients:
        config = S3_CONFIG if service == "s3" else CLIENT_CONFIG
        _clients[key] = boto3.client(service, config=config)  # type: ignore[call-overload]
    return _clients[key]


@contextmanager
def reporting(what: str) -> Iterator[None]:
    """Turn an AWS error that retries did not cure into a JobError naming ``what``."""
    try:
        yield
    except ClientError as error:
        info = error.response.get("Error", {})
        kind = TransientJobError if is_transient(error) else JobError
        raise kind(f"{what}: {info.get('Code')}: {info.get('Message')}") from error
    except (ConnectionError, BotoCoreError) as error:
        # Connection resets, read and connect timeouts: botocore retried them already.
        kind = TransientJobError if _is_network(error) else JobError
        raise kind(f"{what}: {error}") from error


def _is_network(error: Exception) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return isinstance(error, ConnectionError | BotoConnectionError | HTTPClientError)
