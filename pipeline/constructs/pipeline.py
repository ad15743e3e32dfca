"""ArrayJobPipeline: the whole array-job workflow as one construct."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, TypeVar, Unpack

import jsii
from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from constructs import Construct, IValidation

from pipeline.constructs import grants
from pipeline.constructs.checkov import apply_checkov_skips
from pipeline.constructs.compute import DEFAULT_MACHINE_IMAGE_TYPE, PipelineCompute
from pipeline.constructs.encryption import PipelineKey
from pipeline.constructs.failure_rule import FailureNotifications
from pipeline.constructs.job_definitions import JobOverride, PipelineJobs
from pipeline.constructs.network import PipelineNetwork
from pipeline.constructs.providers import drop_redundant_provider_dependencies
from pipeline.constructs.run_starter import RunStarter
from pipeline.constructs.storage import PipelineStorage
from pipeline.constructs.validation import (
    apply_overrides,
    check_capacity,
    check_props,
    checked_steps,
    config_check,
)
from pipeline.document import PipelineDocument
from pipeline.errors import PipelineConfigError
from pipeline.instances import (
    DEFAULT_CPU_INSTANCE_TYPES,
    DEFAULT_MAX_VCPUS,
    DEFAULT_MEMORY_INSTANCE_TYPES,
    UnknownInstanceTypeError,
)
from pipeline.limits import check_array_size, check_email, check_name_prefix
from pipeline.spec import (
    BUCKET_KEYS,
    DEFAULT_ARRAY_SIZE,
    DEFAULT_SPEC,
    QUEUE_NAME,
    RECIPIENT,
    SOURCE_BUCKET,
    PipelineSpec,
    prefixed,
)
from pipeline.steps import DEFAULT_STEPS, PipelineSteps

_T = TypeVar("_T")

DEFAULT_RUNNABLE_TIMEOUT = Duration.minutes(30)
DEFAULT_INTERMEDIATE_EXPIRATION = Duration.days(14)


class ArrayJobPipelineProps(TypedDict, total=False):
    """Props of :class:`ArrayJobPipeline`. Every prop is optional; each says what happens
    when it is left out."""

    name_prefix: str
    """Put in front of the queue and job definition names (``dev`` -> ``dev-ProdQueue``).
    Default: none, so the names are the workflow's own (``ProdQueue``,
    ``JobA-list-and-validate``); give each pipeline in one account its own prefix."""
    array_size: int
    """Children of JobB and JobC (one per manifest shard), 2..10,000. Default: 10,000. The
    submitter can still choose another size per run; this is the jobs' default."""
    vpc: ec2.IVpc
    """VPC for the compute environments. Default: a new VPC with public subnets only, no NAT
    gateway (no idle cost), S3 and DynamoDB gateway endpoints and flow logs."""
    vpc_subnets: ec2.SubnetSelection
    """Subnets for instances. Default: the new VPC's public subnets, or CDK's default
    selection (private with egress) in a VPC you bring."""
    max_vcpus: int
    """Upper bound of each compute environment. Default: 256. Must cover the largest job."""
    machine_image_type: batch.EcsMachineImageType
    """The ECS-optimized AMI family Batch launches instances from (the compute environments'
    Ec2Configuration ``imageType``); Batch takes that family's latest AMI and moves to newer
    ones with its managed updates. Default: ``ECS_AL2023`` (Amazon Linux 2's standard support
    ended on 2026-06-30; an ``ECS_AL2`` type warns at synth)."""
    spot: bool
    """Run on Spot with the SPOT_CAPACITY_OPTIMIZED allocation strategy. Default: On-Demand
    with BEST_FIT_PROGRESSIVE. Spot reclaims are retried by every job's retry strategy."""
    cpu_instance_types: Sequence[str]
    """Instance types of the CPU-optimized environment. Default: c6i.8xlarge, c6i.12xlarge,
    c6i.16xlarge (JobB needs 32 vCPUs). Each must be in ``pipeline/instances.py``."""
    memory_instance_types: Sequence[str]
    """Instance types of the memory-optimized environment. Default: r6i.2xlarge,
    r6i.4xlarge, r6i.8xlarge (JobC/JobD need 32768 MiB plus the ECS agent's headroom)."""
    runnable_timeout: Duration
    """How long a job that cannot be placed (misconfiguration) waits in RUNNABLE before the
    queue cancels it with a reason. Default: 30 minutes (Batch allows 10 minutes to 24 hours)."""
    existing_input_bucket: s3.IBucket
    """BucketA, the input. Default: a new encrypted, TLS-only, private bucket."""
    input_bucket_props: Mapping[str, Any]
    """Extra ``s3.Bucket`` props for a new BucketA (not with ``existing_input_bucket``)."""
    input_versioning: bool
    """Version a new BucketA, so an input overwritten during a run keeps the version JobA
    listed; noncurrent versions expire after 30 days. Default: False (BucketA holds the
    user's inputs, often large; the output bucket is always versioned)."""
    existing_cpu_results_bucket: s3.IBucket
    """BucketB, manifests and JobB's results. Default: a new bucket whose objects expire after
    ``intermediate_expiration``."""
    cpu_results_bucket_props: Mapping[str, Any]
    """Extra ``s3.Bucket`` props for a new BucketB."""
    existing_memory_results_bucket: s3.IBucket
    """BucketC, JobC's outputs. Default: a new bucket."""
    memory_results_bucket_props: Mapping[str, Any]
    """Extra ``s3.Bucket`` props for a new BucketC."""
    existing_output_bucket: s3.IBucket
    """Reports, rejects and summaries. Default: a new bucket."""
    output_bucket_props: Mapping[str, Any]
    """Extra ``s3.Bucket`` props for a new output bucket."""
    existing_table: dynamodb.ITable
    """Metadata table (partition key ``run_id``, sort key ``object_key``, strings). Default: a
    new on-demand table with point-in-time recovery."""
    table_props: Mapping[str, Any]
    """Extra ``dynamodb.Table`` props for a new table."""
    existing_topic: sns.ITopic
    """Notification topic. Default: a new TLS-only topic encrypted with the pipeline's key."""
    topic_props: Mapping[str, Any]
    """Extra ``sns.Topic`` props for a new topic."""
    notification_email: str
    """Subscribe this address to the topic (what SNS cannot deliver goes to the dead-letter
    queue) and to the alarm topic, and use it as JobE's default Recipient. Default: no
    subscription; the submitter passes a Recipient per run."""
    steps: PipelineSteps
    """Your work: the CPU step JobB runs on each object, the memory step JobC runs on each
    result, an optional aggregate step for JobE and checks for JobD (see
    :mod:`pipeline.steps`); checked at synth (each Python step is imported). Default: the
    library's own (SHA-256 and bzip2, byte statistics, the round-trip check)."""
    image: ecs.ContainerImage
    """Image for every job whose step brings none. Default: the library's, built from
    ``job_images/`` at deploy time."""
    plain_requests: bool
    """Let jobs submitted without this library's run environment (the AWS Batch User Guide's
    five SubmitJob requests as written, from the AWS CLI or any SDK) find their run: each job
    follows its ``dependsOn`` chain to JobA, whose job ID names the run, with DescribeJobs. AWS
    grants batch:DescribeJobs only on every job of the account and region, so with True every
    job role (and any step, or a step a hostile input subverts) can read any Batch job's
    description there, environment included. Default: False: runs come from ``python -m
    pipeline.submit`` and the starter, which pass the run environment, and a plain request's
    JobA fails, its log saying DescribeJobs was denied."""
    job_overrides: Mapping[str, JobOverride]
    """Per-job command, environment, vCPUs, memory or timeout, keyed by ``JobA``..``JobE``.
    Default: the values in ``pipeline/spec.py``."""
    log_retention: logs.RetentionDays
    """Retention of job and flow logs. Default: one month."""
    intermediate_expiration: Duration
    """Lifetime of objects in BucketB (manifests and JobB results). Default: 14 days."""
    failure_notifications: bool
    """Publish to the topic when a job or array parent on the queue fails (an EventBridge
    rule; dependents of a failed job never run, so JobE could not say it). Default: True."""
    removal_policy: RemovalPolicy
    """What happens to the pipeline's own buckets, table, logs and key when the stack is
    deleted. Default: RETAIN. With DESTROY, they are emptied and deleted with the stack, except
    BucketA (the inputs) and anything you brought (``existing_*``), which are never deleted."""
    delete_input_bucket_with_stack: bool
    """With ``removal_policy=DESTROY``, also empty and delete a BucketA this construct created,
    with every input in it. Default: False (BucketA is retained whatever the removal policy)."""
    run_schedule: scheduler.ScheduleExpression
    """Start a run with the pipeline's defaults (array size, SourceBucket, Recipient) on this
    EventBridge Scheduler schedule, e.g. ``ScheduleExpression.cron(minute="0", hour="2",
    time_zone=TimeZone.EUROPE_LONDON)`` or ``ScheduleExpression.rate(Duration.hours(6))``.
    Default: no schedule."""
    run_on_upload: bool
    """Start a run when a ready marker lands in BucketA: write the inputs under a prefix, then
    ``<prefix>/_READY`` (or ``_READY`` for the whole bucket); the run lists only that prefix,
    so one upload of any size makes one run. Turns on BucketA's EventBridge notifications.
    Default: False."""
    allow_overlapping_runs: bool
    """Let the starter (a trigger, or a principal of :meth:`ArrayJobPipeline.grant_start_runs`)
    start a run while an earlier run is still active. Default: False: the starter skips its
    run and publishes why to the topic. Needs a starter (checked at synth)."""
    trigger_max_vcpu_hours: float
    """Refuse (and publish why) a run the starter starts whose worst case (children x vCPUs x
    timeout x attempts) exceeds this many vCPU-hours, as ``--max-vcpu-hours`` does. Default: no
    limit, and synthesis warns that the starter's runs are uncapped. Needs a starter (checked
    at synth)."""


