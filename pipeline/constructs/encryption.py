"""The pipeline's one customer-managed KMS key.

It encrypts the notification and alarm topics, the metadata table, the job and flow log groups
and the notifications' dead-letter queue. One key because a customer-managed key is the one
idle cost of the stack ($1 a month): EventBridge and CloudWatch cannot publish to a topic under
the AWS-managed SNS key, so the topics need one anyway, and the others then cost only their
(small, per-request) KMS calls. Rotation is on.
"""

from __future__ import annotations

from aws_cdk import Aws, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


class PipelineKey(Construct):
    """A rotated customer-managed key, usable by CloudWatch Logs for this account's log groups
    in this region."""

    def __init__(
        self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the array-job pipeline's topic, table, logs and queues",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        # CloudWatch Logs uses the key itself; the key policy must allow its regional service
        # principal, limited to this account's log groups by the encryption context
        # (CloudWatch Logs User Guide, "Encrypt log data in CloudWatch Logs using AWS KMS").
        # The guide's example also lists kms:Describe*, but DescribeKey carries no encryption
        # context, so under this condition it could never be allowed: it is left out.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsOfThisAccount",
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": f"arn:{Aws.PARTITION}:logs:"
                        f"{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"
                    }
                },
            )
        )
