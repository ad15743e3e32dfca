"""What the trigger path's parts agree on: the input the schedule sends, the S3 event a
ready marker makes, the upload rule's pattern, and the starter function's environment.

Plain data, shared by the construct (:mod:`pipeline.constructs.starter`), the starter
(:mod:`pipeline.starter`), the run engine (:mod:`pipeline.runs.triggers`) and the local
trigger path, so none of them restates another's shapes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline import contract
from pipeline.contract import READY_MARKER
from pipeline.errors import ConfigurationError
from pipeline.spec import DEFAULT_SPEC

SCHEDULE = "schedule"
UPLOAD = "upload"


def schedule_event(schedule: str, execution_id: str, scheduled_time: str) -> dict[str, str]:
    """The input the pipeline's schedule sends (the construct fills in Scheduler's
    ``<aws.scheduler.execution-id>`` and ``<aws.scheduler.scheduled-time>``)."""
    return {
        "trigger": SCHEDULE,
        "schedule": schedule,
        "executionId": execution_id,
        "scheduledTime": scheduled_time,
    }


def upload_event(bucket: str, key: str, event_id: str, time: str) -> dict[str, Any]:
    """An S3 "Object Created" event as EventBridge delivers it (the fields the starter
    reads), for the local trigger path and tests."""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Object Created",
        "source": "aws.s3",
        "time": time,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"bucket": {"name": bucket}, "object": {"key": key}},
    }


def upload_pattern(bucket_name: str) -> dict[str, Any]:
    """The upload rule's ``detail``: objects of BucketA named ``_READY``, in a folder or at the
    top (EventBridge's suffix matching; S3 events in EventBridge carry the key as written)."""
    return {
        "bucket": {"name": [bucket_name]},
        "object": {"key": [{"suffix": f"/{READY_MARKER}"}, READY_MARKER]},
    }


QUEUE = "PIPELINE_QUEUE_ARN"
JOB_DEFINITIONS = "PIPELINE_JOB_DEFINITION_ARNS"
"""JSON object: job key -> job definition ARN (with its revision)."""
ALLOW_OVERLAP = "PIPELINE_ALLOW_OVERLAP"
MAX_VCPU_HOURS = "PIPELINE_MAX_VCPU_HOURS"


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
