"""Exceptions the library raises for things a user can get wrong or that fail at run time.

Each carries a one-line message that says what to change, and the exit code the CLI returns
for it, following the AWS CLI's conventions (252 bad input, 253 configuration or credentials,
254 an error answer from AWS, 255 a local error, 1 the pipeline ran and a job failed, 130
interrupted).

This module is the ground of the package: it imports nothing of the library's own.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_BAD_INPUT = 252
EXIT_CONFIG = 253
EXIT_SERVICE = 254
EXIT_INTERRUPTED = 130
EXIT_LOCAL = 255
"""A local error: a file that cannot be read or written, damaged saved state, the local
services stopped. Not a job's failure (1), which a script must be able to tell apart."""


class SpecError(ValueError):
    """A value that AWS Batch or this pipeline would reject; the message says what to change.

    ``field`` names what was wrong in the library's own terms (``array_size``,
    ``source_bucket``); the message starts with it, so a front end can say it in its own
    words (the command line says ``--array-size``)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PipelineConfigError(SpecError):
    """A construct prop that cannot work; the message names the prop and what to change."""


class PipelineError(Exception):
    """Base of the run-time errors; ``exit_code`` is what the CLI returns for it."""

    exit_code = EXIT_SERVICE


class ConfigurationError(PipelineError):
    """No credentials, no region, an unknown profile."""

    exit_code = EXIT_CONFIG


class TargetError(PipelineError):
    """The stack, queue or job definitions to submit to cannot be found or are incomplete."""

    exit_code = EXIT_SERVICE


class ServiceError(PipelineError):
    """AWS answered with an error that retries did not cure."""

    exit_code = EXIT_SERVICE


class ChainError(ServiceError):
    """SubmitJob failed for good part-way through a run; the jobs already submitted
    (``cancelled`` lists them) were stopped so nothing is left orphaned, and the message names
    any AWS refused to stop, with the ``cancel`` command that stops them."""

    def __init__(self, message: str, *, failed_job: str, cancelled: list[str]) -> None:
        super().__init__(message)
        self.failed_job = failed_job
        self.cancelled = cancelled


class LocalError(PipelineError):
    """Something on this machine failed: a file, the saved state of a local run, the local
    services."""

    exit_code = EXIT_LOCAL


class RunStateError(PipelineError):
    """A status, cancel or resume that does not fit the run's state (unknown run, still active)."""

    exit_code = EXIT_BAD_INPUT


class JobFailedError(PipelineError):
    """The run was submitted and a job failed."""

    exit_code = EXIT_JOB_FAILED
