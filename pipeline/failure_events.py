"""The failure notification: "finally" semantics for a chain that stops at its first failure.

When a job fails, AWS Batch fails its dependents without running them, so JobE, which sends
the completion message, never runs. An EventBridge rule on "Batch Job State Change" events
therefore sends the failure to the pipeline's topic. The rule is defined here once, as data:
the construct turns it into an EventBridge rule with an input transformer, and the local
services create the same rule on their EventBridge (moto's, which does the matching).

Plain data: no aws-cdk-lib or boto3 import.
"""

from __future__ import annotations

from typing import Any

from pipeline.batch_facts import DEPENDENCY_FAILED


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

RUN_ID_PLACEHOLDER = "RUN_ID"
"""The run's id is not in the event: a reader who knows it puts it in place of this."""
AWS_DETAILS = (
    "https://<region>.console.aws.amazon.com/batch/home?region=<region>#jobs/detail/<jobId> "
    f"- or: python -m pipeline.submit status {RUN_ID_PLACEHOLDER}"
)
"""Where a deployed pipeline's notification points: the job in the AWS Batch console."""
LOCAL_DETAILS = f"python -m pipeline.submit status {RUN_ID_PLACEHOLDER} --local"
"""Where a local run's notification points: the saved run, which outlives the services."""


def message_template(details: str = AWS_DETAILS) -> str:
    """The notification text, with ``<name>`` placeholders for :data:`INPUT_PATHS`."""
    return (
        "Array job pipeline: AWS Batch job <jobName> (<jobId>) FAILED. "
        "Reason: <statusReason>. Array size: <arraySize>; failed children: <failedChildren>. "
        f"Later jobs of the run will not run. Details: {details}"
    )
