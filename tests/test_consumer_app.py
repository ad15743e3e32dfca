"""ArrayJobPipeline used as a library inside someone else's CDK app."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import Synthesized, new_app, synthesize

CONSUMER_APP = """
import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2, aws_iam as iam, aws_s3 as s3
from pipeline import ArrayJobPipeline, JobOverride


class AnalyticsStack(cdk.Stack):
    def __init__(self, scope, construct_id, **kwargs):
        super().__init__(scope, construct_id, **kwargs)
        vpc = ec2.Vpc(self, "SharedVpc", max_azs=2, nat_gateways=0,
                      subnet_configuration=[ec2.SubnetConfiguration(
                          name="Public", subnet_type=ec2.SubnetType.PUBLIC)])
        vpc.add_flow_log("Flow")
        inputs = s3.Bucket.from_bucket_name(self, "Inputs", "team-inputs")
        self.nightly = ArrayJobPipeline(self, "Nightly", name_prefix="nightly", array_size=500)
        self.adhoc = ArrayJobPipeline(
            self, "AdHoc", name_prefix="adhoc", array_size=2, spot=True,
            notification_email="data-team@example.com",
            job_overrides={"JobB": JobOverride(vcpus=16, environment={"LEVEL": "9"})},
        )
        self.shared = ArrayJobPipeline(
            self, "Shared", name_prefix="shared", vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            existing_input_bucket=inputs,
        )
        self.analyst = iam.Role(self, "Analyst", assumed_by=iam.AccountRootPrincipal())
        self.nightly.grant_read_output(self.analyst)
        self.nightly.grant_submit_jobs(self.analyst)
