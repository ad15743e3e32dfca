"""The starter: runs that start themselves, on a schedule or when inputs land in BucketA.

EventBridge Scheduler and EventBridge rules can target Batch, but submit one job with no
``dependsOn`` (aws-cdk issue #21878), so both triggers invoke a small Lambda function that runs
this library's own run engine (:mod:`pipeline.starter`): the same requests, chain, tags,
reconciliation, pre-flight and cost guard as ``python -m pipeline.submit``.

Its code is the engine's Python modules, copied into the asset by :class:`_EngineBundle` on
this machine (no Docker engine, no dependency download: the Lambda runtime's boto3 is enough).
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import (
    Acknowledgment,
    Annotations,
    AssetHashType,
    Aws,
    BundlingOptions,
    CfnResource,
    DockerImage,
    Duration,
    ILocalBundling,
    RemovalPolicy,
    Stack,
    Validations,
)
from aws_cdk import aws_batch as batch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from pipeline.constructs.encryption import via_sns
from pipeline.constructs.nag import INLINE_POLICY_REASON, acknowledge_nist, acknowledge_wildcards
from pipeline.constructs.permissions import list_input_statement, run_statements
from pipeline.contract import READY_MARKER
from pipeline.trigger_events import StarterSettings, schedule_event, upload_pattern

PACKAGE_DIR = Path(__file__).resolve().parents[1]
HANDLER_MODULE = "pipeline.starter"
RUNTIME = lambda_.Runtime.PYTHON_3_14
TIMEOUT = Duration.minutes(5)
"""Room for ListJobs of a week of runs, pre-flight and five SubmitJob calls with adaptive
retries under throttling; a start normally takes a few seconds."""
STARTER_WILDCARD_REASON = (
    "Batch job ARNs are made at submit time (SubmitJob/TagResource are held to this "
    "pipeline's tag; CancelJob/TerminateJob to jobs carrying it), and DescribeJobs, ListJobs, "
    "DescribeJobDefinitions, DescribeJobQueues and DescribeComputeEnvironments support no "
    "resource-level permissions (Service Authorization Reference, AWS Batch)."
)


class RunStarter(Construct):
    """The starter function and the triggers that invoke it.

    - ``schedule``: an EventBridge Scheduler schedule (with its own role, allowed to invoke
      this function only) whose input is :func:`pipeline.trigger_events.schedule_event`;
    - ``run_on_upload``: BucketA's events go to EventBridge, and a rule sends the starter each
      created object named ``_READY`` (one run per marker, listing the marker's prefix);
    - neither: the function alone, for the principals ``grant_start_runs`` lets invoke it.

    A start the function does not make (overlap, cost guard, pre-flight) is published to
    ``topic``; an unexpected error goes to ``topic`` as the invocation's failure destination
    (asynchronous invocations are not retried: a second attempt could start a second run).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queue: batch.IJobQueue,
        queue_name: str,
        job_definitions: Mapping[str, batch.IJobDefinition],
        input_bucket: s3.IBucket,
        input_bucket_owned: bool,
        topic: sns.ITopic,
        encryption_key: kms.IKey,
        schedule: scheduler.ScheduleExpression | None,
        run_on_upload: bool,
        allow_overlap: bool,
        max_vcpu_hours: float | None,
        dead_letter_queue: sqs.IQueue | None,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        if max_vcpu_hours is None:
            Annotations.of(scope).add_warning_v2(
                "array-job-pipeline:uncapped-triggers",
                "run_schedule/run_on_upload/grant_start_runs without trigger_max_vcpu_hours: a "
                "run the starter starts runs whatever its worst case (children x vCPUs x "
                "timeout x attempts; `python -m pipeline.submit run --dry-run` prints it); set "
                "trigger_max_vcpu_hours to refuse runs above a cost you accept",
            )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=encryption_key,
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="The array-job pipeline's starter: submits, lists and stops this "
            "pipeline's jobs",
        )
        # What any submitter needs, for exactly the definition revisions deployed (stopping
        # is for a chain whose submission failed, or a run that lost an overlap race).
        runs = run_statements(
            queue, queue_name, [d.job_definition_arn for d in job_definitions.values()]
        )
        logs_statement = iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[f"{self.log_group.log_group_arn}:*"],
        )
        # It publishes to the topic (why a run was not started) and so does Lambda, with this
        # role, for a failed asynchronous invocation (the on-failure destination); the topic's
        # key is used through SNS only (see pipeline/constructs/encryption.py).
        publish = [
            iam.PolicyStatement(actions=["sns:Publish"], resources=[topic.topic_arn]),
            *via_sns(topic),
        ]
        # Its runs are sized to their input: it lists the run's prefix of BucketA.
        listing = list_input_statement(input_bucket)
        self.policy = iam.Policy(
            self,
            "Policy",
            statements=[*runs, listing, logs_statement, *publish],
            roles=[self.role],
        )
        acknowledge_wildcards(self.policy, runs, STARTER_WILDCARD_REASON)
        acknowledge_wildcards(
            self.policy,
            [logs_statement],
            "Lambda names the function's log streams at run time; the wildcard is within the "
            "starter's own log group.",
        )
        settings = StarterSettings(
            queue=queue.job_queue_arn,
            job_definitions={k: d.job_definition_arn for k, d in job_definitions.items()},
            topic_arn=topic.topic_arn,
            input_bucket=input_bucket.bucket_name,
            allow_overlap=allow_overlap,
            max_vcpu_hours=max_vcpu_hours,
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description="Starts array-job pipeline runs as deployed (schedule, upload, grantees)",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=f"{HANDLER_MODULE}.handler",
            code=lambda_.Code.from_asset(
                str(PACKAGE_DIR),
                asset_hash_type=AssetHashType.OUTPUT,
                bundling=BundlingOptions(
                    # Never pulled: the local bundler below always succeeds.
                    image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
                    local=_EngineBundle(),
                ),
            ),
            role=self.role,
            memory_size=256,
            timeout=TIMEOUT,
            environment=settings.environment(),
            environment_encryption=encryption_key,
            log_group=self.log_group,
            retry_attempts=0,
            on_failure=_TopicDestination(topic),
        )
        self._order_after_policies()
        acknowledge_nist(self.role, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
        acknowledge_nist(self.policy, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
        for rule, reason in (
            (
                "LambdaConcurrency",
                "Triggers are rare and the starter settles overlapping starts itself; reserved "
                "concurrency would fail to deploy in accounts at the 10-execution minimum of "
                "unreserved concurrency, which new accounts have.",
            ),
            (
                "LambdaDLQ",
                "Asynchronous invocations are not retried (a retry could start a second run) "
                "and a failed one goes to the on-failure destination, the pipeline's topic; the "
                "upload rule keeps undeliverable events in the dead-letter queue.",
            ),
            (
                "LambdaInsideVPC",
                "The starter only calls AWS APIs (Batch, S3, SNS); in the pipeline's VPC, which "
                "has no NAT gateway, it would need interface endpoints, an idle cost.",
            ),
        ):
            acknowledge_nist(self.function, rule, reason)
        self.schedule: scheduler.Schedule | None = None
        if schedule is not None:
            # Scheduler's documented confused-deputy guard: only schedules of this account's
            # default group (where the schedule below is) may assume the role (EventBridge
            # Scheduler User Guide, "Set up the execution role": aws:SourceAccount and
            # aws:SourceArn, the schedule group's ARN).
            schedule_role = iam.Role(
                self,
                "ScheduleRole",
                assumed_by=iam.ServicePrincipal(
                    "scheduler.amazonaws.com",
                    conditions={
                        "StringEquals": {
                            "aws:SourceAccount": Aws.ACCOUNT_ID,
                            "aws:SourceArn": Stack.of(self).format_arn(
                                service="scheduler",
                                resource="schedule-group",
                                resource_name="default",
                            ),
                        }
                    },
                ),
                description="Lets the array-job pipeline's schedule invoke its starter",
            )
            acknowledge_nist(schedule_role, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
            Validations.of(schedule_role).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::<{_logical_id(self.function)}.Arn>:*]",
                    reason="CDK's grantInvoke covers the starter's versions and aliases "
                    "(<arn>:*); the role may invoke this one function only.",
                )
            )
            self.schedule = scheduler.Schedule(
                self,
                "Schedule",
                description="Starts an array-job pipeline run",
                schedule=schedule,
                target=scheduler_targets.LambdaInvoke(
                    self.function,
                    role=schedule_role,
                    input=scheduler.ScheduleTargetInput.from_object(
                        schedule_event(
                            scope.node.path,
                            scheduler.ContextAttribute.execution_id,
                            scheduler.ContextAttribute.scheduled_time,
                        )
                    ),
                ),
            )
        self.upload_rule: events.Rule | None = None
        if run_on_upload:
            _send_events_to_eventbridge(input_bucket, input_bucket_owned, self)
            self.upload_rule = events.Rule(
                self,
                "Upload",
                description=f"Array job pipeline: a {READY_MARKER} marker landed in BucketA",
                event_pattern=events.EventPattern(
                    source=["aws.s3"],
                    detail_type=["Object Created"],
                    detail=upload_pattern(input_bucket.bucket_name),
                ),
            )
            self.upload_rule.add_target(
                events_targets.LambdaFunction(
                    self.function,
                    dead_letter_queue=dead_letter_queue,
                    max_event_age=Duration.hours(24),
                    retry_attempts=185,
                )
            )

    def _order_after_policies(self) -> None:
        """The function starts once its policies exist (its first log line needs them). CDK
        also makes it depend on its role, which the role's GetAtt already implies (cfn-lint
        W3005), and a node dependency cannot be removed: the DependsOn is written here."""
        function_resource = self.function.node.default_child
        assert isinstance(function_resource, CfnResource)
        default_policy = self.role.node.try_find_child("DefaultPolicy")  # if CDK made one
        policies = [self.policy.node.default_child, *([default_policy] if default_policy else [])]
        logical_ids = []
        for policy in policies:
            resource = policy.node.default_child if isinstance(policy, iam.Policy) else policy
            assert isinstance(resource, CfnResource)
            logical_ids.append(resource.logical_id)
        function_resource.add_override("DependsOn", logical_ids)


