"""The errors the local AWS Batch endpoint answers with, as AWS Batch answers them: an HTTP
status, an error code in ``x-amzn-ErrorType`` and a JSON body with the message."""

from __future__ import annotations


class BatchError(Exception):
    """An answer other than success; ``code`` and ``status`` are what the client sees."""

    code = "ClientException"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BatchClientError(BatchError):
    """AWS Batch's answer to a request it cannot carry out (bad value, unknown resource)."""


class UnknownOperationError(BatchError):
    """An operation this endpoint does not serve; the message names it."""

    code = "UnknownOperationException"
    status = 404
