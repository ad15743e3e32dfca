"""What each ``grant_*`` method of ``ArrayJobPipeline`` gives, as IAM statements, and how a
grant is attached: in a policy of its own, whose cdk-nag acknowledgements cover its own
wildcards only.

What the grants amount to:

- ``grant_read_output``: list and read ``runs/*`` of the output bucket.
- ``grant_start_runs``: invoke the starter function, nothing else. The starter submits the
  job-definition revisions the stack registered, with the run environment and the deployed
  resources; the event a grantee sends chooses when a run starts and (an upload event) which
  prefix of BucketA it lists, never a command, an image, an environment variable or a role.
- ``grant_submit_jobs``: what ``python -m pipeline.submit`` calls (listing BucketA's keys
  included, to size a run to its input). SubmitJob has no condition
  key that restricts ``containerOverrides`` (Service Authorization Reference, "Actions,
  resources, and condition keys for AWS Batch"), so a grantee may override the command of any
  of the five jobs and run code as every job role: read all of BucketA, forge any run's records
  and summary, delete every run's intermediates and publish anything to the topic.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from pipeline.constructs.encryption import via_s3
from pipeline.constructs.nag import (
    GRANT_WILDCARD_REASON,
    INLINE_POLICY_REASON,
    OBJECT_WILDCARD_REASON,
    acknowledge_nist,
    acknowledge_wildcards,
)
from pipeline.constructs.permissions import list_input_statement, run_statements
from pipeline.contract import RUN_PREFIX_PATTERN


def read_output_statements(bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    """List and read ``runs/*`` of the output bucket, and (a bucket brought with a KMS key)
    decrypt its objects through S3 only."""
    return [
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [RUN_PREFIX_PATTERN]}},
        ),
        iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(RUN_PREFIX_PATTERN)]
        ),
        *via_s3(bucket, writes=False),
    ]


def start_runs_statements(function: lambda_.IFunction) -> list[iam.PolicyStatement]:
    """Invoke the starter function, unqualified (no version or alias ARN): nothing more."""
    return [
        iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[function.function_arn])
    ]


def submit_jobs_statements(
    queue: batch.IJobQueue,
    queue_name: str,
    definition_arns: Sequence[str],
    log_group: logs.ILogGroup,
    stack: Stack,
    input_bucket: s3.IBucket,
) -> list[iam.PolicyStatement]:
    """What the command line calls for run, watch, status, resume, cancel, report and
    diagnose, on this pipeline's queue, revisions, jobs, stack and log group, and the
    listing of BucketA that sizes a run to its input."""
    return [
        *run_statements(queue, queue_name, definition_arns),
        list_input_statement(input_bucket),
        # diagnose: the job's position at the front of this queue.
        iam.PolicyStatement(actions=["batch:GetJobQueueSnapshot"], resources=[queue.job_queue_arn]),
        iam.PolicyStatement(actions=["cloudformation:DescribeStacks"], resources=[stack.stack_id]),
        iam.PolicyStatement(actions=["logs:GetLogEvents"], resources=[log_group.log_group_arn]),
    ]


READ_OUTPUT_REASON = OBJECT_WILDCARD_REASON
SUBMIT_JOBS_REASON = GRANT_WILDCARD_REASON


def attach(
    scope: Construct,
    construct_id: str,
    grantee: iam.IGrantable,
    statements: list[iam.PolicyStatement],
    reason: str | None,
) -> iam.Policy | None:
    """Give ``grantee`` the statements: for a role, user or group, in a policy of its own whose
    cdk-nag acknowledgements cover these statements' wildcards only, for ``reason`` (so a
    wildcard the grantee has from elsewhere is still reported; None: the statements have no
    wildcard to acknowledge, and one added later is reported); for any other principal, on its
    own policy, unacknowledged. Returns the policy (None for other principals)."""
    principal = grantee.grant_principal
    holders = {
        "roles": [principal] if _has(principal, "role_name") else [],
        "users": [principal] if _has(principal, "user_name") else [],
        "groups": [principal] if _has(principal, "group_name") else [],
    }
    if not any(holders.values()):
        for statement in statements:
            principal.add_to_principal_policy(statement)
        return None
    policy = iam.Policy(scope, construct_id, statements=statements, **holders)  # type: ignore[arg-type]
    if reason is not None:
        acknowledge_wildcards(policy, statements, reason)
    acknowledge_nist(policy, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
    return policy


def _has(principal: object, attribute: str) -> bool:
    try:
        return getattr(principal, attribute, None) is not None
    except Exception:  # jsii raises for attributes an interface proxy does not have
        return False