"""


# Its module fixture is made once: its tests run on one worker.
@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    namespace: dict[str, Any] = {}
    exec(compile(CONSUMER_APP, "consumer_app.py", "exec"), namespace)  # a separate app's code
    app = new_app(tmp_path_factory.mktemp("consumer"))
    stack = namespace["AnalyticsStack"](app, "Analytics")
    return synthesize(app, stack)


def _names(stack: Synthesized, type_: str, prop: str) -> list[str]:
    return [r["Properties"][prop] for r in stack.resources(type_).values()]


def test_three_pipelines_synthesize_without_name_collisions(consumer: Synthesized) -> None:
    queues = _names(consumer, "AWS::Batch::JobQueue", "JobQueueName")
    definitions = _names(consumer, "AWS::Batch::JobDefinition", "JobDefinitionName")
    assert sorted(queues) == ["adhoc-ProdQueue", "nightly-ProdQueue", "shared-ProdQueue"]
    assert len(definitions) == 15
    assert [n for n, c in Counter(definitions).items() if c > 1] == []
    assert "nightly-JobC-Memory-Intensive-Processing" in definitions


def test_existing_vpc_and_input_bucket_are_used_not_recreated(consumer: Synthesized) -> None:
    consumer_vpcs = consumer.resources("AWS::EC2::VPC")
    assert len(consumer_vpcs) == 3  # the consumer's, plus one per pipeline without a vpc prop
    shared_envs = [
        e["Properties"]
        for k, e in consumer.resources("AWS::Batch::ComputeEnvironment").items()
        if k.startswith("Shared")
    ]
    assert len(shared_envs) == 2
    for env in shared_envs:
        assert all("SharedVpc" in s["Ref"] for s in env["ComputeResources"]["Subnets"])
    shared_buckets = [k for k in consumer.resources("AWS::S3::Bucket") if k.startswith("Shared")]
    assert not any("BucketA" in k for k in shared_buckets)
    assert len(shared_buckets) == 4  # B, C, output, access logs
    job_a_env = next(
        d["Properties"]["ContainerProperties"]["Environment"]
        for d in consumer.resources("AWS::Batch::JobDefinition").values()
        if d["Properties"]["JobDefinitionName"] == "shared-JobA-list-and-validate"
    )
    assert {"Name": "PIPELINE_INPUT_BUCKET", "Value": "team-inputs"} in job_a_env


def test_array_size_reaches_the_jobs(consumer: Synthesized) -> None:
    sizes = {
        d["Properties"]["JobDefinitionName"].split("-")[0]: next(
            e["Value"]
            for e in d["Properties"]["ContainerProperties"]["Environment"]
            if e["Name"] == "PIPELINE_ARRAY_SIZE"
        )
        for d in consumer.resources("AWS::Batch::JobDefinition").values()
    }
    assert sizes == {"nightly": "500", "adhoc": "2", "shared": "10000"}


def test_spot_uses_capacity_optimized_allocation(consumer: Synthesized) -> None:
    strategies = {
        k.split("Compute")[0]: e["Properties"]["ComputeResources"]
        for k, e in consumer.resources("AWS::Batch::ComputeEnvironment").items()
    }
    assert {s["AllocationStrategy"] for k, s in strategies.items() if k.startswith("AdHoc")} == {
        "SPOT_CAPACITY_OPTIMIZED"
    }
    assert {s["Type"] for k, s in strategies.items() if k.startswith("AdHoc")} == {"SPOT"}
    assert {s["Type"] for k, s in strategies.items() if k.startswith("Nightly")} == {"EC2"}


def test_notification_email_subscribes_and_becomes_the_default_recipient(
    consumer: Synthesized,
) -> None:
    subscriptions = consumer.resources("AWS::SNS::Subscription")
    # the notification topic's, whose undeliverable emails go to the dead-letter queue, and
    # the alarm topic's (that queue's alarm)
    assert sorted(
        (k.split("Topic")[0], s["Properties"]["Protocol"], s["Properties"]["Endpoint"])
        for k, s in subscriptions.items()
    ) == [
        ("AdHocFailureNotificationsAlarm", "email", "data-team@example.com"),
        ("AdHocStorageNotification", "email", "data-team@example.com"),
    ]
    to_notifications = next(s for k, s in subscriptions.items() if "Storage" in k)
    dead_letters = to_notifications["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]
    assert "FailureNotificationsDeadLetters" in dead_letters["Fn::GetAtt"][0]
    job_e = next(
        d["Properties"]
        for d in consumer.resources("AWS::Batch::JobDefinition").values()
        if d["Properties"]["JobDefinitionName"] == "adhoc-JobE-Cleanup-and-Notification"
    )
    assert job_e["Parameters"]["Recipient"] == "data-team@example.com"


def test_job_overrides_change_only_the_named_job(consumer: Synthesized) -> None:
    by_name = {
        d["Properties"]["JobDefinitionName"]: d["Properties"]["ContainerProperties"]
        for d in consumer.resources("AWS::Batch::JobDefinition").values()
    }
    adhoc_b = by_name["adhoc-JobB-CPU-Intensive-Processing"]
    assert {"Type": "VCPU", "Value": "16"} in adhoc_b["ResourceRequirements"]
    assert {"Name": "LEVEL", "Value": "9"} in adhoc_b["Environment"]
    nightly_b = by_name["nightly-JobB-CPU-Intensive-Processing"]
    assert {"Type": "VCPU", "Value": "32"} in nightly_b["ResourceRequirements"]


def test_grant_helpers_give_output_read_and_job_submission(consumer: Synthesized) -> None:
    policy = [
        statement
        for p in consumer.resources("AWS::IAM::Policy").values()
        if any("Analyst" in r["Ref"] for r in p["Properties"]["Roles"])
        for statement in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    actions = {
        a for s in policy for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert {
        "s3:GetObject",
        "s3:ListBucket",
        "batch:SubmitJob",
        "batch:TagResource",
        "batch:DescribeJobs",
        "batch:TerminateJob",
        "batch:CancelJob",
    } <= actions
    submit = next(s for s in policy if "batch:SubmitJob" in s["Action"])
    rendered = str(submit["Resource"])
    assert "NightlyComputeQueue" in rendered
    assert "NightlyJobsJobA" in rendered  # the revision deployed, not name:*
    assert "adhoc" not in rendered


def test_a_second_pipeline_with_the_same_prefix_is_refused(tmp_path: Path) -> None:
    import aws_cdk as cdk

    from pipeline import ArrayJobPipeline, PipelineConfigError

    app = new_app(tmp_path)
    stack = cdk.Stack(app, "Twice")
    ArrayJobPipeline(stack, "One", name_prefix="team")
    with pytest.raises(
        PipelineConfigError, match="name_prefix 'team' is already used by Twice/One"
    ):
        ArrayJobPipeline(stack, "Two", name_prefix="team")