_PROP_NAMES = frozenset(ArrayJobPipelineProps.__annotations__)


class ArrayJobPipeline(Construct):
    """The AWS Batch example array-job workflow: compute, ProdQueue, five job definitions,
    storage, roles and logs.

    Example::

        pipeline = ArrayJobPipeline(stack, "Pipeline", name_prefix="dev", array_size=100)
        pipeline.grant_read_output(analyst_role)

    Props are validated while the construct is built; a prop that cannot work raises
    :class:`pipeline.errors.PipelineConfigError` with a one-line message naming it.
    """

    def __init__(
        self, scope: Construct, construct_id: str, **props: Unpack[ArrayJobPipelineProps]
    ) -> None:
        super().__init__(scope, construct_id)
        self._grants = 0
        _check_prop_names(props)
        self.name_prefix = config_check(check_name_prefix, props.get("name_prefix", ""))
        array_size = config_check(
            check_array_size, props.get("array_size", DEFAULT_ARRAY_SIZE), "array_size"
        )
        email = props.get("notification_email") or None
        if email is not None:
            config_check(check_email, email, "notification_email")
        overrides = dict(props.get("job_overrides", {}))
        steps = config_check(checked_steps, props.get("steps", DEFAULT_STEPS), props.get("image"))
        spec = DEFAULT_SPEC.with_array_size(array_size)
        spec = config_check(apply_overrides, config_check(spec.with_steps, steps), overrides)
        self.spec: PipelineSpec = spec
        _claim_prefix(self, self.name_prefix)

        max_vcpus = props.get("max_vcpus", DEFAULT_MAX_VCPUS)
        check_props(props, default_max_vcpus=DEFAULT_MAX_VCPUS)
        removal_policy = props.get("removal_policy", RemovalPolicy.RETAIN)
        log_retention = props.get("log_retention", logs.RetentionDays.ONE_MONTH)

        self.encryption = PipelineKey(self, "Encryption", removal_policy=removal_policy)
        self.network = PipelineNetwork(
            self,
            "Network",
            encryption_key=self.encryption.key,
            vpc=props.get("vpc"),
            vpc_subnets=props.get("vpc_subnets"),
            log_retention=log_retention,
            removal_policy=removal_policy,
        )
        self.vpc: ec2.IVpc = self.network.vpc
        try:
            self.compute = PipelineCompute(
                self,
                "Compute",
                vpc=self.network.vpc,
                vpc_subnets=self.network.vpc_subnets,
                security_group=self.network.security_group,
                queue_name=prefixed(self.name_prefix, QUEUE_NAME),
                max_vcpus=max_vcpus,
                spot=props.get("spot", False),
                cpu_instance_types=props.get("cpu_instance_types", DEFAULT_CPU_INSTANCE_TYPES),
                memory_instance_types=props.get(
                    "memory_instance_types", DEFAULT_MEMORY_INSTANCE_TYPES
                ),
                runnable_timeout=props.get("runnable_timeout", DEFAULT_RUNNABLE_TIMEOUT),
                machine_image_type=props.get("machine_image_type", DEFAULT_MACHINE_IMAGE_TYPE),
            )
        except UnknownInstanceTypeError as error:
            raise PipelineConfigError(
                f"cpu_instance_types/memory_instance_types: {error}"
            ) from error
        check_capacity(spec, self.compute.instance_types, max_vcpus)

        self.storage = PipelineStorage(
            self,
            "Storage",
            existing_buckets={k: props.get(f"existing_{k}") for k in BUCKET_KEYS},  # type: ignore[misc]
            bucket_props={k: props.get(f"{k}_props") for k in BUCKET_KEYS},  # type: ignore[misc]
            existing_table=props.get("existing_table"),
            table_props=props.get("table_props"),
            existing_topic=props.get("existing_topic"),
            topic_props=props.get("topic_props"),
            intermediate_expiration=props.get(
                "intermediate_expiration", DEFAULT_INTERMEDIATE_EXPIRATION
            ),
            removal_policy=removal_policy,
            encryption_key=self.encryption.key,
            delete_input_bucket_with_stack=props.get("delete_input_bucket_with_stack", False),
            versioned=frozenset(
                {"output_bucket", *(["input_bucket"] if props.get("input_versioning") else [])}
            ),
        )
        self.jobs = PipelineJobs(
            self,
            "Jobs",
            spec=spec,
            name_prefix=self.name_prefix,
            image=props.get("image"),
            buckets=self.storage.buckets,
            table=self.storage.table,
            topic=self.storage.topic,
            encryption_key=self.encryption.key,
            resource_values=self.storage.resource_values(),
            default_parameters={
                SOURCE_BUCKET: f"s3://{self.storage.output_bucket.bucket_name}",
                RECIPIENT: email or "",
            },
            log_retention=log_retention,
            removal_policy=removal_policy,
            plain_requests=props.get("plain_requests", False),
        )
        self.failure_notifications = FailureNotifications(
            self,
            "FailureNotifications",
            queue=self.queue,
            topic=self.storage.topic,
            encryption_key=self.encryption.key,
            notification_email=email,
            rule=props.get("failure_notifications", True),
            removal_policy=removal_policy,
            topic_arn_for_key_policy=self.storage.topic_arn_for_key_policy,
        )
        self._starter_props = {
            "input_bucket_owned": props.get("existing_input_bucket") is None,
            "allow_overlap": props.get("allow_overlapping_runs", False),
            "max_vcpu_hours": props.get("trigger_max_vcpu_hours"),
            "log_retention": log_retention,
            "removal_policy": removal_policy,
        }
        self.starter: RunStarter | None = None
        """The starter function and its triggers: made by ``run_schedule``, ``run_on_upload``
        or :meth:`grant_start_runs`; None until one of them asks for it."""
        schedule = props.get("run_schedule")
        if schedule is not None or props.get("run_on_upload", False):
            self._add_starter(schedule=schedule, run_on_upload=props.get("run_on_upload", False))
        self.node.add_validation(_StarterPropsUsed(self, props))
        drop_redundant_provider_dependencies(Stack.of(self))
        apply_checkov_skips(self)

    # --- what other constructs use ----------------------------------------------------------

    @property
    def queue(self) -> batch.JobQueue:
        """ProdQueue (with the name prefix, if any)."""
        return self.compute.queue

    @property
    def job_definitions(self) -> dict[str, batch.EcsJobDefinition]:
        """The job definitions, keyed ``JobA``..``JobE``."""
        return self.jobs.definitions

    @property
    def buckets(self) -> dict[str, s3.IBucket]:
        """The buckets keyed as in ``pipeline.spec.RESOURCES`` (``input_bucket``, ...)."""
        return self.storage.buckets

    @property
    def table(self) -> dynamodb.ITable:
        return self.storage.table

    @property
    def topic(self) -> sns.ITopic:
        return self.storage.topic

    @property
    def log_group(self) -> logs.LogGroup:
        return self.jobs.log_group

    def document(self) -> PipelineDocument:
        """The effective pipeline as deployed (its values are tokens until deploy time): what
        ``PipelineStack`` publishes for ``python -m pipeline.submit --stack``. Publish it from
        your own stack with ``CfnOutput(stack, DOCUMENT_OUTPUT, value=stack.to_json_string(
        pipeline.document().as_json()))``."""
        return PipelineDocument(
            queue=self.queue.job_queue_arn,
            queue_name=self.queue.job_queue_name,
            job_definitions={
                key: definition.job_definition_arn
                for key, definition in self.job_definitions.items()
            },
            definition_names={
                job.key: prefixed(self.name_prefix, job.definition_name) for job in self.spec
            },
            spec=self.spec,
            parameters=self.jobs.parameter_defaults,
            resources=self.storage.resource_values(),
            log_group=self.log_group.log_group_name,
            images={
                key: definition.node.default_child.container_properties.image  # type: ignore[union-attr]
                for key, definition in self.job_definitions.items()
            },
        )

    def grant_read_output(self, grantee: iam.IGrantable) -> iam.Policy | None:
        """Let ``grantee`` list and read the runs' reports, rejects and summaries in the
        output bucket (``runs/*`` only), and nothing else.

        For a role, user or group the statements go into a policy of their own, and the
        cdk-nag acknowledgement of their object wildcard is on that policy only: a wildcard
        the grantee has from elsewhere is still reported. Returns that policy (None for other
        principals, which get the statements on their own policy, unacknowledged)."""
        statements = grants.read_output_statements(self.storage.output_bucket)
        return self._grant(grantee, "ReadOutput", statements, grants.READ_OUTPUT_REASON)

    def grant_start_runs(self, grantee: iam.IGrantable) -> iam.Policy | None:
        """Let ``grantee`` start runs of the pipeline as deployed, and nothing else: invoke the
        starter function (made here if no trigger made it), which submits the five
        job-definition revisions the stack registered with the deployed defaults, its
        pre-flight, overlap rule and ``trigger_max_vcpu_hours``. The event the grantee sends
        chooses when a run starts (and, an upload event, which prefix of BucketA it lists),
        never a command, image, environment or role: this is the grant for people who should
        run the pipeline but not run code of their own as its job roles (which
        :meth:`grant_submit_jobs` amounts to). Returns the policy (see
        :meth:`grant_read_output`)."""
        starter = self._add_starter(schedule=None, run_on_upload=False)
        return self._grant(
            grantee, "StartRuns", grants.start_runs_statements(starter.function), None
        )

    def grant_submit_jobs(self, grantee: iam.IGrantable) -> iam.Policy | None:
        """Let ``grantee`` do what ``python -m pipeline.submit`` does with this pipeline:
        read the stack's document, describe the job definitions, queue and compute
        environments (pre-flight), submit and tag this pipeline's jobs, watch them, cancel
        or terminate them, read their logs for the failure report, and report on and
        diagnose runs.

        Submitting is limited to this stack's queue and the exact job-definition revisions it
        deployed; cancelling and terminating to jobs carrying this pipeline's
        ``array-pipeline:pipeline`` tag, which the submitter sets on every job (and which the
        grantee cannot put on a job another pipeline tagged). But SubmitJob has no condition
        key that restricts container overrides: the grantee can run any command as any of the
        five job roles (read all of BucketA, forge any run's records and summary, delete
        every run's intermediates, publish anything to the topic). Grant it only to whom you
        would let run code with those roles; :meth:`grant_start_runs` starts runs without
        that power. Returns the policy holding the statements (see
        :meth:`grant_read_output`)."""
        statements = grants.submit_jobs_statements(
            self.queue,
            prefixed(self.name_prefix, QUEUE_NAME),
            # The exact revisions this stack deployed, as the starter has: a revision
            # registered later under the same name (one without `user`, say, whose jobs would
            # run as root) is not submittable under this grant.
            [d.job_definition_arn for d in self.job_definitions.values()],
            self.log_group,
            Stack.of(self),
            self.storage.buckets["input_bucket"],
        )
        return self._grant(grantee, "SubmitJobs", statements, grants.SUBMIT_JOBS_REASON)

    def _grant(
        self,
        grantee: iam.IGrantable,
        purpose: str,
        statements: list[iam.PolicyStatement],
        reason: str | None,
    ) -> iam.Policy | None:
        self._grants += 1
        return grants.attach(self, f"{purpose}Grant{self._grants}", grantee, statements, reason)

    def _add_starter(
        self, *, schedule: scheduler.ScheduleExpression | None, run_on_upload: bool
    ) -> RunStarter:
        """The starter, made once: by the triggers while the construct is built, or by the
        first :meth:`grant_start_runs`."""
        if self.starter is not None:
            return self.starter
        self.starter = RunStarter(
            self,
            "Starter",
            queue=self.queue,
            queue_name=prefixed(self.name_prefix, QUEUE_NAME),
            job_definitions=self.job_definitions,
            input_bucket=self.storage.buckets["input_bucket"],
            topic=self.storage.topic,
            encryption_key=self.encryption.key,
            schedule=schedule,
            run_on_upload=run_on_upload,
            dead_letter_queue=self.failure_notifications.dead_letters,
            **self._starter_props,  # type: ignore[arg-type]
        )
        apply_checkov_skips(self)
        return self.starter


