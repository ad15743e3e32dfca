"""Acknowledgements for cdk-nag findings the pipeline cannot avoid, each with its reason.

The construct registers no policy pack (the app chooses its own); it only records, next to the
resources, why a finding is acceptable, through CDK's ``Validations.of(...).acknowledge``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

OBJECT_WILDCARD_REASON = (
    "Object-level wildcard on one bucket only: run data is keyed runs/<run-id>/... with run ids "
    "made at submit time, and input keys are the user's; actions are listed one by one."
)


GRANT_WILDCARD_REASON = (
    "Batch job ARNs are made at submit time (new jobs must carry this pipeline's tag and only "
    "this library's tag keys), and DescribeJobs/ListJobs support no resource-level "
    "permissions; the queue and the job-definition revisions are this pipeline's own."
)


def acknowledge_wildcards(
    construct: IConstruct, statements: Iterable[iam.PolicyStatement], reason: str
) -> None:
    """Acknowledge AwsSolutions-IAM5 for each wildcard resource in ``statements`` (and only
    those: a wildcard added to ``construct`` by anything else still fails the check)."""
    stack = Stack.of(construct)
    for statement in statements:
        for resource in statement.resources:
            rendered = nag_resource(stack.resolve(resource))
            if "*" in rendered:
                Validations.of(construct).acknowledge(
                    Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{rendered}]", reason=reason)
                )


def nag_resource(value: Any) -> str:
    """Render a resolved IAM resource the way cdk-nag names it in a finding ID
    (``<LogicalId.Arn>/runs/*``, ``arn:<AWS::Partition>:...``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((intrinsic, argument),) = value.items()
        if intrinsic == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if intrinsic == "Ref":
            return f"<{argument}>"
        if intrinsic == "Fn::Join":
            separator, parts = argument
            return str(separator).join(nag_resource(p) for p in parts)
    return str(value)


NIST = "NIST.800.53.R5"


def acknowledge_nist(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge cdk-nag's NIST 800-53 rev5 ``rule`` on ``construct`` (and what it holds)."""
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{NIST}-{rule}", reason=reason))


INLINE_POLICY_REASON = (
    "Each statement set belongs to exactly one principal and is created and deleted with it; a "
    "customer-managed policy could be attached to any other principal."
)
