"""The default PipelineStack: what `npx cdk deploy` creates, resource by resource.

Resources are found by what says what they are (a job definition's name, the environment
variable that names a bucket to the jobs, a reference followed with a ``Capture``), never by
their logical IDs, which follow construct IDs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from helpers.synth import (
    Synthesized,
    captured_id,
    logical_id_of,
    longest_name,
    resolve,
    resource_given_to_jobs,
)
from pipeline.contract import (
    ARRAY_SIZE,
    CPU_RESULTS_BUCKET,
    INPUT_BUCKET,
    METADATA_TABLE,
    NOTIFICATION_TOPIC_ARN,
    OUTPUT_BUCKET,
)
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
def test_resource_counts(template: Template, resource_type: str, count: int) -> None:
    template.resource_count_is(resource_type, count)


# --- job definitions ----------------------------------------------------------------------


def test_synthesized_job_definitions_match_the_spec(template: Template) -> None:
    # GIVEN the spec's jobs
    # THEN the template has one definition per job and no other ...
    template.resource_count_is("AWS::Batch::JobDefinition", len(DEFAULT_SPEC.jobs))
    for job in DEFAULT_SPEC:
        # ... named for it, with the spec's command, limits and parameters
        requirements = Capture()
        template.resource_properties_count_is(
            "AWS::Batch::JobDefinition",
            {
                "JobDefinitionName": job.definition_name,
                "ContainerProperties": {
                    "Command": Match.exact(list(job.command)),
                    "ResourceRequirements": requirements,
                },
                "Timeout": Match.exact({"AttemptDurationSeconds": job.timeout_seconds}),
                "RetryStrategy": {"Attempts": job.retry_attempts},
                "PropagateTags": True,
                "Parameters": Match.object_equals(
                    {name: Match.any_value() for name in job.parameters}
                ),
            },
            1,
        )
        # ... and the spec's vCPUs and memory (in whatever order CDK lists them)
        synthesized = {(r["Type"], r["Value"]) for r in requirements.as_array()}
        assert synthesized == {(r["type"], r["value"]) for r in job.resource_requirements()}


def test_workflow_resources_are_as_documented() -> None:
    # The workflow text: JobB 32 vCPU / 4096 MiB, JobC 1 vCPU / 32768 MiB, arrays of 10,000.
    b, c, d = (DEFAULT_SPEC.job(k) for k in ("JobB", "JobC", "JobD"))
    assert (b.vcpus, b.memory_mib, b.array_size) == (32, 4096, 10_000)
    assert (c.vcpus, c.memory_mib, c.array_size) == (1, 32768, 10_000)
    assert (d.vcpus, d.memory_mib, d.array_size) == (1, 32768, 10)


def test_job_e_command_uses_its_parameters(template: Template) -> None:
    # GIVEN the output bucket, as the jobs are told it
    output_bucket = resource_given_to_jobs(template, OUTPUT_BUCKET)
    # THEN JobE's command takes its bucket and recipient from parameters, whose defaults are
    # that bucket's URL and no recipient
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
            "Parameters": Match.exact(
                {
                    "SourceBucket": {"Fn::Join": ["", ["s3://", {"Ref": output_bucket}]]},
                    "Recipient": "",
                }
            ),
        },
    )


def test_retry_strategy_retries_host_and_transient_failures_not_program_errors(
    template: Template,
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
    template = default_stack.assertions
    # GIVEN the log group every job definition sends its logs to (one: they all agree)
    group = Capture()
    template.all_resources_properties(
        "AWS::Batch::JobDefinition",
        {
            "ContainerProperties": {
                "LogConfiguration": {
                    "LogDriver": "awslogs",
                    "Options": {"awslogs-group": {"Ref": group}},
                }
            }
        },
    )
    job_logs = captured_id(group)
    # THEN it keeps 30 days, and it is the one the stack names as the jobs' log group
    default_stack.resource(job_logs).has_resource_properties(
        "AWS::Logs::LogGroup", {"RetentionInDays": 30}
    )
    template.has_output(LOG_GROUP_OUTPUT, {"Value": {"Ref": job_logs}})


_KIND_TYPES = {
    "bucket": "AWS::S3::Bucket",
    "table": "AWS::DynamoDB::Table",
    "topic": "AWS::SNS::Topic",
}


def test_jobs_receive_every_resource_name_through_the_environment(template: Template) -> None:
    # GIVEN each pipeline resource
    for resource in RESOURCES:
        # THEN every job definition names it in its variable, all the same resource of its kind
        named = Capture()
        template.all_resources_properties(
            "AWS::Batch::JobDefinition",
            {
                "ContainerProperties": {
                    "Environment": Match.array_with(
                        [{"Name": resource.env, "Value": {"Ref": named}}]
                    )
                }
            },
        )
        resources_of_its_kind = template.find_resources(_KIND_TYPES[resource.kind])
        assert captured_id(named) in resources_of_its_kind, resource.key
    template.all_resources_properties(
        "AWS::Batch::JobDefinition",
        {
            "ContainerProperties": {
                "Environment": Match.array_with([{"Name": ARRAY_SIZE, "Value": "10000"}])
            }
        },
    )


# --- compute and queue ---------------------------------------------------------------------


def test_compute_environments_scale_to_zero_on_the_default_instance_types(
    template: Template,
) -> None:
    # THEN there are two environments, one on each default instance-type list, both managed
    # EC2 from 0 to 256 vCPUs on the launch template
    template.resource_count_is("AWS::Batch::ComputeEnvironment", 2)
    for instance_types in (DEFAULT_CPU_INSTANCE_TYPES, DEFAULT_MEMORY_INSTANCE_TYPES):
        template.resource_properties_count_is(
            "AWS::Batch::ComputeEnvironment",
            {
                "Type": "managed",
                # a physical name would block the replacement new instance types need
                "ComputeEnvironmentName": Match.absent(),
                "ComputeResources": {
                    "InstanceTypes": list(instance_types),
                    "Type": "EC2",
                    "MinvCpus": 0,
                    "MaxvCpus": 256,
                    "AllocationStrategy": "BEST_FIT_PROGRESSIVE",
                    "LaunchTemplate": {"LaunchTemplateId": {"Ref": Match.any_value()}},
                },
            },
            1,
        )


def test_launch_template_requires_imdsv2_and_encrypts_volumes(template: Template) -> None:
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


def test_prod_queue_orders_memory_then_cpu_environment(template: Template) -> None:
    # GIVEN the environments, each known by its instance types
    memory, cpu = (
        logical_id_of(
            template,
            "AWS::Batch::ComputeEnvironment",
            {"ComputeResources": {"InstanceTypes": list(types)}},
        )
        for types in (DEFAULT_MEMORY_INSTANCE_TYPES, DEFAULT_CPU_INSTANCE_TYPES)
    )
    # THEN ProdQueue tries the memory-optimized environment first, the CPU-optimized second
    template.resource_count_is("AWS::Batch::JobQueue", 1)
    for order, environment in ((1, memory), (2, cpu)):
        template.has_resource_properties(
            "AWS::Batch::JobQueue",
            {
                "JobQueueName": "ProdQueue",
                "ComputeEnvironmentOrder": Match.array_with(
                    [
                        {
                            "Order": order,
                            "ComputeEnvironment": {
                                "Fn::GetAtt": [environment, "ComputeEnvironmentArn"]
                            },
                        }
                    ]
                ),
            },
        )


def test_queue_cancels_jobs_that_can_never_be_placed(template: Template) -> None:
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


def test_default_vpc_has_no_idle_cost(template: Template) -> None:
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
    template = default_stack.assertions
    # GIVEN the security group the compute environments put their instances in
    group = Capture()
    template.all_resources_properties(
        "AWS::Batch::ComputeEnvironment",
        {"ComputeResources": {"SecurityGroupIds": [{"Fn::GetAtt": [group, "GroupId"]}]}},
    )
    # THEN it lets nothing in, inline or through a rule of its own
    default_stack.resource(captured_id(group)).has_resource_properties(
        "AWS::EC2::SecurityGroup", {"SecurityGroupIngress": Match.absent()}
    )
    template.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)


# --- storage ---------------------------------------------------------------------------------


_BLOCK_ALL = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


def test_every_bucket_is_encrypted_private_and_owner_enforced(template: Template) -> None:
    # THEN each of the five buckets is SSE-S3 encrypted, blocks all public access, owns every
    # object and is kept when the stack is deleted
    template.resource_count_is("AWS::S3::Bucket", 5)
    template.all_resources(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "Properties": {
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": Match.exact({"SSEAlgorithm": "AES256"})}
                    ]
                },
                "PublicAccessBlockConfiguration": Match.exact(_BLOCK_ALL),
                "OwnershipControls": Match.exact(
                    {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
                ),
            },
        },
    )


def _denies_every_request(bucket: str, condition: dict[str, Any]) -> dict[str, Any]:
    """A bucket policy pattern: a Deny of every S3 action on the bucket and its objects, to
    anyone, under ``condition``."""
    bucket_arn = {"Fn::GetAtt": [bucket, "Arn"]}
    return {
        "Bucket": {"Ref": bucket},
        "PolicyDocument": {
            "Statement": Match.array_with(
                [
                    {
                        "Effect": "Deny",
                        "Principal": Match.exact({"AWS": "*"}),
                        "Action": "s3:*",
                        "Resource": [bucket_arn, {"Fn::Join": ["", [bucket_arn, "/*"]]}],
                        "Condition": Match.exact(condition),
                    }
                ]
            )
        },
    }


def test_every_bucket_denies_plain_http_and_old_tls(template: Template) -> None:
    # GIVEN the five buckets
    buckets = template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 5
    # THEN each has a policy refusing any request without TLS, or with TLS older than 1.2
    template.resource_count_is("AWS::S3::BucketPolicy", len(buckets))
    for bucket in buckets:
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            _denies_every_request(bucket, {"Bool": {"aws:SecureTransport": "false"}}),
        )
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            _denies_every_request(bucket, {"NumericLessThan": {"s3:TlsVersion": 1.2}}),
        )


def _access_log_bucket(template: Template) -> str:
    """The bucket S3's logging service may write to."""
    bucket = Capture()
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Principal": {"Service": "logging.s3.amazonaws.com"}})]
                )
            },
        },
    )
    return captured_id(bucket)


