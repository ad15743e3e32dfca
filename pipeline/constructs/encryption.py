"""The pipeline's one customer-managed KMS key.

It encrypts the notification and alarm topics, the metadata table, the job and flow log groups
and the notifications' dead-letter queue. One key because a customer-managed key is the one
idle cost of the stack ($1 a month): EventBridge and CloudWatch cannot publish to a topic under
the AWS-managed SNS key, so the topics need one anyway, and the others then cost only their
(small, per-request) KMS calls. Rotation is on.
"""

from __future__ import annotations

from aws_cdk import Aws, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
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


# --- key use through a service ------------------------------------------------------------------
#
# Every identity-policy statement of this library that lets a principal use a KMS key does so
# only through the service that uses the key on the principal's behalf (kms:ViaService, "AWS
# KMS condition keys", AWS KMS Developer Guide: Amazon S3, Amazon SNS and Amazon DynamoDB are
# among the services that support it), and names the service's encryption context where the
# service documents one. A principal holding these statements cannot call kms:Decrypt on the
# key itself, for another service's data, or (S3, DynamoDB) for another bucket's or table's.


def _via(service: str) -> dict[str, str]:
    return {"kms:ViaService": f"{service}.{Aws.REGION}.amazonaws.com"}


def via_sns(topic: sns.ITopic) -> list[iam.PolicyStatement]:
    """What a publisher to ``topic`` needs of its key, if it has one: Amazon SNS generates and
    decrypts the message's data key with the publisher's permissions ("Key management",
    Amazon SNS Developer Guide: kms:GenerateDataKey and kms:Decrypt). SNS documents no
    encryption context for it, so the statement names the key and the service only."""
    key = topic.master_key
    if key is None:
        return []
    return [
        iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=[key.key_arn],
            conditions={"StringEquals": _via("sns")},
        )
    ]


def via_dynamodb(table: dynamodb.ITable) -> list[iam.PolicyStatement]:
    """What a reader or writer of ``table`` needs of its customer-managed key, if it has one.
    DynamoDB calls AWS KMS with an encryption context of the table's name and the account
    (``aws:dynamodb:tableName``, ``aws:dynamodb:subscriberId``; "How Amazon DynamoDB uses AWS
    KMS", AWS KMS Developer Guide), so the cryptographic actions are held to this table;
    DescribeKey carries no encryption context and is held to DynamoDB only."""
    key = table.encryption_key
    if key is None:
        return []
    return [
        iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
            resources=[key.key_arn],
            conditions={
                "StringEquals": {
                    **_via("dynamodb"),
                    "kms:EncryptionContext:aws:dynamodb:tableName": table.table_name,
                }
            },
        ),
        iam.PolicyStatement(
            actions=["kms:DescribeKey"],
            resources=[key.key_arn],
            conditions={"StringEquals": _via("dynamodb")},
        ),
    ]


def via_s3(bucket: s3.IBucket, *, writes: bool) -> list[iam.PolicyStatement]:
    """What a reader (and, ``writes``, a writer) of ``bucket`` needs of its KMS key, if it has
    one (SSE-KMS): S3 decrypts and generates data keys with the caller's permissions, with the
    object's ARN as encryption context (``aws:s3:arn``), or the bucket's with an S3 Bucket Key
    ("Using server-side encryption with AWS KMS keys (SSE-KMS)", Amazon S3 User Guide:
    "Encryption context"). The service is matched in any Region (``s3.*``): a bucket brought
    from another Region is encrypted under a key of that Region."""
    key = bucket.encryption_key
    if key is None:
        return []
    return [
        iam.PolicyStatement(
            actions=["kms:Decrypt", *(["kms:GenerateDataKey"] if writes else [])],
            resources=[key.key_arn],
            conditions={
                "StringLike": {"kms:ViaService": "s3.*.amazonaws.com"},
                "ArnLike": {
                    "kms:EncryptionContext:aws:s3:arn": [
                        bucket.bucket_arn,
                        bucket.arn_for_objects("*"),
                    ]
                },
            },
        )
    ]