@jsii.implements(lambda_.IDestination)
class _TopicDestination:
    """Like aws_lambda_destinations.SnsDestination, without its Topic.grantPublish, which
    would give the role the topic key's kms:Decrypt and kms:GenerateDataKey* outside SNS: the
    starter's policy already lets it publish, and use the key through SNS only."""

    def __init__(self, topic: sns.ITopic) -> None:
        self.topic = topic

    def bind(
        self, scope: Construct, fn: lambda_.IFunction, *, type: lambda_.DestinationType
    ) -> lambda_.DestinationConfig:
        return lambda_.DestinationConfig(destination=self.topic.topic_arn)


def _logical_id(function: lambda_.Function) -> str:
    cfn = function.node.default_child
    assert isinstance(cfn, lambda_.CfnFunction)
    return str(Stack.of(function).resolve(cfn.logical_id))


def _send_events_to_eventbridge(bucket: s3.IBucket, owned: bool, scope: Construct) -> None:
    """Turn on BucketA's EventBridge notifications: a property of a bucket this stack owns
    (no custom resource), or the owner's job for a bucket brought in."""
    if owned:
        cfn = bucket.node.default_child
        assert isinstance(cfn, s3.CfnBucket)
        cfn.add_property_override(
            "NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True
        )
        return
    Annotations.of(scope).add_warning_v2(
        "array-job-pipeline:existing-bucket-events",
        "run_on_upload with existing_input_bucket: turn on Amazon EventBridge notifications for "
        "that bucket yourself (S3 console > Properties > Event notifications, or "
        "put-bucket-notification-configuration with EventBridgeConfiguration); this stack "
        "cannot change a bucket it does not own",
    )


