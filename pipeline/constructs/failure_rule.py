"""The EventBridge rule that tells the topic when a job of the pipeline fails."""

from __future__ import annotations

import re

import jsii
from aws_cdk import (
    Acknowledgment,
    ArnFormat,
    Aws,
    Duration,
    Names,
    RemovalPolicy,
    Stack,
    Validations,
)
from aws_cdk import aws_batch as batch
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
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
    """What tells people that something went wrong, and what keeps what could not be told.

    - A rule (``rule=True``) publishes one message to ``topic`` for each failed job or array
      parent on ``queue``: jobs chained by dependsOn never run after a failure, so JobE's
      completion message would never come; this rule is the "finally". The pattern and message
      are in ``pipeline/failure_events.py``, shared with the local run.
    - A dead-letter queue keeps, encrypted, for 14 days, what could not be delivered: the
      rule's events, and the topic's messages to ``notification_email``.
    - The ``Undelivered`` alarm goes off when anything waits there and publishes to a topic of
      its own (``alarm_topic``), not through the path that failed; CloudWatch may publish to
      it, and use the key, for this alarm only.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queue: batch.IJobQueue,
        topic: sns.ITopic,
        encryption_key: kms.IKey,
        notification_email: str | None = None,
        rule: bool = True,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        topic_arn_for_key_policy: str | None = None,
    ) -> None:
        """
        :param topic_arn_for_key_policy: ``topic``'s ARN, built without a reference to the
            topic resource when the topic is encrypted with ``encryption_key`` (the key policy
            names it). Default: ``topic.topic_arn``.
        """
        super().__init__(scope, construct_id)
        # `aws sqs receive-message --queue-url <DeadLetterQueueUrl output>` shows what waits.
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
                reason="This queue is itself a dead-letter queue: of the failure rule's target "
                "(an EventBridge DeadLetterConfig) and of the email subscriptions (an SNS "
                "RedrivePolicy), which cdk-nag cannot see.",
            )
        )
        self.rule: events.Rule | None = None
        if rule:
            self.rule = self._failure_rule(queue, topic, encryption_key)

        stack = Stack.of(self)
        # A name known at synth, so the key and topic policies can name this one alarm without
        # a dependency cycle (key -> alarm -> topic -> key).
        alarm_name = Names.unique_resource_name(self, max_length=200, separator="-")
        alarm_name = f"{alarm_name}-Undelivered"
        alarm_arn = stack.format_arn(
            service="cloudwatch",
            resource="alarm",
            resource_name=alarm_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.alarm_topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name="Array job pipeline alarms",
            enforce_ssl=True,
            master_key=encryption_key,
        )
        cloudwatch_service = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        from_this_alarm = {
            "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
            "ArnEquals": {"aws:SourceArn": alarm_arn},
        }
        # CloudWatch publishes an alarm's action as the service principal; to an encrypted
        # topic it needs the key too, and both policies hold it to this alarm with
        # aws:SourceArn/aws:SourceAccount (CloudWatch User Guide, "Confused deputy
        # prevention"; Amazon SNS Developer Guide, "Enable compatibility between event
        # sources from AWS services and encrypted topics").
        self.alarm_topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowTheUndeliveredAlarmToPublish",
                principals=[cloudwatch_service],
                actions=["sns:Publish"],
                resources=[self.alarm_topic.topic_arn],
                conditions=from_this_alarm,
            )
        )
        encryption_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowTheUndeliveredAlarmToPublishEncrypted",
                principals=[cloudwatch_service],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions=from_this_alarm,
            )
        )
        self.undelivered_alarm = cloudwatch.Alarm(
            self,
            "Undelivered",
            alarm_name=alarm_name,
            alarm_description="A pipeline notification could not be delivered; it waits in the "
            "dead-letter queue (see the Operations page of the docs)",
            metric=self.dead_letters.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5)
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.undelivered_alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.alarm_topic))

        if notification_email:
            # An email SNS could not deliver goes to the dead-letter queue too (an SNS
            # redrive policy; CDK adds the queue policy statement for this topic only). SNS
            # writes it encrypted under the key, as its service principal for the topic: the
            # key policy lets it do so for this topic only (Amazon SQS Developer Guide, "Amazon
            # SQS Key management", "Configure KMS permissions for AWS services": the sending
            # service's principal, with aws:SourceArn and aws:SourceAccount against confused
            # deputies).
            topic.add_subscription(
                subscriptions.EmailSubscription(
                    notification_email, dead_letter_queue=self.dead_letters
                )
            )
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(notification_email))
            encryption_key.add_to_resource_policy(
                iam.PolicyStatement(
                    sid="AllowTheTopicToDeadLetterEncrypted",
                    principals=[iam.ServicePrincipal("sns.amazonaws.com")],
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    resources=["*"],
                    conditions={
                        "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                        "ArnEquals": {"aws:SourceArn": topic_arn_for_key_policy or topic.topic_arn},
                    },
                )
            )

    def _failure_rule(
        self, queue: batch.IJobQueue, topic: sns.ITopic, encryption_key: kms.IKey
    ) -> events.Rule:
        pattern = failure_event_pattern(queue.job_queue_arn)
        rule = events.Rule(
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
        rule.add_target(
            _TopicTarget(
                topic, events.RuleTargetInput.from_text(text), self.dead_letters, encryption_key
            )
        )
        return rule


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
        # SNS encrypts what EventBridge publishes with the topic's key, and SQS what it sends
        # to the dead-letter queue, both under the pipeline's key, as EventBridge's service
        # principal: the key policy must let it (Amazon SNS Developer Guide, "Enable
        # compatibility between event sources from AWS services and encrypted topics"). The
        # statement carries no aws:SourceArn/aws:SourceAccount condition: AWS documents these
        # keys for EventBridge's own encryption of event buses, and another AWS construct
        # library documents them as not supported for this delivery path, where a condition
        # that never matches would drop every failure notification into the dead-letter
        # queue. What holds the key to this pipeline is what it encrypts: only this
        # pipeline's topics and queue use it, and their policies let only this pipeline's
        # rules publish and send (aws:SourceArn), so no other rule, in any account, can have
        # anything encrypted with it.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowEventBridgeToPublishEncrypted",
                principals=[events_service],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],
            )
        )
        # Undeliverable events go to the queue; its policy admits this rule (and the upload
        # rule and the topic's email subscription, which add their own statements) only.
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
