"""PipelineStack: an ArrayJobPipeline and the outputs the submitter discovers."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from pipeline.constructs.pipeline import ArrayJobPipeline, ArrayJobPipelineProps
from pipeline.document import DOCUMENT_OUTPUT, LOG_GROUP_OUTPUT, QUEUE_NAME_OUTPUT, QUEUE_OUTPUT
from pipeline.spec import RESOURCES


class PipelineStack(Stack):
    """A stack holding one :class:`ArrayJobPipeline`.

    Its ``PipelineDocument`` output is the contract with ``python -m pipeline.submit --stack
    NAME``: the effective pipeline as one versioned JSON document (see
    :mod:`pipeline.document`), so every run submits what was deployed. The other outputs name
    the queue and resources for people and scripts. None is exported, so stacks never become
    coupled through them and a pipeline can be deleted freely.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        pipeline: ArrayJobPipelineProps | None = None,
        **stack_props: Any,
    ) -> None:
        """
        :param pipeline: props of the :class:`ArrayJobPipeline`. Default: all its defaults.
        :param stack_props: passed to ``aws_cdk.Stack`` (``env``, ``description``, ...).
        """
        stack_props.setdefault(
            "description", "AWS Batch example array-job workflow (JobA..JobE on ProdQueue)"
        )
        super().__init__(scope, construct_id, **stack_props)
        self.pipeline = ArrayJobPipeline(self, "Pipeline", **(pipeline or {}))
        p = self.pipeline

        def output(key: str, value: str, description: str) -> None:
            CfnOutput(self, key, value=value, description=description)

        output(
            DOCUMENT_OUTPUT,
            self.to_json_string(p.document().as_json()),
            "The pipeline as deployed, read by python -m pipeline.submit --stack (versioned JSON)",
        )
        output(QUEUE_OUTPUT, p.queue.job_queue_arn, "Job queue ARN (ProdQueue)")
        output(QUEUE_NAME_OUTPUT, p.queue.job_queue_name, "Job queue name")
        values = p.storage.resource_values()
        for resource in RESOURCES:
            output(resource.output, values[resource.key], resource.description)
        output(LOG_GROUP_OUTPUT, p.log_group.log_group_name, "CloudWatch log group of the jobs")
        notifications = p.failure_notifications
        output(
            "DeadLetterQueueUrl",
            notifications.dead_letters.queue_url,
            "Notifications that could not be delivered (aws sqs receive-message --queue-url ...)",
        )
        output(
            "AlarmTopicArn",
            notifications.alarm_topic.topic_arn,
            "Topic the Undelivered alarm publishes to: subscribe whoever must hear of it",
        )
        if p.starter is not None:
            output(
                "StarterFunctionName",
                p.starter.function.function_name,
                "Starts a run as deployed (aws lambda invoke); grant_start_runs lets it",
            )
