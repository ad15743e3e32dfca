"""The failure notification: "finally" semantics for a chain that stops at its first failure.

When a job fails, AWS Batch fails its dependents without running them, so JobE, which sends
the completion message, never runs. An EventBridge rule on "Batch Job State Change" events
therefore sends the failure to the pipeline's topic. The rule is defined here once, as data:
the construct turns it into an EventBridge rule with an input transformer, and the local run
applies the same pattern and template to LocalBatch's events.

Plain data and pure functions: no aws-cdk-lib or boto3 import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

DEPENDENCY_FAILED = "Dependent Job failed"
"""Batch's status reason for a job that never ran because a job it depends on failed."""


def failure_event_pattern(queue_arn: str) -> dict[str, Any]:
    """Batch job state changes to FAILED on this pipeline's queue, for standard jobs and array
    parents only: a parent fails once when its children are done, so 10,000 failed children
    make one notification, not 10,000. Jobs that failed only because an earlier job failed
    (status reason "Dependent Job failed") repeat that news and are left out; a job with no
    status reason at all is kept, so no failure goes unreported."""
    return {
        "source": ["aws.batch"],
        "detail-type": ["Batch Job State Change"],
        "detail": {
            "status": ["FAILED"],
            "jobQueue": [queue_arn],
            "arrayProperties": {"index": [{"exists": False}]},
            "$or": [
                {"statusReason": [{"anything-but": [DEPENDENCY_FAILED]}]},
                {"statusReason": [{"exists": False}]},
            ],
        },
    }


INPUT_PATHS: dict[str, str] = {
    "jobName": "$.detail.jobName",
    "jobId": "$.detail.jobId",
    "statusReason": "$.detail.statusReason",
    "arraySize": "$.detail.arrayProperties.size",
    "failedChildren": "$.detail.arrayProperties.statusSummary.FAILED",
    "region": "$.region",
}
"""Input transformer paths: what the message may say."""

MESSAGE_TEMPLATE = (
    "Array job pipeline: AWS Batch job <jobName> (<jobId>) FAILED. "
    "Reason: <statusReason>. Array size: <arraySize>; failed children: <failedChildren>. "
    "Later jobs of the run will not run. Details: "
    "https://<region>.console.aws.amazon.com/batch/home?region=<region>#jobs/detail/<jobId> "
    "- or: python -m pipeline.submit status RUN_ID"
)
"""The notification text, with ``<name>`` placeholders for :data:`INPUT_PATHS`."""


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge's matching for the parts of patterns this pipeline uses: lists of exact
    values, nested objects, ``{"exists": bool}``, ``{"anything-but": [...]}`` and ``$or``."""
    for key, expected in pattern.items():
        if key == "$or":
            if not any(matches(alternative, event) for alternative in expected):
                return False
            continue
        present = key in event
        value = event.get(key)
        if isinstance(expected, Mapping):
            if not matches(expected, value if isinstance(value, Mapping) else {}):
                return False
            continue
        if not any(_matches_one(rule, present, value) for rule in expected):
            return False
    return True


def _matches_one(rule: Any, present: bool, value: Any) -> bool:
    if isinstance(rule, Mapping) and "exists" in rule:
        return bool(rule["exists"]) == present
    if isinstance(rule, Mapping) and "anything-but" in rule:
        return present and value not in rule["anything-but"]  # a missing field never matches
    return present and value == rule


def render(event: Mapping[str, Any], template: str = MESSAGE_TEMPLATE) -> str:
    """The message EventBridge's input transformer would make from ``event``."""

    def lookup(path: str) -> str:
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return "" if value is None else str(value)

    values = {name: lookup(path) for name, path in INPUT_PATHS.items()}
    return re.sub(r"<(\w+)>", lambda m: values.get(m.group(1), m.group(0)), template)
