"""A moto-backed AWS Batch for the submitter's tests.

moto's Batch API (``use_docker: False``) accepts the five jobs, records arrays, dependencies,
parameters and tags, and marks every job SUCCEEDED at once. The harness creates what a deployed
PipelineStack would have (service role, compute environment, ProdQueue, the five job
definitions from the spec, a stack with the pipeline's outputs) and can hold jobs in a state,
fail a job or child, and apply the documented effect of CancelJob/TerminateJob (the job ends
FAILED with the reason), which moto only records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from moto import mock_aws
from moto.batch_simple.models import batch_simple_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.models import botocore_stubber

from pipeline.document import (
    DOCUMENT_OUTPUT,
    QUEUE_NAME_OUTPUT,
    QUEUE_OUTPUT,
    PipelineDocument,
)
from pipeline.spec import DEFAULT_SPEC, RESOURCES, JobSpec, PipelineSpec

REGION = "us-east-1"
STACK = "ArrayJobPipeline"
FAST_RETRIES = Config(retries={"mode": "standard", "max_attempts": 4})


@dataclass
class MotoBatch:
    batch: Any
    cloudformation: Any
    queue_arn: str
    definition_arns: dict[str, str]
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def backend(self) -> Any:
        return batch_simple_backends[DEFAULT_ACCOUNT_ID][REGION]

    # --- observing ---------------------------------------------------------------------------

    def count_calls(self) -> None:
        """Count API calls by operation name in ``self.calls``."""

        def count(event_name: str, **_: Any) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            self.calls[operation] = self.calls.get(operation, 0) + 1

        self.batch.meta.events.register("before-call.batch", count)

    def jobs(self) -> list[Any]:
        """Every job moto holds, array children included."""
        return list(self.backend._jobs.values())

    def parents(self) -> list[Any]:
        return [j for j in self.jobs() if ":" not in j.job_id]

    def non_terminal(self) -> list[str]:
        return [
            f"{j.job_name} {j.job_id} {j.status}"
            for j in self.jobs()
            if j.status not in ("SUCCEEDED", "FAILED")
        ]

    # --- steering ----------------------------------------------------------------------------

    def intercept(self, handler: Callable[..., Any]) -> None:
        """Put ``handler(request=...)`` in front of moto for this client: a response it returns
        (or an exception it raises) is what the client sees, and moto never processes that
        request, as when a real service throttles or never answers. moto's own before-send
        handler runs for every request otherwise, whatever an earlier handler returned."""
        events = self.batch.meta.events
        events.unregister("before-send", botocore_stubber)

        def gate(request: Any, event_name: str, **kwargs: Any) -> Any:
            answer = handler(request=request, event_name=event_name, **kwargs)
            if answer is not None:
                return answer
            return botocore_stubber(event_name=event_name, request=request, **kwargs)

        events.register("before-send", gate)

    def set_status(self, job_id: str, status: str, reason: str | None = None) -> None:
        job = self.backend._jobs[job_id]
        for one in [job, *(job._child_jobs or [])]:
            one.status = status
            one.job_stopped = status in ("SUCCEEDED", "FAILED")
            if reason:
                one.job_stopped_reason = reason

    def hold_new_jobs(self, status: str = "RUNNABLE") -> None:
        """Jobs submitted from now on stay in ``status`` (moto would finish them at once)."""

        def hold(parsed: dict[str, Any], **_: Any) -> None:
            if "jobId" in parsed:
                self.set_status(parsed["jobId"], status)

        self.batch.meta.events.register("after-call.batch.SubmitJob", hold)

    def apply_stops(self) -> None:
        """CancelJob and TerminateJob end the job FAILED with the reason, as on AWS."""

        def stopped(params: dict[str, Any], **_: Any) -> None:
            self.set_status(params["jobId"], "FAILED", params["reason"])

        self.batch.meta.events.register("before-parameter-build.batch.CancelJob", stopped)
        self.batch.meta.events.register("before-parameter-build.batch.TerminateJob", stopped)

    def managed_queue(self, instance_type: str, name: str = "Managed", **resources: Any) -> str:
        """A queue on one managed EC2 compute environment of ``instance_type`` (maxvCpus 64),
        with ``resources`` merged into its computeResources; returns the queue ARN."""
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName=name, Description="g", VpcId=vpc)["GroupId"]
        iam = boto3.client("iam", region_name=REGION)
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
        service = iam.get_role(RoleName="BatchServiceRole")["Role"]["Arn"]
        environment = self.batch.create_compute_environment(
            computeEnvironmentName=name,
            type="MANAGED",
            state="ENABLED",
            serviceRole=service,
            computeResources={
                "type": "EC2",
                "minvCpus": 0,
                "maxvCpus": 64,
                "instanceTypes": [instance_type],
                "subnets": [subnet],
                "securityGroupIds": [group],
                "instanceRole": profile,
                **resources,
            },
        )["computeEnvironmentArn"]
        return str(
            self.batch.create_job_queue(
                jobQueueName=name,
                priority=1,
                state="ENABLED",
                computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
            )["jobQueueArn"]
        )

    def fail_child(self, parent_id: str, index: int, reason: str, exit_code: int = 1) -> None:
        """Child ``index`` fails; the parent and every later job fail as AWS reports it."""
        parent = self.backend._jobs[parent_id]
        child = parent._child_jobs[index]
        child.status = "FAILED"
        child.exit_code = exit_code
        child.job_stopped_reason = reason
        if child.latest_attempt:  # DescribeJobs reports the exit code per attempt, too
            child.latest_attempt["container"]["exitCode"] = exit_code
        parent.status = "FAILED"
        parent.job_stopped_reason = "Array Child Job failed"


@contextmanager
def moto_batch(client_config: Config = FAST_RETRIES) -> Iterator[MotoBatch]:
    with mock_aws(config={"batch": {"use_docker": False}}):
        session = boto3.Session(region_name=REGION)
        iam = session.client("iam")
        batch = session.client("batch", config=client_config)
        service_role = iam.create_role(
            RoleName="BatchServiceRole",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        environment = batch.create_compute_environment(
            computeEnvironmentName="Unmanaged", type="UNMANAGED", serviceRole=service_role
        )["computeEnvironmentArn"]
        queue_arn = batch.create_job_queue(
            jobQueueName="ProdQueue",
            priority=1,
            state="ENABLED",
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
        )["jobQueueArn"]
        definitions = {}
        for job in DEFAULT_SPEC:
            definitions[job.key] = batch.register_job_definition(
                jobDefinitionName=job.definition_name,
                type="container",
                parameters={p: "" for p in job.parameters},
                containerProperties={
                    "image": "job-image:latest",
                    "command": list(job.command),
                    "resourceRequirements": job.resource_requirements(),
                    "environment": step_environment(job),
                },
            )["jobDefinitionArn"]
        cloudformation = session.client("cloudformation")
        cloudformation.create_stack(
            StackName=STACK, TemplateBody=stack_template(queue_arn, definitions)
        )
        yield MotoBatch(batch, cloudformation, queue_arn, definitions)


def step_environment(job: JobSpec, spec: PipelineSpec = DEFAULT_SPEC) -> list[Any]:
    """What the job's definition sets of the steps, as RegisterJobDefinition takes it."""
    return [{"name": k, "value": v} for k, v in spec.environment_of(job).items()]


