"""ArrayJobPipeline used as a library inside someone else's CDK app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from helpers.synth import Synthesized, captured_id, logical_id_of, new_app, synthesize
from pipeline.contract import ARRAY_SIZE, INPUT_BUCKET, NOTIFICATION_TOPIC_ARN
from pipeline.spec import DEFAULT_SPEC

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


_PIPELINES = {"nightly": "500", "adhoc": "2", "shared": "10000"}
"""Each pipeline of the app, by its name_prefix, and the array size it was given."""


def _queue(template: Template, prefix: str) -> str:
    """The pipeline's job queue, known by its name."""
    return logical_id_of(template, "AWS::Batch::JobQueue", {"JobQueueName": f"{prefix}-ProdQueue"})


def _definition(template: Template, prefix: str, job_key: str) -> str:
    """The pipeline's definition of the job, known by its name."""
    name = f"{prefix}-{DEFAULT_SPEC.job(job_key).definition_name}"
    return logical_id_of(template, "AWS::Batch::JobDefinition", {"JobDefinitionName": name})


def _environments(template: Template, prefix: str) -> list[str]:
    """The two compute environments behind the pipeline's queue."""
    first, second = Capture(), Capture()
    template.has_resource_properties(
        "AWS::Batch::JobQueue",
        {
            "JobQueueName": f"{prefix}-ProdQueue",
            "ComputeEnvironmentOrder": [
                {"ComputeEnvironment": {"Fn::GetAtt": [first, "ComputeEnvironmentArn"]}},
                {"ComputeEnvironment": {"Fn::GetAtt": [second, "ComputeEnvironmentArn"]}},
            ],
        },
    )
    return [captured_id(first), captured_id(second)]


def test_three_pipelines_synthesize_without_name_collisions(consumer: Synthesized) -> None:
    template = consumer.assertions
    # THEN there are three queues and fifteen definitions, each name used once
    template.resource_count_is("AWS::Batch::JobQueue", len(_PIPELINES))
    template.resource_count_is(
        "AWS::Batch::JobDefinition", len(_PIPELINES) * len(DEFAULT_SPEC.jobs)
    )
    for prefix in _PIPELINES:
        _queue(template, prefix)  # one queue of that name
        for job in DEFAULT_SPEC:
            _definition(template, prefix, job.key)  # one definition of that name
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {"JobDefinitionName": "nightly-JobC-Memory-Intensive-Processing"},
    )


def test_existing_vpc_and_input_bucket_are_used_not_recreated(consumer: Synthesized) -> None:
    template = consumer.assertions
    # the consumer's VPC, plus one per pipeline without a vpc prop
    template.resource_count_is("AWS::EC2::VPC", 3)
    # GIVEN the consumer's VPC (known by its Name tag) and its subnets
    shared_vpc = logical_id_of(
        template,
        "AWS::EC2::VPC",
        {"Tags": Match.array_with([{"Key": "Name", "Value": "Analytics/SharedVpc"}])},
    )
    vpc_subnets = template.find_resources(
        "AWS::EC2::Subnet", {"Properties": {"VpcId": {"Ref": shared_vpc}}}
    )
    assert vpc_subnets
    # THEN the shared pipeline's two environments place instances in those subnets only
    for environment in _environments(template, "shared"):
        subnets = Capture()
        consumer.resource(environment).has_resource_properties(
            "AWS::Batch::ComputeEnvironment", {"ComputeResources": {"Subnets": subnets}}
        )
        assert {s["Ref"] for s in subnets.as_array()} == set(vpc_subnets)
    # AND its jobs read the bucket it was given (by name, not a bucket of its own) ...
    job_a = _definition(template, "shared", "JobA")
    consumer.resource(job_a).has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "ContainerProperties": {
                "Environment": Match.array_with([{"Name": INPUT_BUCKET, "Value": "team-inputs"}])
            }
        },
    )
    # ... so it has B, C, the output and access-log buckets, the other two pipelines five each
    template.resource_count_is("AWS::S3::Bucket", 4 + 5 + 5)


def test_array_size_reaches_the_jobs(consumer: Synthesized) -> None:
    for prefix, size in _PIPELINES.items():
        consumer.assertions.resource_properties_count_is(
            "AWS::Batch::JobDefinition",
            {
                "JobDefinitionName": Match.string_like_regexp(f"^{prefix}-"),
                "ContainerProperties": {
                    "Environment": Match.array_with([{"Name": ARRAY_SIZE, "Value": size}])
                },
            },
            len(DEFAULT_SPEC.jobs),
        )


