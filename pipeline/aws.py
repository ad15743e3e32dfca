"""The AWS backend's pieces shared by the command line and the starter function: the boto3
client settings and the engine's :class:`~pipeline.runs.engine.Session` over boto3."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_logs import CloudWatchLogsClient

    from pipeline.runs.api import BatchApi

USER_AGENT = "array-job-pipeline"


def batch_config() -> Config:
    """Batch client settings. Adaptive retry mode adds client-side rate limiting to standard
    mode's backoff, so a burst of TooManyRequestsException (SubmitJob allows about 50 TPS per
    account) slows the submitter down instead of failing the run."""
    from botocore.config import Config

    return Config(retries={"mode": "adaptive", "max_attempts": 10}, user_agent_extra=USER_AGENT)


def other_config() -> Config:
    """Every other client: standard retries (throttling and transient errors, with backoff)."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 5}, user_agent_extra=USER_AGENT)


@dataclass
class AwsSession:
    """The engine's Session on AWS: a boto3 Batch client and CloudWatch Logs."""

    batch: BatchApi
    logs: CloudWatchLogsClient | None = None
    log_group: str | None = None
    settle: bool = False

    def read_log(self, job_id: str, log_stream: str | None) -> list[str]:
        from pipeline.runs.failures import cloudwatch_log_reader

        if self.logs is None or not self.log_group:
            return []
        return cloudwatch_log_reader(self.logs, self.log_group)(job_id, log_stream)
