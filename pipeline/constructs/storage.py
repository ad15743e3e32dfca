"""BucketA/B/C, the output bucket, the metadata table and the notification topic.

Secure defaults are merged in one place (:func:`secure_bucket_props`); each resource can be
brought by the caller (``existing_*``) or created here with extra props (``*_props``), never both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Acknowledgment, Duration, FeatureFlags, RemovalPolicy, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from pipeline.errors import PipelineConfigError
from pipeline.spec import BUCKET_KEYS, TABLE_PARTITION_KEY, TABLE_SORT_KEY

_ACCESS_LOGS_BY_POLICY = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"

# Props a caller may not weaken through ``*_bucket_props``: each would undo a secure default.
_LOCKED_BUCKET_PROPS = {
    "enforce_ssl": True,
    "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
    "public_read_access": False,
}


def secure_bucket_props(
    *,
    removal_policy: RemovalPolicy,
    access_logs: s3.IBucket | None,
    access_logs_prefix: str,
    extra_lifecycle_rules: list[s3.LifecycleRule] | None = None,
) -> dict[str, Any]:
    """Props every bucket of the pipeline starts from: encrypted, TLS-only, private, logged."""
    destroy = removal_policy == RemovalPolicy.DESTROY
    return {
        "encryption": s3.BucketEncryption.S3_MANAGED,
        "enforce_ssl": True,
        "minimum_tls_version": 1.2,
        "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
        "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        "server_access_logs_bucket": access_logs,
        "server_access_logs_prefix": access_logs_prefix if access_logs else None,
        "removal_policy": removal_policy,
        "auto_delete_objects": destroy,
        "lifecycle_rules": [
            s3.LifecycleRule(
                id="AbortIncompleteUploads",
                abort_incomplete_multipart_upload_after=Duration.days(7),
            ),
            *(extra_lifecycle_rules or []),
        ],
    }


def merge_bucket_props(
    prop_name: str, defaults: dict[str, Any], user: Mapping[str, Any]
) -> dict[str, Any]:
    """User props over the secure defaults; refuses to turn off TLS-only or public blocking."""
    for key, locked in _LOCKED_BUCKET_PROPS.items():
        if key in user and user[key] != locked:
            raise PipelineConfigError(
                f"{prop_name}: {key}={user[key]!r} would weaken a secure default; remove it"
            )
    return {**defaults, **user}


class PipelineStorage(Construct):
    """The pipeline's data stores, created securely or brought by the caller."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        existing_buckets: Mapping[str, s3.IBucket | None],
        bucket_props: Mapping[str, Mapping[str, Any] | None],
        existing_table: dynamodb.ITable | None,
        table_props: Mapping[str, Any] | None,
        existing_topic: sns.ITopic | None,
        topic_props: Mapping[str, Any] | None,
        notification_email: str | None,
        intermediate_expiration: Duration,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        for name in existing_buckets:
            _exclusive(
                f"existing_{name}", existing_buckets[name], f"{name}_props", bucket_props.get(name)
            )
        _exclusive("existing_table", existing_table, "table_props", table_props)
        _exclusive("existing_topic", existing_topic, "topic_props", topic_props)

        self.access_logs_bucket: s3.Bucket | None = None
        if any(b is None for b in existing_buckets.values()):
            log_props = secure_bucket_props(
                removal_policy=removal_policy,
                access_logs=None,
                access_logs_prefix="",
                extra_lifecycle_rules=[
                    s3.LifecycleRule(id="ExpireAccessLogs", expiration=Duration.days(365))
                ],
            )
            if not FeatureFlags.of(self).is_enabled(_ACCESS_LOGS_BY_POLICY):
                # Without this flag (apps created before it existed) CDK grants the log
                # delivery group through an ACL, which needs ObjectWriter ownership.
                log_props["object_ownership"] = s3.ObjectOwnership.OBJECT_WRITER
            self.access_logs_bucket = s3.Bucket(self, "AccessLogs", **log_props)
            Validations.of(self.access_logs_bucket).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-S1",
                    reason="This bucket is the server access log destination of the pipeline's "
                    "buckets; logging it into itself would loop.",
                )
            )

        intermediate_rules = [
            s3.LifecycleRule(id="ExpireIntermediates", expiration=intermediate_expiration)
        ]
        self.buckets: dict[str, s3.IBucket] = {}
        for name, construct_id_ in _BUCKET_IDS.items():
            existing = existing_buckets.get(name)
            if existing is not None:
                self.buckets[name] = existing
                continue
            defaults = secure_bucket_props(
                removal_policy=removal_policy,
                access_logs=self.access_logs_bucket,
                access_logs_prefix=f"{construct_id_}/",
                extra_lifecycle_rules=intermediate_rules if name == "cpu_results_bucket" else None,
            )
            props = merge_bucket_props(f"{name}_props", defaults, bucket_props.get(name) or {})
            self.buckets[name] = s3.Bucket(self, construct_id_, **props)

        self.table: dynamodb.ITable = existing_table or dynamodb.Table(
            self,
            "MetadataTable",
            **{
                "partition_key": dynamodb.Attribute(
                    name=TABLE_PARTITION_KEY, type=dynamodb.AttributeType.STRING
                ),
                "sort_key": dynamodb.Attribute(
                    name=TABLE_SORT_KEY, type=dynamodb.AttributeType.STRING
                ),
                "billing_mode": dynamodb.BillingMode.PAY_PER_REQUEST,
                "point_in_time_recovery_specification": (
                    dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True)
                ),
                "encryption": dynamodb.TableEncryption.AWS_MANAGED,
                "removal_policy": removal_policy,
                **(table_props or {}),
            },
        )

        self.topic_key: kms.IKey | None = None
        if existing_topic is not None:
            self.topic: sns.ITopic = existing_topic
        else:
            # A customer-managed key, because EventBridge (the failure notifications) cannot
            # publish to a topic encrypted with the AWS-managed SNS key; the rule's SnsTopic
            # target grants EventBridge its use. It is the pipeline's one idle cost (a KMS
            # key's monthly fee).
            topic_key = kms.Key(
                self,
                "TopicKey",
                description="Encrypts the array-job pipeline's notification topic",
                enable_key_rotation=True,
                removal_policy=removal_policy,
            )
            self.topic_key = topic_key
            self.topic = sns.Topic(
                self,
                "NotificationTopic",
                **{
                    "display_name": "Array job pipeline",
                    "enforce_ssl": True,
                    "master_key": topic_key,
                    **(topic_props or {}),
                },
            )
        if notification_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(notification_email))

    def resource_values(self) -> dict[str, str]:
        """Name or ARN of each spec resource, keyed as in ``pipeline.spec.RESOURCES``."""
        return {
            **{key: bucket.bucket_name for key, bucket in self.buckets.items()},
            "metadata_table": self.table.table_name,
            "notification_topic": self.topic.topic_arn,
        }

    @property
    def input_bucket(self) -> s3.IBucket:
        return self.buckets["input_bucket"]

    @property
    def cpu_results_bucket(self) -> s3.IBucket:
        return self.buckets["cpu_results_bucket"]

    @property
    def memory_results_bucket(self) -> s3.IBucket:
        return self.buckets["memory_results_bucket"]

    @property
    def output_bucket(self) -> s3.IBucket:
        return self.buckets["output_bucket"]


_BUCKET_IDS = {
    "input_bucket": "BucketA",
    "cpu_results_bucket": "BucketB",
    "memory_results_bucket": "BucketC",
    "output_bucket": "OutputBucket",
}
"""Resource key -> construct ID. The IDs are stable: changing one replaces the bucket."""
assert tuple(_BUCKET_IDS) == BUCKET_KEYS, "a bucket of pipeline.spec.RESOURCES has no construct ID"


def _exclusive(existing_name: str, existing: object, props_name: str, props: object) -> None:
    if existing is not None and props is not None:
        raise PipelineConfigError(
            f"give either {existing_name} or {props_name}, not both: props only apply to a "
            "resource this construct creates"
        )