def stack_document(
    queue_arn: str, definitions: dict[str, str], spec: PipelineSpec = DEFAULT_SPEC
) -> PipelineDocument:
    """The document a PipelineStack would publish for these resources."""
    return PipelineDocument(
        queue=queue_arn,
        queue_name="ProdQueue",
        job_definitions=definitions,
        spec=spec,
        parameters={"JobE": {"SourceBucket": "s3://pipeline-output-bucket", "Recipient": ""}},
        resources={r.key: f"pipeline-{r.key.replace('_', '-')}" for r in RESOURCES},
        log_group="pipeline-logs",
        source=f"stack {STACK!r}",
    )


def stack_template(
    queue_arn: str,
    definitions: dict[str, str],
    *,
    document: dict[str, Any] | None = None,
    drop: str | None = None,
) -> str:
    """A stand-in for PipelineStack: the same outputs, literal values (moto's CloudFormation
    cannot create Batch resources)."""
    published = document or stack_document(queue_arn, definitions).as_json()
    outputs = {
        DOCUMENT_OUTPUT: json.dumps(published),
        QUEUE_OUTPUT: queue_arn,
        QUEUE_NAME_OUTPUT: "ProdQueue",
        **{r.output: f"pipeline-{r.key.replace('_', '-')}" for r in RESOURCES},
    }
    outputs.pop(drop or "", None)
    return json.dumps(
        {
            "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {k: {"Value": v} for k, v in outputs.items()},
        }
    )


def cli_in_process(aws: MotoBatch | None, *argv: str) -> tuple[int, str, str]:
    """``python -m pipeline.submit ARGV`` in process against ``aws``; (exit code, stdout,
    stderr). With ``aws=None`` the command must not reach AWS at all."""
    import io

    from pipeline.backends.aws import Aws
    from pipeline.cli.commands import main

    out, err = io.StringIO(), io.StringIO()

    def connector(_profile: str | None, _region: str | None) -> Aws:
        assert aws is not None, "this invocation must not reach AWS"
        return Aws(aws.batch, aws.cloudformation)

    code = main(list(argv), connector=connector, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()