@jsii.implements(IValidation)
class _StarterPropsUsed:
    """``allow_overlapping_runs`` and ``trigger_max_vcpu_hours`` rule the runs the starter
    starts; a pipeline that has none (no trigger, no ``grant_start_runs``) would ignore them."""

    def __init__(self, pipeline: ArrayJobPipeline, props: Mapping[str, object]) -> None:
        self.pipeline = pipeline
        self.names = [n for n in ("allow_overlapping_runs", "trigger_max_vcpu_hours") if n in props]

    def validate(self) -> list[str]:
        if self.pipeline.starter is not None:
            return []
        return [
            f"{name} applies to runs the starter starts; add run_schedule or run_on_upload, "
            "call grant_start_runs, or remove it"
            for name in self.names
        ]


def _check_prop_names(props: Mapping[str, object]) -> None:
    for name in props:
        if name not in _PROP_NAMES:
            close = difflib.get_close_matches(name, sorted(_PROP_NAMES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PipelineConfigError(f"ArrayJobPipeline has no prop {name!r}{hint}")


def _claim_prefix(pipeline: ArrayJobPipeline, prefix: str) -> None:
    """Two pipelines with one prefix in one account and region would collide on the queue and
    job definition names at deploy time; say so at synth instead. Stacks without an explicit
    environment count as one account."""
    stack = Stack.of(pipeline)
    root = pipeline.node.root
    claimed: dict[str, str] = getattr(root, "_array_job_pipeline_prefixes", {})
    where = f"{stack.account}/{stack.region}/{prefix}"
    if where in claimed:
        raise PipelineConfigError(
            f"name_prefix {prefix!r} is already used by {claimed[where]} in the same account "
            "and region; give each ArrayJobPipeline its own name_prefix"
        )
    claimed[where] = pipeline.node.path
    root._array_job_pipeline_prefixes = claimed  # type: ignore[attr-defined]