def test_spot_uses_capacity_optimized_allocation(consumer: Synthesized) -> None:
    for environment in _environments(consumer.assertions, "adhoc"):
        consumer.resource(environment).has_resource_properties(
            "AWS::Batch::ComputeEnvironment",
            {"ComputeResources": {"Type": "SPOT", "AllocationStrategy": "SPOT_CAPACITY_OPTIMIZED"}},
        )
    for environment in _environments(consumer.assertions, "nightly"):
        consumer.resource(environment).has_resource_properties(
            "AWS::Batch::ComputeEnvironment", {"ComputeResources": {"Type": "EC2"}}
        )


def test_notification_email_subscribes_and_becomes_the_default_recipient(
    consumer: Synthesized,
) -> None:
    template = consumer.assertions
    # GIVEN the ad hoc pipeline's notification topic, failure rule, dead-letter queue and the
    # topic of that queue's alarm
    notifications = Capture()
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": Match.string_like_regexp("^adhoc-"),
            "ContainerProperties": {
                "Environment": Match.array_with(
                    [{"Name": NOTIFICATION_TOPIC_ARN, "Value": {"Ref": notifications}}]
                )
            },
        },
    )
    dead_letters = Capture()
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "detail": {"jobQueue": [{"Fn::GetAtt": [_queue(template, "adhoc"), "JobQueueArn"]}]}
            },
            "Targets": [{"DeadLetterConfig": {"Arn": {"Fn::GetAtt": [dead_letters, "Arn"]}}}],
        },
    )
    alarms = Capture()
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Dimensions": [
                {
                    "Name": "QueueName",
                    "Value": {"Fn::GetAtt": [captured_id(dead_letters), "QueueName"]},
                }
            ],
            "AlarmActions": [{"Ref": alarms}],
        },
    )
    # THEN the address is subscribed to those two topics and no other: to the notification
    # topic with undeliverable emails going to the dead-letter queue, and to the alarm topic
    email = {"Protocol": "email", "Endpoint": "data-team@example.com"}
    template.resource_count_is("AWS::SNS::Subscription", 2)
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {
            **email,
            "TopicArn": {"Ref": captured_id(notifications)},
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": [captured_id(dead_letters), "Arn"]}
            },
        },
    )
    template.has_resource_properties(
        "AWS::SNS::Subscription", {**email, "TopicArn": {"Ref": captured_id(alarms)}}
    )
    # AND JobE mails it by default
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": "adhoc-JobE-Cleanup-and-Notification",
            "Parameters": {"Recipient": "data-team@example.com"},
        },
    )


def test_job_overrides_change_only_the_named_job(consumer: Synthesized) -> None:
    template = consumer.assertions
    # THEN the ad hoc JobB has the vCPUs and variable it was given ...
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": "adhoc-JobB-CPU-Intensive-Processing",
            "ContainerProperties": {
                "ResourceRequirements": Match.array_with([{"Type": "VCPU", "Value": "16"}]),
                "Environment": Match.array_with([{"Name": "LEVEL", "Value": "9"}]),
            },
        },
    )
    # ... no other definition has that variable, and the nightly JobB keeps the spec's vCPUs
    template.resource_properties_count_is(
        "AWS::Batch::JobDefinition",
        {
            "ContainerProperties": {
                "Environment": Match.array_with([Match.object_like({"Name": "LEVEL"})])
            }
        },
        1,
    )
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": "nightly-JobB-CPU-Intensive-Processing",
            "ContainerProperties": {
                "ResourceRequirements": Match.array_with([{"Type": "VCPU", "Value": "32"}])
            },
        },
    )


def test_grant_helpers_give_output_read_and_job_submission(consumer: Synthesized) -> None:
    template = consumer.assertions
    # GIVEN the consumer's analyst role: the one role this account's principals assume
    analyst = logical_id_of(
        template,
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [Match.object_like({"Principal": {"AWS": Match.any_value()}})]
            }
        },
    )
    # WHEN the policies attached to it are read
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": analyst}])}}
    )
    statements = [
        s
        for policy in policies.values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    actions = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    # THEN it may read output and submit, follow and stop jobs ...
    assert {
        "s3:GetObject",
        "s3:ListBucket",
        "batch:SubmitJob",
        "batch:TagResource",
        "batch:DescribeJobs",
        "batch:TerminateJob",
        "batch:CancelJob",
    } <= actions
    # ... and submit to the nightly queue and definitions only, the revisions deployed (not
    # name:*)
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": Match.array_with([{"Ref": analyst}]),
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "batch:SubmitJob",
                                "Resource": [
                                    {"Fn::GetAtt": [_queue(template, "nightly"), "JobQueueArn"]},
                                    *(
                                        {"Ref": _definition(template, "nightly", job.key)}
                                        for job in DEFAULT_SPEC
                                    ),
                                ],
                            }
                        )
                    ]
                )
            },
        },
    )


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


