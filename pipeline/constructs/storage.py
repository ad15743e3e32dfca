"""BucketA/B/C, the output bucket, the metadata table and the notification topic.

Secure defaults are merged in one place (:func:`secure_bucket_props`); each resource can be
brought by the caller (``existing_*``) or created here with extra props (``*_props``), never both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from pipeline.constructs.nag import acknowledge_nist
from pipeline.contract import TABLE_PARTITION_KEY, TABLE_SORT_KEY
from pipeline.errors import PipelineConfigError
from pipeline.spec import BUCKET_KEYS

_ACCESS_LOGS_BY_POLICY = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"

NONCURRENT_VERSION_EXPIRATION = Duration.days(30)
"""A versioned bucket keeps overwritten or deleted objects this long, so storage stays bounded."""

_BLOCK_ALL_FIELDS = (
    "block_public_acls",
    "block_public_policy",
    "ignore_public_acls",
    "restrict_public_buckets",
)


def _blocks_all(value: object) -> bool:
    return isinstance(value, s3.BlockPublicAccess) and all(
        getattr(value, name) is True for name in _BLOCK_ALL_FIELDS
    )


def _tls_at_least_1_2(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 1.2


# Props a caller may not weaken through ``*_bucket_props``, each with the test a value must
# pass and what the secure default is.
_LOCKED_BUCKET_PROPS: dict[str, tuple[Any, str]] = {
    "enforce_ssl": (lambda v: v is True, "True (TLS-only access)"),
    "minimum_tls_version": (_tls_at_least_1_2, "1.2 or higher"),
    "block_public_access": (_blocks_all, "BlockPublicAccess.BLOCK_ALL"),
    "public_read_access": (lambda v: v is False, "False"),
    "server_access_logs_bucket": (lambda v: v is not None, "a bucket (access logging on)"),
}
_LOCKED_TOPIC_PROPS: dict[str, tuple[Any, str]] = {
    "enforce_ssl": (lambda v: v is True, "True (TLS-only publishing)"),
}


def _describe(value: object) -> str:
    """A value for a one-line message: literals as written, objects by their type."""
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    if isinstance(value, s3.BlockPublicAccess):
        return "a BlockPublicAccess that does not block all public access"
    return f"a {type(value).__name__}"


def check_locked(
    prop_name: str, user: Mapping[str, Any], locked: Mapping[str, tuple[Any, str]]
) -> None:
    """Refuse, in one line naming the prop, a user prop that would weaken a secure default."""
    for key, (acceptable, default) in locked.items():
        if key in user and not acceptable(user[key]):
            raise PipelineConfigError(
                f"{prop_name}: {key}={_describe(user[key])} would weaken a secure default "
                f"({default}); remove it"
            )


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
    """User props over the secure defaults; refuses to turn off TLS-only access, the minimum
    TLS version, public access blocking or access logging."""
    check_locked(prop_name, user, _LOCKED_BUCKET_PROPS)
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
        intermediate_expiration: Duration,
        removal_policy: RemovalPolicy,
        encryption_key: kms.IKey,
        versioned: frozenset[str] = frozenset({"output_bucket"}),
        delete_input_bucket_with_stack: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        # Server access logs are delivered under a bucket policy (the logging service
        # principal, this account's buckets), never through the LogDeliveryWrite ACL that CDK
        # falls back to in apps without this feature flag, which would need ObjectWriter
        # ownership: every bucket here keeps BucketOwnerEnforced, whatever the app's flags.
        self.node.set_context(_ACCESS_LOGS_BY_POLICY, True)
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
            self.access_logs_bucket = s3.Bucket(self, "AccessLogs", **log_props)
            _acknowledge_bucket(self.access_logs_bucket, versioned=False)
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
            rules = list(intermediate_rules if name == "cpu_results_bucket" else [])
            if name in versioned:
                rules.append(
                    s3.LifecycleRule(
                        id="ExpireNoncurrentVersions",
                        noncurrent_version_expiration=NONCURRENT_VERSION_EXPIRATION,
                    )
                )
            # BucketA holds the user's inputs: DESTROY does not reach it unless asked by name.
            keep = name == "input_bucket" and not delete_input_bucket_with_stack
            defaults = secure_bucket_props(
                removal_policy=RemovalPolicy.RETAIN if keep else removal_policy,
                access_logs=self.access_logs_bucket,
                access_logs_prefix=f"{construct_id_}/",
                extra_lifecycle_rules=rules,
            )
            defaults["versioned"] = name in versioned
            props = merge_bucket_props(f"{name}_props", defaults, bucket_props.get(name) or {})
            self.buckets[name] = s3.Bucket(self, construct_id_, **props)
            _acknowledge_bucket(self.buckets[name], versioned=bool(props.get("versioned")))

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
                "encryption": dynamodb.TableEncryption.CUSTOMER_MANAGED,
                "encryption_key": encryption_key,
                "removal_policy": removal_policy,
                **(table_props or {}),
            },
        )

        if existing_table is None:
            acknowledge_nist(
                self.table,
                "DynamoDBInBackupPlan",
                "Point-in-time recovery keeps 35 days of continuous backups; an AWS Backup plan "
                "is the account's choice (its vault, schedule and cost), not this construct's.",
            )
        self.encryption_key = encryption_key
        if existing_topic is not None:
            self.topic: sns.ITopic = existing_topic
            self.topic_arn_for_key_policy = existing_topic.topic_arn
        else:
            check_locked("topic_props", topic_props or {}, _LOCKED_TOPIC_PROPS)
            # A name known at synth (the stack's name and the construct's path), so the key's
            # policy can name this topic: the topic is encrypted with the key, and a key
            # policy referring to the topic resource would be a dependency cycle.
            topic_name = (topic_props or {}).get("topic_name") or (
                f"{Aws.STACK_NAME}-{Names.unique_resource_name(self, max_length=100)}-Notifications"
            )
            # Under the pipeline's key: EventBridge (the failure notifications) cannot publish
            # to a topic encrypted with the AWS-managed SNS key.
            self.topic = sns.Topic(
                self,
                "NotificationTopic",
                **{
                    "display_name": "Array job pipeline",
                    "enforce_ssl": True,
                    "master_key": encryption_key,
                    **(topic_props or {}),
                    "topic_name": topic_name,
                },
            )
            self.topic_arn_for_key_policy = Stack.of(self).format_arn(
                service="sns", resource=topic_name, arn_format=ArnFormat.NO_RESOURCE_NAME
            )
        """The topic's ARN without a reference to the topic resource (for a topic made here),
        for the key policy."""

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


def _acknowledge_bucket(bucket: s3.IBucket, *, versioned: bool) -> None:
    acknowledge_nist(
        bucket,
        "S3DefaultEncryptionKMS",
        "SSE-S3 (AES-256) encrypts every object at rest; SSE-KMS would add a KMS request per "
        "object read and written (tens of thousands a run) and a kms:Decrypt grant to every "
        "job role, for no control this single-account pipeline uses.",
    )
    acknowledge_nist(
        bucket,
        "S3BucketReplicationEnabled",
        "Cross-region replication doubles storage and transfer cost; the inputs are the "
        "user's, the intermediates expire, and the outputs can be rebuilt by a run. Add "
        "replication through *_bucket_props where a second region is required.",
    )
    if not versioned:
        acknowledge_nist(
            bucket,
            "S3BucketVersioningEnabled",
            "Intermediates (BucketB, BucketC) are rewritten by every resume and expire; access "
            "logs are append-only; BucketA holds the user's inputs and is versioned with "
            "input_versioning=True. The output bucket is versioned.",
        )


def _exclusive(existing_name: str, existing: object, props_name: str, props: object) -> None:
    if existing is not None and props is not None:
        raise PipelineConfigError(
            f"give either {existing_name} or {props_name}, not both: props only apply to a "
            "resource this construct creates"
        )
