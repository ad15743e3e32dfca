"""The five job definitions, their least-privilege roles and their log group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jsii
from aws_cdk import (
    Acknowledgment,
    Aws,
    Duration,
    RemovalPolicy,
    Size,
    Stack,
    Validations,
)
from aws_cdk import aws_batch as batch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct, IValidation

from pipeline import contract
from pipeline.constructs.encryption import via_dynamodb, via_s3, via_sns
from pipeline.constructs.image import default_job_image
from pipeline.constructs.nag import (
    INLINE_POLICY_REASON,
    OBJECT_WILDCARD_REASON,
    acknowledge_nist,
    acknowledge_wildcards,
)
from pipeline.spec import (
    JOB_USER_ID,
    QUEUE_NAME,
    RESOURCES,
    RETRY_RULES,
    SCRATCH,
    SCRATCH_MOUNT_OPTIONS,
    Access,
    JobSpec,
    PipelineSpec,
    job_role_path,
    prefixed,
    scratch_size_mib,
)


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
    """Per attempt; at least 60 seconds (AWS Batch's minimum)."""

    def spec_changes(self) -> dict[str, object]:
        """The override as :meth:`PipelineSpec.with_overrides` takes it: what the job
        definition is deployed with, and so what the published document says."""
        changes: dict[str, object] = {}
        if self.command is not None:
            changes["command"] = tuple(self.command)
        if self.environment:
            changes["environment"] = dict(self.environment)
        if self.vcpus is not None:
            changes["vcpus"] = self.vcpus
        if self.memory_mib is not None:
            changes["memory_mib"] = self.memory_mib
        if self.timeout is not None:
            changes["timeout_seconds"] = int(self.timeout.to_seconds())
        return changes


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
        buckets: Mapping[str, s3.IBucket],
        table: dynamodb.ITable,
        topic: sns.ITopic,
        encryption_key: kms.IKey,
        resource_values: Mapping[str, str],
        default_parameters: Mapping[str, str],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        plain_requests: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self._buckets = buckets
        self._table = table
        self._topic = topic
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=log_retention,
            removal_policy=removal_policy,
            encryption_key=encryption_key,
        )
        self.images = job_images(spec, image or default_job_image(self))
        """Job key -> its image: its step's, else the pipeline's (see :func:`job_images`)."""
        # One execution role: it only pulls the image and writes to the log group, which is the
        # same for every job. What a job may touch is in its own job role below.
        # The pipeline's roles share an IAM path of its own, which its job definitions' role
        # ARNs carry: `--queue` discovery, which has no stack to compare with, refuses a
        # revision whose roles are not on it (pipeline/runs/discovery.py). Making a role on
        # this path takes iam:CreateRole on it, far more than registering a job definition.
        role_path = job_role_path(prefixed(name_prefix, QUEUE_NAME))
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=_ecs_tasks(),
            description="Pulls the job image and writes job logs for the array-job pipeline",
            path=role_path,
        )
        Validations.of(self.execution_role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken supports no resource-level permissions; the "
                "image pull and log writes it enables are scoped to the repository and log group. "
                "A synth-time check fails if any other action on this role gets Resource *.",
            )
        )
        self.execution_role.node.add_validation(
            _OnlyTheseOnEveryResource(self.execution_role, {"ecr:GetAuthorizationToken"})
        )
        acknowledge_nist(self.execution_role, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
        environment = {
            **{r.env: resource_values[r.key] for r in RESOURCES},
            contract.ARRAY_SIZE: str(spec.array_size),
            "AWS_DEFAULT_REGION": Aws.REGION,
            "TMPDIR": SCRATCH,  # where tempfile, and most tools a step runs, write
        }
        self.parameter_defaults: dict[str, dict[str, str]] = {
            job.key: {p: default_parameters[p] for p in job.parameters if p in default_parameters}
            for job in spec
        }
        """Job key -> the parameter defaults its definition is registered with."""
        self.roles: dict[str, iam.Role] = {}
        self.definitions: dict[str, batch.EcsJobDefinition] = {}
        for job in spec:
            role = iam.Role(
                self,
                f"{job.key}Role",
                assumed_by=_ecs_tasks(),
                description=f"Job role of {job.definition_name}: {job.description}",
                path=role_path,
            )
            acknowledge_nist(role, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
            statements = [self._statement(access) for access in job.access]
            for statement in statements:
                role.add_to_principal_policy(statement)
            # Keys are used through the service that needs them, held to its resource where
            # the service documents an encryption context (see pipeline/constructs/encryption.py).
            key_statements = [
                *(via_sns(topic) if _publishes(job) else []),
                *(via_dynamodb(table) if _uses_table(job) else []),
                *self._bucket_keys(job.access),
            ]
            for statement in key_statements:
                role.add_to_principal_policy(statement)
            acknowledge_wildcards(role, statements, OBJECT_WILDCARD_REASON)
            if plain_requests:
                _allow_finding_plain_runs(role)
            self.roles[job.key] = role
            self.definitions[job.key] = batch.EcsJobDefinition(
                self,
                job.key,
                job_definition_name=prefixed(name_prefix, job.definition_name),
                container=batch.EcsEc2ContainerDefinition(
                    self,
                    f"{job.key}Container",
                    image=self.images[job.key],
                    cpu=job.vcpus,
                    memory=Size.mebibytes(job.memory_mib),
                    command=list(job.command),
                    environment={**environment, **spec.environment_of(job)},
                    job_role=role,
                    execution_role=self.execution_role,
                    # Non-root, whatever the image says: the hosts' firewall keeps every uid
                    # but root from the instance metadata service (see compute.py).
                    user=str(JOB_USER_ID),
                    # Nothing a job runs can change its image: the root filesystem is read-only
                    # and the one writable place is the scratch tmpfs (see scratch_tmpfs).
                    readonly_root_filesystem=True,
                    linux_parameters=scratch_tmpfs(self, f"{job.key}Scratch", job.memory_mib),
                    logging=ecs.LogDriver.aws_logs(stream_prefix=job.key, log_group=self.log_group),
                ),
                parameters=self.parameter_defaults[job.key],
                propagate_tags=True,
                retry_attempts=job.retry_attempts,
                retry_strategies=retry_strategies(),
                timeout=Duration.seconds(job.timeout_seconds),
            )

    # --- least privilege, one job at a time ------------------------------------------------

    def _statement(self, access: Access) -> iam.PolicyStatement:
        """One ``pipeline.spec.Access`` as IAM: bucket listing limited to its prefix, object
        actions on the prefix's objects, table and topic actions on the resource."""
        if access.resource == "metadata_table":
            return iam.PolicyStatement(
                actions=list(access.actions), resources=[self._table.table_arn]
            )
        if access.resource == "notification_topic":
            return iam.PolicyStatement(
                actions=list(access.actions), resources=[self._topic.topic_arn]
            )
        bucket = self._buckets[access.resource]
        if access.lists_bucket:
            return iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions=(
                    {"StringLike": {"s3:prefix": [access.prefix]}} if access.prefix else None
                ),
            )
        return iam.PolicyStatement(
            actions=list(access.actions),
            resources=[bucket.arn_for_objects(access.prefix or "*")],
        )

    def _bucket_keys(self, accesses: Sequence[Access]) -> list[iam.PolicyStatement]:
        """Buckets brought with a KMS key need key statements too (S3-managed ones do not),
        and only for the buckets this job touches: decrypt to read, and generate data keys
        where the job writes."""
        found: list[iam.PolicyStatement] = []
        for key, bucket in self._buckets.items():
            touching = [a for a in accesses if a.resource == key]
            if touching and bucket.encryption_key is not None:
                writes = any(action in _WRITES for a in touching for action in a.actions)
                found += via_s3(bucket, writes=writes)
        return found


_WRITES = frozenset({"s3:PutObject", "s3:AbortMultipartUpload"})


def scratch_tmpfs(scope: Construct, construct_id: str, memory_mib: int) -> batch.LinuxParameters:
    """``/tmp`` as a tmpfs for an EC2 job (AWS Batch's ``linuxParameters.tmpfs``, "Tmpfs",
    AWS Batch API Reference). Batch supports no tmpfs on Fargate ("This object isn't
    applicable to jobs that are running on Fargate resources"), where a job's writable
    storage is the task's ephemeral storage instead: every job definition here is an EC2 one,
    on the pipeline's EC2 compute environments."""
    parameters = batch.LinuxParameters(scope, construct_id)
    parameters.add_tmpfs(
        batch.Tmpfs(
            container_path=SCRATCH,
            size=Size.mebibytes(scratch_size_mib(memory_mib)),
            mount_options=[batch.TmpfsMountOption(o.upper()) for o in SCRATCH_MOUNT_OPTIONS],
        )
    )
    return parameters


def job_images(spec: PipelineSpec, default: ecs.ContainerImage) -> dict[str, ecs.ContainerImage]:
    """Each job's image: JobB's, JobC's and JobE's that of their step when it brings one; JobD's
    (which runs the steps' checks) the memory step's, else the CPU step's, when the steps have
    checks of their own; ``default`` (the pipeline's) otherwise."""
    steps = spec.steps
    own_checks = any(not c.startswith("pipeline.") for c in steps.checks)
    images: dict[str, ecs.ContainerImage] = {}
    for job in spec:
        step = steps.step_for(job.step) if job.step else None
        image = step.image if step is not None else None
        if job.step == "check" and own_checks:
            image = steps.memory.image or steps.cpu.image
        images[job.key] = image or default
    return images


def _ecs_tasks() -> iam.IPrincipal:
    """ECS tasks of this account and region only: the confused-deputy conditions the Amazon ECS
    Developer Guide gives for task role trust policies ("Amazon ECS task IAM role")."""
    return iam.ServicePrincipal("ecs-tasks.amazonaws.com").with_conditions(
        {
            "ArnLike": {
                "aws:SourceArn": f"arn:{Aws.PARTITION}:ecs:{Aws.REGION}:{Aws.ACCOUNT_ID}:*"
            },
            "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
        }
    )


PLAIN_REQUESTS_REASON = (
    "batch:DescribeJobs supports no resource-level permissions (Service Authorization "
    "Reference, Actions defined by AWS Batch: no resource type), so it is granted on *. A job "
    "calls it only when submitted without PIPELINE_RUN_ID (the User Guide's requests as "
    "written), to follow its dependsOn chain to JobA, whose job ID names the run. A synth-time "
    "check fails if any other action on this role gets Resource *. Only with "
    "plain_requests=True (default False)."
)


def _allow_finding_plain_runs(role: iam.Role) -> None:
    """Let the job follow a plain request's dependsOn chain (see PLAIN_REQUESTS_REASON)."""
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["batch:DescribeJobs"], resources=["*"])
    )
    Validations.of(role).acknowledge(
        Acknowledgment(id="AwsSolutions-IAM5[Resource::*]", reason=PLAIN_REQUESTS_REASON)
    )
    role.node.add_validation(_OnlyTheseOnEveryResource(role, {"batch:DescribeJobs"}))


