"""The five job definitions, their least-privilege roles and their log group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Size, Stack, Validations
from aws_cdk import aws_batch as batch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

import job_images
from pipeline.constructs.nag import OBJECT_WILDCARD_REASON, acknowledge_wildcards
from pipeline.spec import RESOURCES, RETRY_RULES, RUN_PREFIX_PATTERN, PipelineSpec, RunEnv, prefixed

JOB_IMAGES_DIR = Path(job_images.__file__).resolve().parent
"""The default image's build context (Dockerfile + batch_jobs), shipped inside the wheel."""


@dataclass(frozen=True, kw_only=True)
class JobOverride:
    """Per-job changes to the spec; every field left as None keeps the spec's value."""

    command: Sequence[str] | None = None
    """Replaces the container command (``Ref::`` parameters still work)."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """Added to (and overriding) the environment the pipeline sets."""
    vcpus: float | None = None
    memory_mib: int | None = None
    timeout: Duration | None = None


def retry_strategies() -> list[batch.RetryStrategy]:
    """The spec's RETRY_RULES as CDK retry strategies (LocalBatch applies the same rules)."""
    return [
        batch.RetryStrategy.of(
            batch.Action.RETRY if rule.action == "RETRY" else batch.Action.EXIT,
            batch.Reason.custom(
                on_status_reason=rule.on_status_reason,
                on_reason=rule.on_reason,
                on_exit_code=rule.on_exit_code,
            ),
        )
        for rule in RETRY_RULES
    ]


