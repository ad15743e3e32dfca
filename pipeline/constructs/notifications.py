"""The EventBridge rule that tells the topic when a job of the pipeline fails."""

from __future__ import annotations

import re

import jsii
from aws_cdk import aws_batch as batch
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk.interfaces.aws_events import IRuleRef
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
        self.rule.add_target(_TopicTarget(topic, events.RuleTargetInput.from_text(text)))


@jsii.implements(events.IRuleTarget)
class _TopicTarget:
    """Like aws_events_targets.SnsTopic, but the topic policy lets EventBridge publish for this
    rule only (aws:SourceArn), so no other rule, in any account, can use the grant."""

    def __init__(self, topic: sns.ITopic, message: events.RuleTargetInput) -> None:
        self.topic = topic
        self.message = message

    def bind(
        self,
        rule: IRuleRef,
        id: str | None = None,
    ) -> events.RuleTargetConfig:
        events_service = iam.ServicePrincipal("events.amazonaws.com")
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisRuleToPublish",
                principals=[events_service],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"ArnEquals": {"aws:SourceArn": rule.rule_ref.rule_arn}},
            )
        )
        key = getattr(self.topic, "master_key", None)
        if key is not None:
            # SNS encrypts what EventBridge publishes with the topic's key.
            key.grant(events_service, "kms:Decrypt", "kms:GenerateDataKey")
        return events.RuleTargetConfig(arn=self.topic.topic_arn, input=self.message)
