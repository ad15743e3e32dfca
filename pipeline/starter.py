"""The starter: the Lambda function behind ``ArrayJobPipeline``'s schedule and upload triggers.

EventBridge Scheduler and EventBridge rules can submit one Batch job, with no ``dependsOn``
(aws-cdk issue #21878), so they invoke this function instead; it hands the event to
:func:`pipeline.runs.triggers.start_triggered`, the same engine code ``python -m
pipeline.submit`` runs, and returns what it did (the run id when it started one).

Everything it needs comes from its environment, set by the construct (:class:`StarterSettings`);
the deployed pipeline is read from the job definition revisions the stack registered (one
DescribeJobDefinitions call), so a run it starts is exactly what was deployed.

Handler: ``pipeline.starter.handler``. It imports only the run engine, boto3 and botocore (the
Lambda runtime's own).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.aws import AwsSession, batch_config, other_config
from pipeline.errors import ConfigurationError
from pipeline.runs.discovery import document_from_job_definitions
from pipeline.runs.triggers import TriggerError, start_triggered, trigger_from_event
from pipeline.spec import DEFAULT_SPEC, contract

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

    from pipeline.runs.api import BatchApi

QUEUE = "PIPELINE_QUEUE_ARN"
JOB_DEFINITIONS = "PIPELINE_JOB_DEFINITION_ARNS"
"""JSON object: job key -> job definition ARN (with its revision)."""
ALLOW_OVERLAP = "PIPELINE_ALLOW_OVERLAP"
MAX_VCPU_HOURS = "PIPELINE_MAX_VCPU_HOURS"

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


@dataclass(frozen=True)
class StarterSettings:
    """The starter's environment, as the construct sets it."""

    queue: str
    job_definitions: Mapping[str, str]
    topic_arn: str
    input_bucket: str | None
    allow_overlap: bool = False
    max_vcpu_hours: float | None = None

    def environment(self) -> dict[str, str]:
        """The inverse of :meth:`from_env` (values may be CDK tokens while synthesizing)."""
        env = {
            QUEUE: self.queue,
            JOB_DEFINITIONS: json.dumps(dict(self.job_definitions), separators=(",", ":")),
            contract.NOTIFICATION_TOPIC_ARN: self.topic_arn,
            ALLOW_OVERLAP: "true" if self.allow_overlap else "false",
        }
        if self.input_bucket is not None:
            env[contract.INPUT_BUCKET] = self.input_bucket
        if self.max_vcpu_hours is not None:
            env[MAX_VCPU_HOURS] = repr(self.max_vcpu_hours)
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StarterSettings:
        def need(name: str) -> str:
            if not env.get(name):
                raise ConfigurationError(
                    f"the starter's environment has no {name}; redeploy the pipeline "
                    "(npx cdk deploy) rather than editing the function"
                )
            return env[name]

        try:
            definitions = json.loads(need(JOB_DEFINITIONS))
        except json.JSONDecodeError:
            raise ConfigurationError(f"{JOB_DEFINITIONS} is not JSON; redeploy") from None
        if not isinstance(definitions, dict) or any(
            not isinstance(definitions.get(j.key), str) for j in DEFAULT_SPEC
        ):
            raise ConfigurationError(f"{JOB_DEFINITIONS} must name JobA..JobE's ARNs; redeploy")
        limit: float | None = None
        if env.get(MAX_VCPU_HOURS):
            limit = float(env[MAX_VCPU_HOURS])
            if not math.isfinite(limit) or limit <= 0:
                raise ConfigurationError(f"{MAX_VCPU_HOURS} must be above 0; redeploy")
        return cls(
            queue=need(QUEUE),
            job_definitions=definitions,
            topic_arn=need(contract.NOTIFICATION_TOPIC_ARN),
            input_bucket=env.get(contract.INPUT_BUCKET) or None,
            allow_overlap=env.get(ALLOW_OVERLAP, "false") == "true",
            max_vcpu_hours=limit,
        )


def start_from_event(
    event: Mapping[str, Any], *, settings: StarterSettings, batch: BatchApi, sns: SNSClient
) -> dict[str, Any]:
    """Start (or skip, or refuse) the run ``event`` asks for; the result as JSON. An event
    that is not a trigger is published too, so a misrouted rule does not fail in silence."""

    def notify(subject: str, message: str) -> None:
        sns.publish(TopicArn=settings.topic_arn, Subject=subject, Message=message)

    try:
        trigger = trigger_from_event(event, input_bucket=settings.input_bucket)
    except TriggerError as error:
        notify("array-job pipeline: trigger event not understood", f"{error}\n")
        return {"action": "IGNORED", "reason": str(error)}
    document = document_from_job_definitions(
        batch, queue=settings.queue, arns=settings.job_definitions
    )
    outcome = start_triggered(
        AwsSession(batch),
        document,
        trigger,
        notify=notify,
        allow_overlap=settings.allow_overlap,
        max_vcpu_hours=settings.max_vcpu_hours,
    )
    result = outcome.as_json()
    logger.info(json.dumps(result))
    return result


def handler(event: Mapping[str, Any], _context: object) -> dict[str, Any]:
    """The Lambda entry point. An unexpected error propagates: the function's asynchronous
    invocations are not retried and go to its failure destination, the pipeline's topic."""
    import boto3

    settings = StarterSettings.from_env(os.environ)
    return start_from_event(
        event,
        settings=settings,
        batch=boto3.client("batch", config=batch_config()),
        sns=boto3.client("sns", config=other_config()),
    )