class PipelineJobs(Construct):
    """One EcsJobDefinition per job of the spec, each with its own job role."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: PipelineSpec,
        name_prefix: str,
        image: ecs.ContainerImage | None,
        overrides: Mapping[str, JobOverride],
        buckets: Mapping[str, s3.IBucket],
        table: dynamodb.ITable,
        topic: sns.ITopic,
        topic_key: kms.IKey | None,
        resource_values: Mapping[str, str],
        default_parameters: Mapping[str, str],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self._buckets = buckets
        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=removal_policy
        )
        image = image or ecs.ContainerImage.from_asset(str(JOB_IMAGES_DIR))
        # One execution role: it only pulls the image and writes to the log group, which is the
        # same for every job. What a job may touch is in its own job role below.
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="Pulls the job image and writes job logs for the array-job pipeline",
        )
        Validations.of(self.execution_role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken supports no resource-level permissions; the "
                "image pull and log writes it enables are scoped to the repository and log group.",
            )
        )
        environment = {
            **{r.env: resource_values[r.key] for r in RESOURCES},
            RunEnv.ARRAY_SIZE: str(spec.array_size),
            "AWS_DEFAULT_REGION": Aws.REGION,
        }
        self.roles: dict[str, iam.Role] = {}
        self.definitions: dict[str, batch.EcsJobDefinition] = {}
        for job in spec:
            override = overrides.get(job.key, JobOverride())
            role = iam.Role(
                self,
                f"{job.key}Role",
                assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                description=f"Job role of {job.definition_name}: {job.description}",
            )
            statements = self._statements(job.key, table, topic)
            for statement in statements:
                role.add_to_principal_policy(statement)
            if job.key == "JobE" and topic_key is not None:
                topic_key.grant(role, "kms:Decrypt", "kms:GenerateDataKey")  # to publish
            acknowledge_wildcards(role, statements, OBJECT_WILDCARD_REASON)
            self._grant_keys(statements, role)
            self.roles[job.key] = role
            self.definitions[job.key] = batch.EcsJobDefinition(
                self,
                job.key,
                job_definition_name=prefixed(name_prefix, job.definition_name),
                container=batch.EcsEc2ContainerDefinition(
                    self,
                    f"{job.key}Container",
                    image=image,
                    cpu=job.vcpus,
                    memory=Size.mebibytes(job.memory_mib),
                    command=list(override.command or job.command),
                    environment={**environment, **override.environment},
                    job_role=role,
                    execution_role=self.execution_role,
                    logging=ecs.LogDriver.aws_logs(stream_prefix=job.key, log_group=self.log_group),
                ),
                parameters={
                    p: default_parameters[p] for p in job.parameters if p in default_parameters
                },
                propagate_tags=True,
                retry_attempts=job.retry_attempts,
                retry_strategies=retry_strategies(),
                timeout=override.timeout or Duration.seconds(job.timeout_seconds),
            )

    # --- least privilege, one job at a time ------------------------------------------------

    def _statements(
        self, job_key: str, table: dynamodb.ITable, topic: sns.ITopic
    ) -> list[iam.PolicyStatement]:
        """What each job may do. Run data lives under ``runs/<run-id>/`` in every bucket except
        the input bucket, which the pipeline only reads."""
        b = self._buckets
        inp, cpu, mem, out = (
            b["input_bucket"],
            b["cpu_results_bucket"],
            b["memory_results_bucket"],
            b["output_bucket"],
        )
        runs = RUN_PREFIX_PATTERN
        if job_key == "JobA":  # lists and validates the input; writes manifests and rejects
            return [
                _list(inp),
                _objects(["s3:GetObject"], inp, "*"),
                _objects(["s3:PutObject"], cpu, runs),
                _objects(["s3:PutObject"], out, runs),
            ]
        if job_key == "JobB":  # reads its shard's inputs, writes results
            return [
                _objects(["s3:GetObject"], inp, "*"),
                _objects(["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"], cpu, runs),
            ]
        if job_key == "JobC":  # reads JobB's results, writes outputs and one item per object
            return [
                _list(cpu, runs),
                _objects(["s3:GetObject"], cpu, runs),
                _objects(["s3:PutObject", "s3:AbortMultipartUpload"], mem, runs),
                iam.PolicyStatement(
                    actions=["dynamodb:BatchWriteItem", "dynamodb:PutItem"],
                    resources=[table.table_arn],
                ),
            ]
        if job_key == "JobD":  # reads everything, writes the validation report
            return [
                _list(inp),
                _objects(["s3:GetObject"], inp, "*"),
                *(_list(x, runs) for x in (cpu, mem, out)),
                _objects(["s3:GetObject"], cpu, runs),
                _objects(["s3:GetObject"], mem, runs),
                _objects(["s3:GetObject", "s3:PutObject"], out, runs),
                iam.PolicyStatement(
                    actions=["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"],
                    resources=[table.table_arn],
                ),
            ]
        if job_key == "JobE":  # removes intermediates, writes the summary, notifies
            return [
                _list(cpu, runs),
                _objects(["s3:DeleteObject"], cpu, runs),
                _list(out, runs),
                _objects(["s3:GetObject", "s3:PutObject"], out, runs),
                iam.PolicyStatement(actions=["sns:Publish"], resources=[topic.topic_arn]),
            ]
        raise ValueError(f"no permissions are defined for job {job_key!r}")

    def _grant_keys(self, statements: list[iam.PolicyStatement], role: iam.IRole) -> None:
        """Buckets brought with their own KMS key need key grants too (S3-managed ones do not),
        and only for the buckets this job's statements name."""
        keyed = [b for b in self._buckets.values() if b.encryption_key is not None]
        if not keyed:
            return
        stack = Stack.of(self)
        named = {str(stack.resolve(r)) for st in statements for r in st.resources}
        for bucket in keyed:
            bucket_arn = str(stack.resolve(bucket.bucket_arn))
            if any(bucket_arn in r for r in named):
                bucket.encryption_key.grant_encrypt_decrypt(role)  # type: ignore[union-attr]


def _list(bucket: s3.IBucket, prefix: str | None = None) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        actions=["s3:ListBucket"],
        resources=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": [prefix]}} if prefix else None,
    )


def _objects(actions: list[str], bucket: s3.IBucket, pattern: str) -> iam.PolicyStatement:
    return iam.PolicyStatement(actions=actions, resources=[bucket.arn_for_objects(pattern)])