def test_pipeline_buckets_log_access_to_the_access_log_bucket(
    default_stack: Synthesized,
) -> None:
    template = default_stack.assertions
    # GIVEN the access-log bucket
    log_bucket = _access_log_bucket(template)
    # THEN every other bucket (four of the five) logs to it, and it logs nowhere
    template.resource_count_is("AWS::S3::Bucket", 5)
    template.resource_properties_count_is(
        "AWS::S3::Bucket",
        {"LoggingConfiguration": {"DestinationBucketName": {"Ref": log_bucket}}},
        4,
    )
    default_stack.resource(log_bucket).has_resource_properties(
        "AWS::S3::Bucket", {"LoggingConfiguration": Match.absent()}
    )


def test_intermediates_in_bucket_b_expire(default_stack: Synthesized) -> None:
    template = default_stack.assertions
    bucket_a = resource_given_to_jobs(template, INPUT_BUCKET)
    bucket_b = resource_given_to_jobs(template, CPU_RESULTS_BUCKET)
    expire_intermediates = Match.object_like({"Id": "ExpireIntermediates"})
    default_stack.resource(bucket_b).has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [{"Id": "ExpireIntermediates", "ExpirationInDays": 14, "Status": "Enabled"}]
                )
            }
        },
    )
    default_stack.resource(bucket_a).has_resource_properties(
        "AWS::S3::Bucket",
        {"LifecycleConfiguration": {"Rules": Match.not_(Match.array_with([expire_intermediates]))}},
    )