@jsii.implements(ILocalBundling)
class _EngineBundle:
    """Copies the modules the starter imports (followed from :data:`HANDLER_MODULE`, lazy
    imports included) into the asset as the ``pipeline`` package: pure
    Python, so no Docker engine and no download. The job-image symlink is copied as files."""

    def try_bundle(self, output_dir: str, *_options: Any, **_more: Any) -> bool:
        for relative in starter_files():
            target = Path(output_dir) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PACKAGE_DIR.parent / relative, target)
        return True


def starter_files() -> list[Path]:
    """The files of :data:`HANDLER_MODULE` and every ``pipeline`` module it imports, with
    their packages' ``__init__.py`` files, relative to the folder holding ``pipeline/``."""
    root = PACKAGE_DIR.parent
    seen: set[str] = set()
    todo = [HANDLER_MODULE]
    files: set[Path] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_path(module)
        if path is None:
            continue
        files.add(path)
        parts = module.split(".")
        for depth in range(1, len(parts)):
            package = _module_path(".".join(parts[:depth]))
            if package is not None:
                files.add(package)
                todo.append(".".join(parts[:depth]))
        todo += _pipeline_imports(path)
    return sorted(p.relative_to(root) for p in files)


_TYPE_CHECKING = {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def _module_path(module: str) -> Path | None:
    base = PACKAGE_DIR.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _pipeline_imports(path: Path) -> Sequence[str]:
    """The ``pipeline`` modules ``path`` imports when it runs (not those imported for type
    checking only, such as the constructs ``pipeline/__init__.py`` names for mypy)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in _TYPE_CHECKING:
            node.body = []
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("pipeline")]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("pipeline")
        ):
            found.append(str(node.module))
            found += [f"{node.module}.{a.name}" for a in node.names]
    return found
