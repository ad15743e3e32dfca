"""PipelineStack: an ArrayJobPipeline and the outputs the submitter discovers."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from pipeline.constructs.pipeline import ArrayJobPipeline, ArrayJobPipelineProps
from pipeline.spec import (
    ARRAY_SIZE_OUTPUT,
    LOG_GROUP_OUTPUT,
    QUEUE_NAME_OUTPUT,
    QUEUE_OUTPUT,
    RESOURCES,
    job_definition_output,
)


class PipelineStack(Stack):
    """A stack holding one :class:`ArrayJobPipeline`.

    Its CfnOutputs are the contract with ``python -m pipeline.submit --stack NAME``: they have
    stable keys (see ``pipeline.spec``) and no exports, so stacks never become coupled through
    them and a pipeline can be deleted freely.
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

        output(QUEUE_OUTPUT, p.queue.job_queue_arn, "Job queue ARN (ProdQueue)")
        output(QUEUE_NAME_OUTPUT, p.queue.job_queue_name, "Job queue name")
        for job in p.spec:
            output(
                job_definition_output(job.key),
                p.job_definitions[job.key].job_definition_arn,
                f"{job.definition_name} job definition ARN",
            )
        values = p.storage.resource_values()
        for resource in RESOURCES:
            output(resource.output, values[resource.key], resource.description)
        output(ARRAY_SIZE_OUTPUT, str(p.spec.array_size), "Default array size of JobB and JobC")
        output(LOG_GROUP_OUTPUT, p.log_group.log_group_name, "CloudWatch log group of the jobs")