def test_table_is_on_demand_with_point_in_time_recovery(default_stack: Synthesized) -> None:
    table = resource_given_to_jobs(default_stack.assertions, METADATA_TABLE)
    default_stack.resource(table).has_resource(
        "AWS::DynamoDB::Table",
        {
            "DeletionPolicy": "Retain",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "PointInTimeRecoverySpecification": Match.exact(
                    {"PointInTimeRecoveryEnabled": True}
                ),
                "KeySchema": Match.exact(
                    [
                        {"AttributeName": "run_id", "KeyType": "HASH"},
                        {"AttributeName": "object_key", "KeyType": "RANGE"},
                    ]
                ),
                "SSESpecification": {"SSEEnabled": True},
            },
        },
    )


def test_topic_is_encrypted_with_a_rotated_key_eventbridge_may_use(
    default_stack: Synthesized,
) -> None:
    # GIVEN the key the notification topic is encrypted with
    topic = resource_given_to_jobs(default_stack.assertions, NOTIFICATION_TOPIC_ARN)
    key = Capture()
    default_stack.resource(topic).has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}}
    )
    # THEN it is rotated, and EventBridge may decrypt and generate data keys with it, no more
    events = {"Principal": Match.exact({"Service": "events.amazonaws.com"})}
    actions = ["kms:Decrypt", "kms:GenerateDataKey"]
    default_stack.resource(captured_id(key)).has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with([Match.object_like({**events, "Action": actions})])
            },
        },
    )
    default_stack.resource(captured_id(key)).has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.not_(
                    Match.array_with(
                        [Match.object_like({**events, "Action": Match.not_(Match.exact(actions))})]
                    )
                )
            }
        },
    )


