"""Checks of the values a user gives against what AWS accepts (an array size, an email
address, a name prefix), each raising :class:`pipeline.errors.SpecError` with a one-line
message. AWS Batch's own limits are in :mod:`pipeline.batch_facts`.

Plain data: no aws-cdk-lib or boto3 import.
"""

from __future__ import annotations

import re

from pipeline.batch_facts import MAX_ARRAY_SIZE, MIN_ARRAY_SIZE
from pipeline.errors import SpecError


def check_array_size(size: object, what: str = "array size") -> int:
    """Return ``size`` if AWS Batch accepts it as an array size, else raise :class:`SpecError`."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise SpecError(f"{what} must be a whole number from 2 to 10,000; got {size!r}", field=what)
    if not MIN_ARRAY_SIZE <= size <= MAX_ARRAY_SIZE:
        hint = " (use a standard job for a single task)" if size == 1 else ""
        raise SpecError(
            f"{what} must be from {MIN_ARRAY_SIZE} to {MAX_ARRAY_SIZE:,}; got {size:,}{hint}",
            field=what,
        )
    return size


_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
)


def check_email(address: str, what: str = "email address") -> str:
    """Return ``address`` if it looks like a deliverable address, else raise :class:`SpecError`."""
    if not _EMAIL.fullmatch(address) or len(address) > 254:
        raise SpecError(
            f"{what} {address!r} is not an email address like name@example.com", field=what
        )
    return address


_NAME_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def check_name_prefix(prefix: str) -> str:
    """Return ``prefix`` if it makes valid Batch names, else raise :class:`SpecError`."""
    if prefix and not _NAME_PREFIX.fullmatch(prefix):
        raise SpecError(
            f"name_prefix {prefix!r} must be 1-40 letters, digits, '-' or '_', starting with a "
            "letter or digit (or empty for the workflow's own names)"
        )
    return prefix
