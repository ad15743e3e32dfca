"""The EventBridge rule that tells the topic when a job of the pipeline fails."""

from __future__ import annotations

import re

import jsii
from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Validations
from aws_cdk import aws_batch as batch
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk.interfaces.aws_events import IRuleRef
from constructs import Construct

from pipeline.failure_events import INPUT_PATHS, failure_event_pattern, message_template

DEAD_LETTER_RETENTION = Duration.days(14)
"""How long an undelivered notification waits in the dead-letter queue (SQS's maximum)."""
RETRY_ATTEMPTS = 185
MAXIMUM_EVENT_AGE = Duration.hours(24)
"""EventBridge retries delivery with backoff for up to this long (its maximum), then the
event goes to the dead-letter queue instead of being dropped."""


class FailureNotifications(Construct):
    """Publishes one message to ``topic`` for each failed job or array parent on ``queue``.

    Jobs chained by dependsOn never run after a failure, so JobE's completion message would
    never come; this rule is the "finally". The pattern and message are in
    ``pipeline/failure_events.py``, shared with the local run.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queue: batch.IJobQueue,
        topic: sns.ITopic,
        encryption_key: kms.IKey,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, construct_id)
        # A notification EventBridge could not deliver (the topic or its key refused it, or
        # SNS was unavailable for a day) waits here, encrypted, for 14 days; the alarm below
        # says so, and `aws sqs receive-message --queue-url <DeadLetterQueueUrl output>` shows
        # the events.
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=encryption_key,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
            removal_policy=removal_policy,
        )
        Validations.of(self.dead_letters).acknowledge(
            Acknowledgment(
                id="AwsSolutions-SQS3",
                reason="This queue is itself the dead-letter queue of the failure rule's "
                "target (an EventBridge DeadLetterConfig, which cdk-nag cannot see).",
            )
        )
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
        text = re.sub(r"<(\w+)>", lambda m: fields[m.group(1)], message_template())
        self.rule.add_target(
            _TopicTarget(
                topic, events.RuleTargetInput.from_text(text), self.dead_letters, encryption_key
            )
        )
        self.undelivered_alarm = cloudwatch.Alarm(
            self,
            "Undelivered",
            alarm_description="A pipeline failure notification could not be delivered to the "
            "topic; it waits in the dead-letter queue (see the README's Operations section)",
            metric=self.dead_letters.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5)
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.undelivered_alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))


@jsii.implements(events.IRuleTarget)
class _TopicTarget:
    """Like aws_events_targets.SnsTopic, but the topic policy lets EventBridge publish for this
    rule only (aws:SourceArn), so no other rule, in any account, can use the grant."""

    def __init__(
        self,
        topic: sns.ITopic,
        message: events.RuleTargetInput,
        dead_letters: sqs.IQueue,
        key: kms.IKey,
    ) -> None:
        self.topic = topic
        self.message = message
        self.dead_letters = dead_letters
        self.key = key

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
        key = self.key
        if key is not None:
            # SNS encrypts what EventBridge publishes with the topic's key, and SQS what it
            # sends to the dead-letter queue, both under the pipeline's key; AWS documents
            # aws:SourceArn/aws:SourceAccount conditions on such key policy statements (Amazon
            # SNS Developer Guide, "Enable compatibility between event sources from AWS
            # services and encrypted topics"). Naming this rule's ARN (or the topic's) in the
            # key policy would make a dependency cycle (key -> rule -> topic -> key), so the
            # statement is held to EventBridge rules of this account and region; the topic
            # policy above already lets only this rule publish, and the key encrypts only this
            # topic.
            key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="AllowThisAccountsRulesToPublishEncrypted",
                    principals=[events_service],
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=["*"],
                    conditions={
                        "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                        "ArnLike": {
                            "aws:SourceArn": f"arn:{Aws.PARTITION}:events:{Aws.REGION}:"
                            f"{Aws.ACCOUNT_ID}:rule/*"
                        },
                    },
                )
            )
        # Undeliverable events go to the queue, which only this rule may write to.
        self.dead_letters.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowTheFailureRuleDeadLetters",
                principals=[events_service],
                actions=["sqs:SendMessage"],
                resources=[self.dead_letters.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": rule.rule_ref.rule_arn}},
            )
        )
        return events.RuleTargetConfig(
            arn=self.topic.topic_arn,
            input=self.message,
            dead_letter_config=events.CfnRule.DeadLetterConfigProperty(
                arn=self.dead_letters.queue_arn
            ),
            retry_policy=events.CfnRule.RetryPolicyProperty(
                maximum_event_age_in_seconds=int(MAXIMUM_EVENT_AGE.to_seconds()),
                maximum_retry_attempts=RETRY_ATTEMPTS,
            ),
        )
