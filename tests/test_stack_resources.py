"""The default PipelineStack: what `npx cdk deploy` creates, resource by resource."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match
from conftest import Synthesized, longest_name, resolve

from pipeline.document import (
    DOCUMENT_OUTPUT,
    LOG_GROUP_OUTPUT,
    MAX_DOCUMENT_BYTES,
    QUEUE_NAME_OUTPUT,
    QUEUE_OUTPUT,
    PipelineDocument,
)
from pipeline.instances import DEFAULT_CPU_INSTANCE_TYPES, DEFAULT_MEMORY_INSTANCE_TYPES
from pipeline.spec import (
    DEFAULT_SPEC,
    RESOURCES,
    RUN_TAG,
)


@pytest.mark.parametrize(
    ("resource_type", "count"),
    [
        ("AWS::Batch::JobDefinition", 5),
        ("AWS::Batch::ComputeEnvironment", 2),
        ("AWS::Batch::JobQueue", 1),
        ("AWS::S3::Bucket", 5),  # BucketA, B, C, output, access logs
        ("AWS::DynamoDB::Table", 1),
        ("AWS::SNS::Topic", 2),  # notifications, alarms
        ("AWS::EC2::NatGateway", 0),
        ("AWS::EC2::VPCEndpoint", 2),
        ("AWS::EC2::FlowLog", 1),
        ("AWS::Logs::LogGroup", 2),  # job logs, flow logs
        ("AWS::SNS::Subscription", 0),
        ("AWS::Events::Rule", 1),
        ("AWS::KMS::Key", 1),  # the topic's
    ],
)
def test_resource_counts(template: Any, resource_type: str, count: int) -> None:
    template.resource_count_is(resource_type, count)


# --- job definitions ----------------------------------------------------------------------


def test_synthesized_job_definitions_match_the_spec(default_stack: Synthesized) -> None:
    # GIVEN the five job definitions in the template, keyed by name
    definitions = {
        d["Properties"]["JobDefinitionName"]: d["Properties"]
        for d in default_stack.resources("AWS::Batch::JobDefinition").values()
    }
    # THEN each spec job has exactly one, with the spec's command, resources and limits
    assert set(definitions) == {job.definition_name for job in DEFAULT_SPEC}
    for job in DEFAULT_SPEC:
        props = definitions[job.definition_name]
        container = props["ContainerProperties"]
        assert container["Command"] == list(job.command)
        synthesized = {(r["Type"], r["Value"]) for r in container["ResourceRequirements"]}
        assert synthesized == {(r["type"], r["value"]) for r in job.resource_requirements()}
        assert props["Timeout"] == {"AttemptDurationSeconds": job.timeout_seconds}
        assert props["RetryStrategy"]["Attempts"] == job.retry_attempts
        assert props["PropagateTags"] is True
        assert sorted(props.get("Parameters", {})) == sorted(job.parameters)


def test_workflow_resources_are_as_documented() -> None:
    # The workflow text: JobB 32 vCPU / 4096 MiB, JobC 1 vCPU / 32768 MiB, arrays of 10,000.
    b, c, d = (DEFAULT_SPEC.job(k) for k in ("JobB", "JobC", "JobD"))
    assert (b.vcpus, b.memory_mib, b.array_size) == (32, 4096, 10_000)
    assert (c.vcpus, c.memory_mib, c.array_size) == (1, 32768, 10_000)
    assert (d.vcpus, d.memory_mib, d.array_size) == (1, 32768, 10)


def test_job_e_command_uses_its_parameters(template: Any) -> None:
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": "JobE-Cleanup-and-Notification",
            "ContainerProperties": Match.object_like(
                {
                    "Command": Match.array_with(
                        ["--source-bucket", "Ref::SourceBucket", "--recipient", "Ref::Recipient"]
                    )
                }
            ),
            "Parameters": {
                "SourceBucket": {
                    "Fn::Join": ["", ["s3://", {"Ref": Match.string_like_regexp("OutputBucket")}]]
                },
                "Recipient": "",
            },
        },
    )


def test_retry_strategy_retries_host_and_transient_failures_not_program_errors(
    template: Any,
) -> None:
    template.all_resources_properties(
        "AWS::Batch::JobDefinition",
        {
            "RetryStrategy": {
                "Attempts": 3,
                "EvaluateOnExit": [
                    {"Action": "RETRY", "OnStatusReason": "Host EC2*"},
                    {"Action": "RETRY", "OnReason": "CannotPullContainerError:*"},
                    {"Action": "RETRY", "OnExitCode": "75"},
                    {"Action": "EXIT", "OnExitCode": "*"},
                    {"Action": "EXIT", "OnReason": "*"},
                ],
            }
        },
    )


def test_jobs_log_to_one_log_group_with_retention(default_stack: Synthesized) -> None:
    groups = default_stack.resources("AWS::Logs::LogGroup")
    job_logs = next(k for k in groups if "JobsLogs" in k)
    assert groups[job_logs]["Properties"]["RetentionInDays"] == 30
    for definition in default_stack.resources("AWS::Batch::JobDefinition").values():
        options = definition["Properties"]["ContainerProperties"]["LogConfiguration"]["Options"]
        assert options["awslogs-group"] == {"Ref": job_logs}


def test_jobs_receive_every_resource_name_through_the_environment(
    default_stack: Synthesized,
) -> None:
    for definition in default_stack.resources("AWS::Batch::JobDefinition").values():
        env = {
            e["Name"]: e["Value"]
            for e in definition["Properties"]["ContainerProperties"]["Environment"]
        }
        assert {r.env for r in RESOURCES} <= set(env)
        assert env["PIPELINE_ARRAY_SIZE"] == "10000"


# --- compute and queue ---------------------------------------------------------------------


def test_compute_environments_scale_to_zero_on_the_default_instance_types(
    default_stack: Synthesized,
) -> None:
    envs = [
        e["Properties"] for e in default_stack.resources("AWS::Batch::ComputeEnvironment").values()
    ]
    assert sorted(tuple(e["ComputeResources"]["InstanceTypes"]) for e in envs) == sorted(
        [DEFAULT_CPU_INSTANCE_TYPES, DEFAULT_MEMORY_INSTANCE_TYPES]
    )
    for env in envs:
        resources = env["ComputeResources"]
        assert env["Type"] == "managed"
        assert "ComputeEnvironmentName" not in env  # a physical name would block replacement
        assert (resources["Type"], resources["MinvCpus"], resources["MaxvCpus"]) == ("EC2", 0, 256)
        assert resources["AllocationStrategy"] == "BEST_FIT_PROGRESSIVE"
        assert "LaunchTemplateId" in resources["LaunchTemplate"]


def test_launch_template_requires_imdsv2_and_encrypts_volumes(template: Any) -> None:
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {
                    "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
                    "BlockDeviceMappings": [
                        Match.object_like({"Ebs": Match.object_like({"Encrypted": True})})
                    ],
                }
            )
        },
    )


def test_prod_queue_orders_memory_then_cpu_environment(default_stack: Synthesized) -> None:
    queue = default_stack.one("AWS::Batch::JobQueue", "Queue")["Properties"]
    assert queue["JobQueueName"] == "ProdQueue"
    order = {
        e["Order"]: e["ComputeEnvironment"]["Fn::GetAtt"][0]
        for e in queue["ComputeEnvironmentOrder"]
    }
    assert "MemoryOptimized" in order[1]
    assert "CpuOptimized" in order[2]


def test_queue_cancels_jobs_that_can_never_be_placed(template: Any) -> None:
    template.has_resource_properties(
        "AWS::Batch::JobQueue",
        {
            "JobStateTimeLimitActions": [
                {
                    "Action": "CANCEL",
                    "MaxTimeSeconds": 1800,
                    "Reason": "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
                    "State": "RUNNABLE",
                },
                {
                    "Action": "CANCEL",
                    "MaxTimeSeconds": 1800,
                    "Reason": "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
                    "State": "RUNNABLE",
                },
            ]
        },
    )


# --- network ----------------------------------------------------------------------------------


def test_default_vpc_has_no_idle_cost(template: Any) -> None:
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::VPCEndpoint", 2)
    for service in ("s3", "dynamodb"):
        template.has_resource_properties(
            "AWS::EC2::VPCEndpoint",
            {
                "VpcEndpointType": "Gateway",
                "ServiceName": {"Fn::Join": ["", Match.array_with([f".{service}"])]},
            },
        )


def test_instance_security_group_has_no_ingress(default_stack: Synthesized) -> None:
    group = default_stack.one("AWS::EC2::SecurityGroup", "InstanceSecurityGroup")["Properties"]
    assert "SecurityGroupIngress" not in group
    assert not default_stack.resources("AWS::EC2::SecurityGroupIngress")


# --- storage ---------------------------------------------------------------------------------


def test_every_bucket_is_encrypted_private_and_owner_enforced(default_stack: Synthesized) -> None:
    for name, bucket in default_stack.resources("AWS::S3::Bucket").items():
        props = bucket["Properties"]
        rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", name
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        assert bucket["DeletionPolicy"] == "Retain", name


def test_every_bucket_denies_plain_http_and_old_tls(default_stack: Synthesized) -> None:
    buckets = set(default_stack.resources("AWS::S3::Bucket"))
    secured = set()
    for policy in default_stack.resources("AWS::S3::BucketPolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        conditions = [s.get("Condition", {}) for s in statements if s["Effect"] == "Deny"]
        assert {"Bool": {"aws:SecureTransport": "false"}} in conditions
        assert {"NumericLessThan": {"s3:TlsVersion": 1.2}} in conditions
        secured.add(policy["Properties"]["Bucket"]["Ref"])
    assert secured == buckets


def test_pipeline_buckets_log_access_to_the_access_log_bucket(default_stack: Synthesized) -> None:
    buckets = default_stack.resources("AWS::S3::Bucket")
    log_bucket = next(k for k in buckets if "AccessLogs" in k)
    for name, bucket in buckets.items():
        if name == log_bucket:
            continue
        logging = bucket["Properties"]["LoggingConfiguration"]
        assert logging["DestinationBucketName"] == {"Ref": log_bucket}, name


def test_intermediates_in_bucket_b_expire(default_stack: Synthesized) -> None:
    bucket_b = default_stack.one("AWS::S3::Bucket", "StorageBucketB")["Properties"]
    rules = {r["Id"]: r for r in bucket_b["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireIntermediates"]["ExpirationInDays"] == 14
    bucket_a = default_stack.one("AWS::S3::Bucket", "StorageBucketA")["Properties"]
    assert "ExpireIntermediates" not in {
        r["Id"] for r in bucket_a["LifecycleConfiguration"]["Rules"]
    }


def test_table_is_on_demand_with_point_in_time_recovery(default_stack: Synthesized) -> None:
    table = default_stack.one("AWS::DynamoDB::Table", "MetadataTable")
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["KeySchema"] == [
        {"AttributeName": "run_id", "KeyType": "HASH"},
        {"AttributeName": "object_key", "KeyType": "RANGE"},
    ]
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"


def test_topic_is_encrypted_with_a_rotated_key_eventbridge_may_use(
    default_stack: Synthesized,
) -> None:
    topic = default_stack.one("AWS::SNS::Topic", "NotificationTopic")["Properties"]
    key_id = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = default_stack.template["Resources"][key_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    events = [s for s in statements if s.get("Principal") == {"Service": "events.amazonaws.com"}]
    assert [sorted(s["Action"]) for s in events] == [["kms:Decrypt", "kms:GenerateDataKey"]]


def test_topic_is_tls_only(template: Any) -> None:
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "sns:Publish",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                ),
                "Version": "2012-10-17",
            }
        },
    )


# --- outputs ----------------------------------------------------------------------------------


def test_outputs_are_the_submitter_contract(default_stack: Synthesized) -> None:
    outputs = default_stack.template["Outputs"]
    expected = {
        DOCUMENT_OUTPUT,
        QUEUE_OUTPUT,
        QUEUE_NAME_OUTPUT,
        LOG_GROUP_OUTPUT,
        *(r.output for r in RESOURCES),
        "DeadLetterQueueUrl",
        "AlarmTopicArn",
    }
    assert set(outputs) == expected
    assert all("Export" not in o for o in outputs.values())


def test_the_published_document_reads_back_as_the_deployed_pipeline(
    default_stack: Synthesized,
) -> None:
    # GIVEN the document as CloudFormation resolves it (every reference a 63-character name,
    # longer than any CloudFormation generates, so the size check is a worst case)
    text = resolve(default_stack.template["Outputs"][DOCUMENT_OUTPUT]["Value"], longest_name)
    # THEN it is within the size kept for it and reads back as the pipeline deployed
    assert len(text.encode()) <= MAX_DOCUMENT_BYTES
    document = PipelineDocument.from_json(json.loads(text), source="stack")
    assert document.spec == DEFAULT_SPEC
    assert set(document.job_definitions) == {j.key for j in DEFAULT_SPEC}
    assert set(document.resources) == {r.key for r in RESOURCES}
    assert document.parameter_defaults("JobE")["SourceBucket"].startswith("s3://")


def test_run_tag_key_is_a_valid_tag_key() -> None:
    assert 0 < len(RUN_TAG) <= 128
    assert not RUN_TAG.lower().startswith("aws:")


# --- failure notifications ----------------------------------------------------------------------


def test_failure_rule_matches_failed_jobs_on_this_queue_only(default_stack: Synthesized) -> None:
    rule = default_stack.one("AWS::Events::Rule", "JobFailed")["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.batch"]
    assert pattern["detail-type"] == ["Batch Job State Change"]
    assert pattern["detail"]["status"] == ["FAILED"]
    queue_id = next(iter(default_stack.resources("AWS::Batch::JobQueue")))
    assert pattern["detail"]["jobQueue"] == [{"Fn::GetAtt": [queue_id, "JobQueueArn"]}]
    # children are left out: an array parent fails once for all of them
    assert pattern["detail"]["arrayProperties"] == {"index": [{"exists": False}]}


def test_failure_rule_targets_the_topic_with_the_job_and_a_console_link(
    default_stack: Synthesized,
) -> None:
    rule = default_stack.one("AWS::Events::Rule", "JobFailed")["Properties"]
    (target,) = rule["Targets"]
    topic_id = next(iter(default_stack.resources("AWS::SNS::Topic")))
    assert target["Arn"] == {"Ref": topic_id}
    transformer = target["InputTransformer"]
    assert set(transformer["InputPathsMap"].values()) >= {
        "$.detail.jobName",
        "$.detail.jobId",
        "$.detail.statusReason",
        "$.region",
    }
    assert (
        "console.aws.amazon.com/batch/home?region=<region>#jobs/detail/<detail-jobId>"
        in (transformer["InputTemplate"])
    )


def test_topic_policy_lets_only_this_rule_publish(default_stack: Synthesized) -> None:
    (policy,) = [
        p
        for p in default_stack.resources("AWS::SNS::TopicPolicy").values()
        if "NotificationTopic" in p["Properties"]["Topics"][0]["Ref"]
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    allowed = [s for s in statements if s["Effect"] == "Allow"]
    rule_id = next(iter(default_stack.resources("AWS::Events::Rule")))
    assert allowed == [
        {
            "Sid": "AllowThisRuleToPublish",
            "Effect": "Allow",
            "Action": "sns:Publish",
            "Principal": {"Service": "events.amazonaws.com"},
            "Resource": {"Ref": next(iter(default_stack.resources("AWS::SNS::Topic")))},
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}},
        }
    ]
