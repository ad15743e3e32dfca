"""The EventBridge rule that tells the topic when a job of the pipeline fails."""

from __future__ import annotations

import re

from aws_cdk import aws_batch as batch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sns as sns
from constructs import Construct

from pipeline.notifications import INPUT_PATHS, MESSAGE_TEMPLATE, failure_event_pattern


class FailureNotifications(Construct):
    """Publishes one message to ``topic`` for each failed job or array parent on ``queue``.

    Jobs chained by dependsOn never run after a failure, so JobE's completion message would
    never come; this rule is the "finally". The pattern and message are in
    ``pipeline/notifications.py``, shared with the local run.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, queue: batch.IJobQueue, topic: sns.ITopic
    ) -> None:
        super().__init__(scope, construct_id)
        pattern = failure_event_pattern(queue.job_queue_arn)
        self.rule = events.Rule(
            self,
            "JobFailed",
            description="Array job pipeline: a job or array parent on the queue failed",
            event_pattern=events.EventPattern(
                source=pattern["source"],
                detail_type=pattern["detail-type"],
                detail=pattern["detail"],
            ),
        )
        fields = {name: events.EventField.from_path(path) for name, path in INPUT_PATHS.items()}
        text = re.sub(r"<(\w+)>", lambda m: fields[m.group(1)], MESSAGE_TEMPLATE)
        self.rule.add_target(
            targets.SnsTopic(topic, message=events.RuleTargetInput.from_text(text))
        )
