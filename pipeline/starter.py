"""The starter: the Lambda function behind ``ArrayJobPipeline``'s schedule and upload triggers.

EventBridge Scheduler and EventBridge rules can submit one Batch job, with no ``dependsOn``
(aws-cdk issue #21878), so they invoke this function instead; it hands the event to
:func:`pipeline.runs.triggers.start_triggered`, the same engine code ``python -m
pipeline.submit`` runs, and returns what it did (the run id when it started one).

Everything it needs comes from its environment, set by the construct (:class:`StarterSettings`);
the deployed pipeline is read from the job definition revisions the stack registered (one
DescribeJobDefinitions call), so a run it starts is exactly what was deployed.

A run it starts is sized to its input: it lists the run's prefix of BucketA (``s3:ListBucket``,
the only access to BucketA its role has).

Handler: ``pipeline.starter.handler``. It imports only the run engine, boto3 and botocore (the
Lambda runtime's own).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.backends.aws import AwsSession, batch_config, other_config
from pipeline.runs.discovery import document_from_job_definitions
from pipeline.runs.triggers import TriggerError, start_triggered, trigger_from_event
from pipeline.trigger_events import StarterSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient

    from pipeline.runs.api import BatchApi

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


def start_from_event(
    event: Mapping[str, Any],
    *,
    settings: StarterSettings,
    batch: BatchApi,
    sns: SNSClient,
    s3: S3Client | None = None,
) -> dict[str, Any]:
    """Start (or skip, or refuse) the run ``event`` asks for; the result as JSON. An event
    that is not a trigger is published too, so a misrouted rule does not fail in silence.
    ``s3`` lists BucketA, so the run is sized to its input (None: the deployed size)."""

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
        AwsSession(batch, document, clients={"s3": s3} if s3 is not None else {}),
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
        s3=boto3.client("s3", config=other_config()),
    )
