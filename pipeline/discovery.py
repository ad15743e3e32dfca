"""Finds a deployed pipeline from its PipelineStack's outputs (CloudFormation DescribeStacks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from pipeline.errors import TargetError
from pipeline.spec import (
    ARRAY_SIZE_OUTPUT,
    DEFAULT_SPEC,
    LOG_GROUP_OUTPUT,
    QUEUE_OUTPUT,
    RESOURCES,
    job_definition_output,
)
from pipeline.submission import Targets

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient


REQUIRED_OUTPUTS: tuple[str, ...] = (
    QUEUE_OUTPUT,
    *(job_definition_output(j.key) for j in DEFAULT_SPEC),
)


def targets_from_stack(cloudformation: CloudFormationClient, stack_name: str) -> Targets:
    """Queue, job definition ARNs and resource names from the stack's outputs."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            region = cloudformation.meta.region_name
            raise TargetError(
                f"stack {stack_name!r} does not exist in {region}; deploy it with "
                "`npx cdk deploy`, or pass the --region/--profile where it lives"
            ) from error
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [key for key in REQUIRED_OUTPUTS if key not in outputs]
    if missing:
        raise TargetError(
            f"stack {stack_name!r} has no output {', '.join(missing)}: it is not a PipelineStack "
            "(or predates these outputs); redeploy it, or pass --queue and "
            "--job-definition-prefix instead of --stack"
        )
    size = outputs.get(ARRAY_SIZE_OUTPUT)
    return Targets(
        queue=outputs[QUEUE_OUTPUT],
        job_definitions={j.key: outputs[job_definition_output(j.key)] for j in DEFAULT_SPEC},
        resources={r.env: outputs[r.output] for r in RESOURCES if r.output in outputs},
        default_array_size=int(size) if size and size.isdigit() else None,
        log_group=outputs.get(LOG_GROUP_OUTPUT),
    )