@jsii.implements(IValidation)
class _OnlyTheseOnEveryResource:
    """A role's IAM5 acknowledgement of ``Resource::*`` covers the ``allowed`` actions and
    nothing else: any other action granted on ``*`` fails synthesis here."""

    def __init__(self, role: iam.Role, allowed: set[str]) -> None:
        self.role = role
        self.ALLOWED = frozenset(allowed)

    def validate(self) -> list[str]:
        stack = Stack.of(self.role)
        policy = self.role.node.try_find_child("DefaultPolicy")
        if policy is None:
            return []
        document = stack.resolve(policy.document.to_json())  # type: ignore[attr-defined]
        wrong: set[str] = set()
        for statement in document.get("Statement", []):
            resources = statement.get("Resource", [])
            if "*" in ([resources] if isinstance(resources, str) else resources):
                actions = statement.get("Action", [])
                wrong |= set([actions] if isinstance(actions, str) else actions) - self.ALLOWED
        if not wrong:
            return []
        return [
            f"{self.role.node.path} grants {', '.join(sorted(wrong))} on every resource; its "
            f"cdk-nag acknowledgement covers only {', '.join(sorted(self.ALLOWED))}: scope the "
            "grant"
        ]


def _publishes(job: JobSpec) -> bool:
    return any("sns:Publish" in a.actions for a in job.access)


def _uses_table(job: JobSpec) -> bool:
    return any(a.resource == "metadata_table" for a in job.access)