def test_topic_is_tls_only(template: Template) -> None:
    # GIVEN each topic (notifications, alarms)
    topics = template.find_resources("AWS::SNS::Topic")
    assert len(topics) == 2
    # THEN its policy refuses publishing without TLS
    for topic in topics:
        template.has_resource_properties(
            "AWS::SNS::TopicPolicy",
            {
                "Topics": [{"Ref": topic}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "sns:Publish",
                                    "Condition": Match.exact(
                                        {"Bool": {"aws:SecureTransport": "false"}}
                                    ),
                                }
                            )
                        ]
                    ),
                    "Version": "2012-10-17",
                },
            },
        )


# --- outputs ----------------------------------------------------------------------------------


def test_outputs_are_the_submitter_contract(template: Template) -> None:
    expected = {
        DOCUMENT_OUTPUT,
        QUEUE_OUTPUT,
        QUEUE_NAME_OUTPUT,
        LOG_GROUP_OUTPUT,
        *(r.output for r in RESOURCES),
        "DeadLetterQueueUrl",
        "AlarmTopicArn",
    }
    assert set(template.find_outputs("*")) == expected
    # none is exported: another stack importing one would pin this stack's resources
    assert set(template.find_outputs("*", {"Export": Match.absent()})) == expected


def test_the_published_document_reads_back_as_the_deployed_pipeline(template: Template) -> None:
    # GIVEN the document as CloudFormation resolves it (every reference a 63-character name,
    # longer than any CloudFormation generates, so the size check is a worst case)
    value = Capture()
    template.has_output(DOCUMENT_OUTPUT, {"Value": value})
    text = resolve(value.as_object(), longest_name)
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


_BATCH_EVENTS = {"source": ["aws.batch"], "detail-type": ["Batch Job State Change"]}


def test_failure_rule_matches_failed_jobs_on_this_queue_only(template: Template) -> None:
    queue = logical_id_of(template, "AWS::Batch::JobQueue", {"JobQueueName": "ProdQueue"})
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                **_BATCH_EVENTS,
                "detail": {
                    "status": ["FAILED"],
                    "jobQueue": [{"Fn::GetAtt": [queue, "JobQueueArn"]}],
                    # children are left out: an array parent fails once for all of them
                    "arrayProperties": Match.exact({"index": [{"exists": False}]}),
                },
            }
        },
    )


def test_failure_rule_targets_the_topic_with_the_job_and_a_console_link(
    template: Template,
) -> None:
    # GIVEN the notification topic, as the jobs are told it
    topic = resource_given_to_jobs(template, NOTIFICATION_TOPIC_ARN)
    # THEN the rule on Batch's job events has one target, that topic, with the job's name, id,
    # reason and region in the message, and a console link to the job
    paths, message = Capture(), Capture()
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": _BATCH_EVENTS,
            "Targets": [
                {
                    "Arn": {"Ref": topic},
                    "InputTransformer": {"InputPathsMap": paths, "InputTemplate": message},
                }
            ],
        },
    )
    assert set(paths.as_object().values()) >= {
        "$.detail.jobName",
        "$.detail.jobId",
        "$.detail.statusReason",
        "$.region",
    }
    assert (
        "console.aws.amazon.com/batch/home?region=<region>#jobs/detail/<detail-jobId>"
        in message.as_string()
    )


def test_topic_policy_lets_only_this_rule_publish(template: Template) -> None:
    # GIVEN the notification topic and the failure rule
    topic = resource_given_to_jobs(template, NOTIFICATION_TOPIC_ARN)
    rule = logical_id_of(template, "AWS::Events::Rule", {"EventPattern": _BATCH_EVENTS})
    # THEN the topic's policy is its TLS-only Deny and one Allow: EventBridge, for this rule
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic}],
            "PolicyDocument": Match.object_equals(
                {
                    "Statement": [
                        Match.object_like({"Effect": "Deny", "Action": "sns:Publish"}),
                        {
                            "Sid": "AllowThisRuleToPublish",
                            "Effect": "Allow",
                            "Action": "sns:Publish",
                            "Principal": {"Service": "events.amazonaws.com"},
                            "Resource": {"Ref": topic},
                            "Condition": {
                                "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule, "Arn"]}}
                            },
                        },
                    ],
                    "Version": "2012-10-17",
                }
            ),
        },
    )