def test_the_dead_letter_statement_of_the_key_names_the_pipelines_topic(
    consumer: Synthesized,
) -> None:
    template = consumer.assertions
    # GIVEN the ad hoc pipeline's notification topic (it has an email subscription, whose
    # undeliverable mail SNS writes to the encrypted dead-letter queue), its name and its key
    topic = Capture()
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": Match.string_like_regexp("^adhoc-"),
            "ContainerProperties": {
                "Environment": Match.array_with(
                    [{"Name": NOTIFICATION_TOPIC_ARN, "Value": {"Ref": topic}}]
                )
            },
        },
    )
    name, key = Capture(), Capture()
    consumer.resource(captured_id(topic)).has_resource_properties(
        "AWS::SNS::Topic",
        {"TopicName": {"Fn::Join": ["", name]}, "KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}},
    )
    topic_arn = [
        "arn:",
        {"Ref": "AWS::Partition"},
        ":sns:",
        {"Ref": "AWS::Region"},
        ":",
        {"Ref": "AWS::AccountId"},
        ":",
        *name.as_array(),
    ]
    # THEN the key lets SNS use it for that topic of this account only, not every topic
    consumer.resource(captured_id(key)).has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": Match.exact({"Service": "sns.amazonaws.com"}),
                                "Condition": Match.exact(
                                    {
                                        "StringEquals": {
                                            "aws:SourceAccount": {"Ref": "AWS::AccountId"}
                                        },
                                        "ArnEquals": {
                                            "aws:SourceArn": {"Fn::Join": ["", topic_arn]}
                                        },
                                    }
                                ),
                            }
                        )
                    ]
                )
            }
        },
    )
    template.resource_properties_count_is(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [Match.object_like({"Principal": {"Service": "sns.amazonaws.com"}})]
                )
            }
        },
        1,
    )


def _references(value: Any) -> set[str]:
    """The logical IDs a policy value refers to (``Ref``, ``Fn::GetAtt``), pseudo parameters
    left out."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return set() if value["Ref"].startswith("AWS::") else {value["Ref"]}
        if set(value) == {"Fn::GetAtt"}:
            return {value["Fn::GetAtt"][0]}
        return {r for v in value.values() for r in _references(v)}
    if isinstance(value, list):
        return {r for v in value for r in _references(v)}
    return set()


def test_each_pipelines_roles_reach_every_run_of_it_and_nothing_of_another(
    consumer: Synthesized,
) -> None:
    template = consumer.assertions
    resources = consumer.template["Resources"]
    for prefix, construct_id in (("nightly", "Nightly"), ("adhoc", "AdHoc")):
        # GIVEN the job roles of one pipeline of the app
        for job in DEFAULT_SPEC:
            role = Capture()
            template.has_resource_properties(
                "AWS::Batch::JobDefinition",
                {
                    "JobDefinitionName": f"{prefix}-{job.definition_name}",
                    "ContainerProperties": {"JobRoleArn": {"Fn::GetAtt": [role, "Arn"]}},
                },
            )
            policies = template.find_resources(
                "AWS::IAM::Policy",
                {"Properties": {"Roles": Match.array_with([{"Ref": captured_id(role)}])}},
            )
            statements = [
                s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]
            ]
            # THEN everything they may touch is that pipeline's own ...
            touched = _references([s["Resource"] for s in statements])
            assert touched, job.key
            foreign = {t for t in touched if not t.startswith(construct_id)}
            assert foreign == set(), (prefix, job.key, foreign)
            assert all(resources[t]["Type"] != "AWS::IAM::Role" for t in touched)
            # ... and no object grant is held to one run: runs/* is every run of it
            objects = [
                json.dumps(s["Resource"]) for s in statements if "s3:GetObject" in s["Action"]
            ]
            assert all("/runs/*" in o or o.endswith('/*"]]}') for o in objects), objects
