"""Security claims as the template makes them hold on AWS, whatever feature flags the app has:
buckets owner-enforced and private, the default security group closed, job containers kept
from the instance role, notifications that cannot be lost and alarms that can alert,
confused-deputy conditions on every service role, grants that reach only this pipeline and
hide nobody else's findings, and checkov clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from helpers.iam_policy import check_job_permissions
from helpers.paths import REPO
from helpers.synth import (
    Synthesized,
    captured_id,
    logical_id_of,
    new_app,
    resource_given_to_jobs,
    run_checkov,
)
from pipeline.constructs.checkov import CHECKOV_SKIPS
from pipeline.constructs.compute import IMDS_ADDRESS, IMDS_BLOCK_SCRIPT, IMDS_IPV6_ADDRESS
from pipeline.contract import INPUT_BUCKET, METADATA_TABLE, NOTIFICATION_TOPIC_ARN, OUTPUT_BUCKET
from pipeline.spec import (
    BUCKET_KEYS,
    DEFAULT_SPEC,
    JOB_TAG_KEYS,
    JOB_USER_ID,
    PIPELINE_TAG,
    RESOURCES,
)


@pytest.fixture(
    scope="module",
    params=["cdk.json's flags", pytest.param("no flags", marks=pytest.mark.slow)],
)
def stack(request: pytest.FixtureRequest) -> Synthesized:
    """Each claim below holds for the repository's app and for an app with no feature flags
    at all (a consumer's plain ``python app.py``, or an app older than those flags)."""
    name = "default_stack" if request.param == "cdk.json's flags" else "no_flags_stack"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def test_the_launch_template_installs_the_metadata_block_at_boot(
    stack: Synthesized,
) -> None:
    template = stack.assertions
    # GIVEN the launch template every compute environment starts its instances from
    launch_template = Capture()
    template.all_resources_properties(
        "AWS::Batch::ComputeEnvironment",
        {"ComputeResources": {"LaunchTemplate": {"LaunchTemplateId": {"Ref": launch_template}}}},
    )
    # THEN it requires IMDSv2, keeps the IPv6 metadata endpoint off ...
    user_data = Capture()
    stack.resource(captured_id(launch_template)).has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": {
                "MetadataOptions": {"HttpTokens": "required", "HttpProtocolIpv6": "disabled"},
                "UserData": {"Fn::Base64": user_data},
            }
        },
    )
    # ... and its user data is a MIME multi-part document, as Batch requires of launch
    # template user data, whose boothook is the script the tests below run
    text = user_data.as_string()
    assert text.startswith("Content-Type: multipart/mixed; boundary=")
    assert 'Content-Type: text/cloud-boothook; charset="utf-8"' in text
    assert IMDS_BLOCK_SCRIPT in text
    # AND the ECS agent's task-credential endpoint is left alone
    assert "169.254.170.2" not in text


def test_every_compute_environment_pins_amazon_linux_2023(stack: Synthesized) -> None:
    template = stack.assertions
    # GIVEN the compute environments behind the queue
    template.resource_count_is("AWS::Batch::ComputeEnvironment", 2)
    # THEN each launches the ECS-optimized Amazon Linux 2023 AMI, not whatever Batch chooses
    template.all_resources_properties(
        "AWS::Batch::ComputeEnvironment",
        {"ComputeResources": {"Ec2Configuration": Match.exact([{"ImageType": "ECS_AL2023"}])}},
    )


@pytest.mark.slow  # a synthesis of its own
def test_the_ami_family_is_a_prop_and_amazon_linux_2_warns(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_batch as batch
    from aws_cdk.assertions import Annotations

    from pipeline import ArrayJobPipeline

    # GIVEN a pipeline that asks for Amazon Linux 2
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Old")
    ArrayJobPipeline(
        stack, "P", array_size=10, machine_image_type=batch.EcsMachineImageType.ECS_AL2
    )
    # THEN both compute environments launch it, and synthesis says its support ended
    Template.from_stack(stack).all_resources_properties(
        "AWS::Batch::ComputeEnvironment",
        {"ComputeResources": {"Ec2Configuration": [{"ImageType": "ECS_AL2"}]}},
    )
    Annotations.from_stack(stack).has_warning(
        "/Old/P/Compute", Match.string_like_regexp("Amazon Linux 2's standard support ended")
    )


_PROBE = """
import os, socket, sys
for family, address in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    server = socket.socket(family)
    server.bind((address, 8080))
    server.listen()
    for uid in (0, JOB_USER_ID):
        pid = os.fork()
        if pid == 0:
            os.setuid(uid)
            client = socket.socket(family)
            client.settimeout(1)
            try:
                client.connect((address, 8080))
                print(address, uid, "reached", flush=True)
            except OSError:
                print(address, uid, "blocked", flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
"""


def _stubs(folder: Path, **behaviour: str) -> Path:
    """Commands the hook may call, each recording its arguments in ``calls``."""
    folder.mkdir()
    for name, exit_code in behaviour.items():
        stub = folder / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {folder}/calls\nexit {exit_code}\n')
        stub.chmod(0o755)
    return folder


_BACKENDS = {"nf_tables": "nft", "legacy": "legacy"}
"""iptables' two backends: nftables (Amazon Linux 2023's iptables, the AMI the compute
environments pin) and the legacy one (Amazon Linux 2's), as ``iptables -V`` names them."""


@pytest.mark.slow  # a few seconds: in the full suite, not the fast loop
@pytest.mark.skipif(
    os.geteuid() != 0
    or not all(
        shutil.which(c)
        for c in (
            "unshare",
            *(f"{t}-{b}" for t in ("iptables", "ip6tables") for b in ("nft", "legacy")),
        )
    ),
    reason="needs root, unshare and both iptables backends (scripts/dev setup installs iptables)",
)
@pytest.mark.parametrize("backend", sorted(_BACKENDS))
def test_the_boothook_keeps_every_uid_but_root_from_the_metadata_service(
    tmp_path: Path, backend: str
) -> None:
    # GIVEN a network namespace whose loopback carries both metadata addresses, iptables and
    # ip6tables of one backend, and the systemctl and poweroff the hook would call on failure
    # recorded instead of run
    stubs = _stubs(tmp_path / "stubs", systemctl="0", poweroff="0")
    for command in ("iptables", "ip6tables"):
        (stubs / command).symlink_to(shutil.which(f"{command}-{_BACKENDS[backend]}") or "")
    hook = tmp_path / "hook.sh"
    hook.write_text(IMDS_BLOCK_SCRIPT)
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE.replace("JOB_USER_ID", str(JOB_USER_ID)))
    script = f"""set -e
ip link set lo up
ip addr add {IMDS_ADDRESS}/32 dev lo
ip -6 addr add {IMDS_IPV6_ADDRESS}/128 dev lo nodad
bash {hook}
bash {hook}
{sys.executable} {probe} {IMDS_ADDRESS} {IMDS_IPV6_ADDRESS}
iptables -V
ip6tables -V
iptables -S OUTPUT
ip6tables -S OUTPUT
"""
    # WHEN the boothook runs (twice: every boot) as root in that namespace
    result = subprocess.run(
        ["unshare", "--net", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # (the hook's iptables and ip6tables were this backend's)
    assert sum(line.endswith(f"({backend})") for line in lines) == 2, lines
    # THEN root reaches the metadata service over IPv4 and IPv6, the job uid reaches neither
    assert f"{IMDS_ADDRESS} 0 reached" in lines
    assert f"{IMDS_IPV6_ADDRESS} 0 reached" in lines
    assert f"{IMDS_ADDRESS} {JOB_USER_ID} blocked" in lines
    assert f"{IMDS_IPV6_ADDRESS} {JOB_USER_ID} blocked" in lines
    # AND one rule each, however often the hook ran, and the instance was left to run jobs
    assert sum("--jump REJECT" in line or "-j REJECT" in line for line in lines) == 2
    assert not (stubs / "calls").exists()


@pytest.mark.parametrize(
    "firewall", [{"iptables": "0", "ip6tables": "1"}, {"iptables": "1", "ip6tables": "0"}, {}]
)
def test_the_boothook_fails_closed(tmp_path: Path, firewall: dict[str, str]) -> None:
    # GIVEN a host where a rule cannot be installed (a command fails, or there is none)
    stubs = _stubs(tmp_path / "stubs", systemctl="0", poweroff="0", **firewall)
    hook = tmp_path / "hook.sh"
    hook.write_text(IMDS_BLOCK_SCRIPT)
    # WHEN the boothook runs
    result = subprocess.run(
        ["/bin/bash", str(hook)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(stubs)},
    )
    # THEN the ECS agent is masked (the instance never takes a job) and the instance powers
    # off, saying why
    calls = [line.strip() for line in (stubs / "calls").read_text().splitlines()]
    assert calls[-2:] == ["systemctl mask --now ecs.service", "poweroff"]
    assert "the metadata block did not install" in result.stderr


def test_every_job_runs_as_the_uid_the_rule_rejects(stack: Synthesized) -> None:
    stack.assertions.resource_count_is("AWS::Batch::JobDefinition", 5)
    stack.assertions.all_resources_properties(
        "AWS::Batch::JobDefinition", {"ContainerProperties": {"User": str(JOB_USER_ID)}}
    )
    dockerfile = (REPO / "job_images" / "Dockerfile").read_text()
    assert f"USER {JOB_USER_ID}\n" in dockerfile
    assert f"--uid {JOB_USER_ID} " in dockerfile


def test_every_job_runs_on_a_read_only_root_with_a_tmpfs_for_scratch(stack: Synthesized) -> None:
    template = stack.assertions
    definitions = template.find_resources("AWS::Batch::JobDefinition")
    assert len(definitions) == len(DEFAULT_SPEC.jobs)
    for definition in definitions.values():
        container = definition["Properties"]["ContainerProperties"]
        memory = next(
            int(r["Value"]) for r in container["ResourceRequirements"] if r["Type"] == "MEMORY"
        )
        # THEN nothing a job runs can change its image: the root filesystem is read-only ...
        assert container["ReadonlyRootFilesystem"] is True
        # ... and the one writable place is /tmp, a tmpfs of half the job's memory, without
        # setuid programs or devices, which TMPDIR names to the job and its tools
        assert container["LinuxParameters"] == {
            "Tmpfs": [
                {
                    "ContainerPath": "/tmp",
                    "Size": memory // 2,
                    "MountOptions": ["rw", "exec", "nosuid", "nodev"],
                }
            ]
        }
        assert {"Name": "TMPDIR", "Value": "/tmp"} in container["Environment"]
        assert "Volumes" not in container
        assert "MountPoints" not in container


_JOB_FAILED = {"EventPattern": {"source": ["aws.batch"], "detail": {"status": ["FAILED"]}}}
"""The failure rule: Batch's events of failed jobs."""


def _dead_letters(template: Template) -> str:
    """The queue the failure rule keeps what it could not deliver in."""
    queue = Capture()
    template.has_resource_properties(
        "AWS::Events::Rule",
        {**_JOB_FAILED, "Targets": [{"DeadLetterConfig": {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}}]},
    )
    return captured_id(queue)


def test_the_failure_rule_retries_and_keeps_what_it_cannot_deliver(
    stack: Synthesized,
) -> None:
    template = stack.assertions
    # GIVEN the failure rule and the queue its one target sends what it cannot deliver to
    rule = logical_id_of(template, "AWS::Events::Rule", _JOB_FAILED)
    dead_letters = _dead_letters(template)
    # THEN it retries for a day ...
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            **_JOB_FAILED,
            "Targets": [
                {
                    "RetryPolicy": Match.exact(
                        {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
                    )
                }
            ],
        },
    )
    # ... the queue keeps messages 14 days, encrypted ...
    stack.resource(dead_letters).has_resource_properties(
        "AWS::SQS::Queue",
        {"MessageRetentionPeriod": 14 * 24 * 3600, "KmsMasterKeyId": Match.any_value()},
    )
    # ... takes them from EventBridge for this rule only ...
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [{"Ref": dead_letters}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Action": "sqs:SendMessage",
                                "Principal": Match.exact({"Service": "events.amazonaws.com"}),
                                "Condition": Match.exact(
                                    {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule, "Arn"]}}}
                                ),
                            }
                        )
                    ]
                )
            },
        },
    )
    # ... and an alarm watches it for messages
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [
                {"Name": "QueueName", "Value": {"Fn::GetAtt": [dead_letters, "QueueName"]}}
            ],
        },
    )


def _alarm_arn(alarm_name: str) -> dict[str, Any]:
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":cloudwatch:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                f":alarm:{alarm_name}",
            ],
        ]
    }


def test_the_undelivered_alarm_reaches_a_topic_cloudwatch_may_publish_to(
    stack: Synthesized,
) -> None:
    template = stack.assertions
    # GIVEN the alarm on the dead-letter queue, its name and the topic it publishes to
    name, alarm_topic = Capture(), Capture()
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Dimensions": [
                {
                    "Name": "QueueName",
                    "Value": {"Fn::GetAtt": [_dead_letters(template), "QueueName"]},
                }
            ],
            "AlarmName": name,
            "AlarmActions": [{"Ref": alarm_topic}],
        },
    )
    topic = captured_id(alarm_topic)
    # THEN that topic is one of its own, not the notification topic whose delivery failed ...
    assert topic != resource_given_to_jobs(template, NOTIFICATION_TOPIC_ARN)
    key = Capture()
    stack.resource(topic).has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}}
    )
    # ... whose policy lets CloudWatch publish for this alarm only ...
    from_this_alarm = Match.exact(
        {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            "ArnEquals": {"aws:SourceArn": _alarm_arn(name.as_string())},
        }
    )
    cloudwatch = Match.exact({"Service": "cloudwatch.amazonaws.com"})
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Action": "sns:Publish",
                                "Principal": cloudwatch,
                                "Condition": from_this_alarm,
                            }
                        )
                    ]
                )
            },
        },
    )
    # ... and whose key lets it encrypt what it publishes, for this alarm only
    stack.resource(captured_id(key)).has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                                "Principal": cloudwatch,
                                "Condition": from_this_alarm,
                            }
                        )
                    ]
                )
            }
        },
    )


def test_the_key_lets_each_service_act_only_as_documented(stack: Synthesized) -> None:
    template = stack.assertions
    # GIVEN the pipeline's one key
    template.resource_count_is("AWS::KMS::Key", 1)
    key = logical_id_of(template, "AWS::KMS::Key", {})
    key_arn = {"Fn::GetAtt": [key, "Arn"]}
    # THEN EventBridge may decrypt and generate data keys, with no source conditions (they
    # could drop every notification): the topic and queue policies hold it to this
    # pipeline's rules
    events = Match.exact({"Service": "events.amazonaws.com"})
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": events,
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                                "Condition": Match.absent(),
                            }
                        )
                    ]
                )
            }
        },
    )
    # AND CloudWatch Logs may use it for this account's log groups, by encryption context,
    # with no action that carries no encryption context (it could never match)
    logs = {"Service": {"Fn::Join": ["", ["logs.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}}
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": Match.exact(logs),
                                "Condition": {
                                    "ArnLike": {
                                        "kms:EncryptionContext:aws:logs:arn": Match.any_value()
                                    }
                                },
                                "Action": Match.not_(
                                    Match.array_with([Match.string_like_regexp("^kms:Describe")])
                                ),
                            }
                        )
                    ]
                )
            }
        },
    )
    # AND it encrypts the table, both log groups, both topics and the dead-letter queue
    template.has_resource_properties(
        "AWS::DynamoDB::Table", {"SSESpecification": {"KMSMasterKeyId": key_arn}}
    )
    for type_, encrypted_by, count in (
        ("AWS::Logs::LogGroup", "KmsKeyId", 2),
        ("AWS::SNS::Topic", "KmsMasterKeyId", 2),
        ("AWS::SQS::Queue", "KmsMasterKeyId", 1),
    ):
        template.resource_count_is(type_, count)
        template.all_resources_properties(type_, {encrypted_by: key_arn})


def _key_uses(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of every identity policy in ``template`` that allows a KMS action."""
    found = []
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            if any(
                a.startswith("kms:") for a in ([actions] if isinstance(actions, str) else actions)
            ):
                found.append(statement)
    return found


def test_every_key_use_by_a_role_goes_through_a_service(stack: Synthesized) -> None:
    # GIVEN every statement of the stack's roles that lets them use a KMS key (the table's
    # users and JobE, which publishes to the encrypted topic)
    uses = _key_uses(stack.template)
    assert len(uses) >= 3
    # THEN each holds the key to the service that uses it on the role's behalf
    for statement in uses:
        conditions = statement.get("Condition", {})
        via = {**conditions.get("StringEquals", {}), **conditions.get("StringLike", {})}
        assert "kms:ViaService" in via, statement
    # AND DynamoDB's cryptographic uses are held to this pipeline's table by its documented
    # encryption context (DescribeKey has none)
    table = resource_given_to_jobs(stack.assertions, METADATA_TABLE)
    for statement in uses:
        if "kms:Decrypt" in statement["Action"] and "dynamodb" in json.dumps(statement):
            assert statement["Condition"]["StringEquals"][
                "kms:EncryptionContext:aws:dynamodb:tableName"
            ] == {"Ref": table}


def test_the_execution_role_trusts_only_this_accounts_ecs_tasks(
    stack: Synthesized,
) -> None:
    template = stack.assertions
    # GIVEN the execution role (every job definition has the same one)
    role = Capture()
    template.all_resources_properties(
        "AWS::Batch::JobDefinition",
        {"ContainerProperties": {"ExecutionRoleArn": {"Fn::GetAtt": [role, "Arn"]}}},
    )
    # THEN only ECS tasks of this account may assume it
    stack.resource(captured_id(role)).has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    Match.object_like(
                        {
                            "Principal": Match.exact({"Service": "ecs-tasks.amazonaws.com"}),
                            "Condition": {
                                "StringEquals": Match.exact(
                                    {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
                                )
                            },
                        }
                    )
                ]
            }
        },
    )


_EXPIRE_NONCURRENT_VERSIONS = Match.exact(
    {
        "Id": "ExpireNoncurrentVersions",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
        "Status": "Enabled",
    }
)


def test_output_is_versioned_with_expiring_noncurrent_versions(stack: Synthesized) -> None:
    output = resource_given_to_jobs(stack.assertions, OUTPUT_BUCKET)
    stack.resource(output).has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": Match.exact({"Status": "Enabled"}),
            "LifecycleConfiguration": {"Rules": Match.array_with([_EXPIRE_NONCURRENT_VERSIONS])},
        },
    )
    bucket_a = resource_given_to_jobs(stack.assertions, INPUT_BUCKET)
    stack.resource(bucket_a).has_resource_properties(
        "AWS::S3::Bucket", {"VersioningConfiguration": Match.absent()}
    )


@pytest.mark.slow  # a synthesis of its own
def test_input_versioning_versions_bucket_a(tmp_path: Path) -> None:
    import aws_cdk as cdk

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path, nist=True)
    stack = cdk.Stack(app, "Versioned")
    ArrayJobPipeline(stack, "P", array_size=10, input_versioning=True)
    template = Template.from_json(app.synth().get_stack_by_name("Versioned").template)
    # THEN BucketA, as the jobs are told it, is versioned and expires noncurrent versions
    bucket_a = resource_given_to_jobs(template, INPUT_BUCKET)
    versioned = template.find_resources(
        "AWS::S3::Bucket",
        {
            "Properties": {
                "VersioningConfiguration": Match.exact({"Status": "Enabled"}),
                "LifecycleConfiguration": {
                    "Rules": Match.array_with([_EXPIRE_NONCURRENT_VERSIONS])
                },
            }
        },
    )
    assert bucket_a in versioned


def _deny(bucket: str, condition: dict[str, Any]) -> Any:
    """A bucket policy statement pattern: Deny of every S3 action, to anyone, on the bucket and
    its objects, under ``condition``."""
    bucket_arn = {"Fn::GetAtt": [bucket, "Arn"]}
    return Match.exact(
        {
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "s3:*",
            "Resource": [bucket_arn, {"Fn::Join": ["", [bucket_arn, "/*"]]}],
            "Condition": condition,
        }
    )


def test_every_bucket_is_owner_enforced_private_encrypted_and_tls_only(
    stack: Synthesized,
) -> None:
    template = stack.assertions
    # GIVEN the five buckets: BucketA, B, C and the output bucket, which the jobs are given,
    # and the access-log bucket the other four log to
    pipeline_buckets = [
        resource_given_to_jobs(template, r.env) for r in RESOURCES if r.key in BUCKET_KEYS
    ]
    destination = Capture()
    stack.resource(pipeline_buckets[0]).has_resource_properties(
        "AWS::S3::Bucket", {"LoggingConfiguration": {"DestinationBucketName": {"Ref": destination}}}
    )
    log_bucket = captured_id(destination)
    buckets = [*pipeline_buckets, log_bucket]
    template.resource_count_is("AWS::S3::Bucket", len(set(buckets)))
    # THEN none has ACLs (the bucket owner owns every object, no canned ACL is set), each
    # blocks all public access and is encrypted with SSE-S3
    template.all_resources_properties(
        "AWS::S3::Bucket",
        {
            "OwnershipControls": Match.exact(
                {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
            ),
            "AccessControl": Match.absent(),
            "PublicAccessBlockConfiguration": Match.exact(
                {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                }
            ),
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": Match.exact({"SSEAlgorithm": "AES256"})}
                ]
            },
        },
    )
    # AND the pipeline's buckets log access to the access-log bucket, which logs nowhere
    for bucket in pipeline_buckets:
        stack.resource(bucket).has_resource_properties(
            "AWS::S3::Bucket",
            {"LoggingConfiguration": {"DestinationBucketName": {"Ref": log_bucket}}},
        )
    stack.resource(log_bucket).has_resource_properties(
        "AWS::S3::Bucket", {"LoggingConfiguration": Match.absent()}
    )
    # AND each bucket's policy refuses requests without TLS, or with TLS older than 1.2
    template.resource_count_is("AWS::S3::BucketPolicy", len(buckets))
    for bucket in buckets:
        for condition in (
            {"Bool": {"aws:SecureTransport": "false"}},
            {"NumericLessThan": {"s3:TlsVersion": 1.2}},
        ):
            template.has_resource_properties(
                "AWS::S3::BucketPolicy",
                {
                    "Bucket": {"Ref": bucket},
                    "PolicyDocument": {"Statement": Match.array_with([_deny(bucket, condition)])},
                },
            )
    # AND access logs arrive under the bucket policy (the logging service, from this
    # account's buckets), not through the LogDeliveryWrite ACL
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": log_bucket},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Principal": Match.exact({"Service": "logging.s3.amazonaws.com"}),
                                "Action": "s3:PutObject",
                                "Condition": {
                                    "StringEquals": Match.exact(
                                        {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
                                    )
                                },
                            }
                        )
                    ]
                )
            },
        },
    )


def test_the_vpcs_default_security_group_is_closed(stack: Synthesized) -> None:
    template = stack.assertions
    # GIVEN the pipeline's VPC
    template.resource_count_is("AWS::EC2::VPC", 1)
    vpc = logical_id_of(template, "AWS::EC2::VPC", {})
    # THEN its default security group is emptied of rules
    template.resource_count_is("Custom::VpcRestrictDefaultSG", 1)
    template.has_resource_properties(
        "Custom::VpcRestrictDefaultSG",
        {"DefaultSecurityGroupId": {"Fn::GetAtt": [vpc, "DefaultSecurityGroup"]}},
    )
    # AND the one group the instances are in lets nothing in
    template.resource_count_is("AWS::EC2::SecurityGroup", 1)
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup", {"VpcId": {"Ref": vpc}, "SecurityGroupIngress": Match.absent()}
    )
    template.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)


# CDK's own custom-resource handlers, the instance profile's role, Batch's service role: trust
# policies whose services act for this account only by construction.
_UNCONDITIONED_SERVICES = r"^(lambda|ec2|batch)\.amazonaws\.com$"


def test_every_service_role_trusts_its_service_for_this_account_only(
    stack: Synthesized,
) -> None:
    template = stack.assertions
    # GIVEN the roles another AWS service assumes on this pipeline's behalf: the five job
    # roles, the execution role and the flow-log role
    guarded = template.find_resources(
        "AWS::IAM::Role",
        {
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Principal": {
                                        "Service": Match.not_(
                                            Match.string_like_regexp(_UNCONDITIONED_SERVICES)
                                        )
                                    }
                                }
                            )
                        ]
                    )
                }
            }
        },
    )
    assert len(guarded) == 7, sorted(guarded)
    # THEN each trusts its one service only with this account as the source, and names the
    # source resource
    for role in guarded:
        conditions = Capture(
            Match.object_like(
                {
                    "StringEquals": Match.object_like(
                        {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
                    )
                }
            )
        )
        stack.resource(role).has_resource_properties(
            "AWS::IAM::Role",
            {
                "AssumeRolePolicyDocument": {
                    "Statement": [Match.object_like({"Condition": conditions})]
                }
            },
        )
        source_arn = {
            **conditions.as_object().get("ArnLike", {}),
            **conditions.as_object().get("StringEquals", {}),
        }.get("aws:SourceArn")
        assert source_arn is not None, role
    # AND the flow-log role is VPC Flow Logs', for this account's flow logs
    flow_log_role = Capture()
    template.has_resource_properties(
        "AWS::EC2::FlowLog", {"DeliverLogsPermissionArn": {"Fn::GetAtt": [flow_log_role, "Arn"]}}
    )
    stack.resource(captured_id(flow_log_role)).has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    Match.object_like(
                        {
                            "Principal": Match.exact({"Service": "vpc-flow-logs.amazonaws.com"}),
                            "Condition": {
                                "ArnLike": {
                                    "aws:SourceArn": {
                                        "Fn::Join": ["", Match.array_with([":vpc-flow-log/*"])]
                                    }
                                }
                            },
                        }
                    )
                ]
            }
        },
    )


# --- grants -----------------------------------------------------------------------------------


def _consumer(tmp_path: Path, *, unrelated_wildcard: bool) -> Any:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path, nist=True)
    stack = cdk.Stack(app, "Consumer")
    pipeline = ArrayJobPipeline(stack, "Pipeline", array_size=10)
    role = iam.Role(stack, "Operator", assumed_by=iam.AccountRootPrincipal())
    if unrelated_wildcard:
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=["*"]))
    pipeline.grant_submit_jobs(role)
    pipeline.grant_read_output(role)
    return app, stack


def test_a_grant_does_not_hide_the_grantees_own_wildcard(tmp_path: Path) -> None:
    app, _ = _consumer(tmp_path, unrelated_wildcard=True)
    with pytest.raises(Exception, match=r"Consumer/Operator/DefaultPolicy") as error:
        app.synth()
    assert "AwsSolutions-IAM5[Resource::*]" in str(error.value)
    assert "SubmitJobsGrant" not in str(error.value)  # the grant's own wildcards are explained


def test_the_grant_reaches_only_this_pipelines_jobs_and_revisions(tmp_path: Path) -> None:
    # GIVEN a consumer app granting a role job submission (synthesized cleanly under cdk-nag)
    app, stack = _consumer(tmp_path, unrelated_wildcard=False)
    template = app.synth().get_stack_by_name(stack.stack_name).template
    # AND the statements of every policy attached to the grantee: the one role this account's
    # principals assume
    assertions = Template.from_json(template)
    operator = logical_id_of(
        assertions,
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [Match.object_like({"Principal": {"AWS": Match.any_value()}})]
            }
        },
    )
    policies = assertions.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": operator}])}}
    )
    statements = [
        s
        for policy in policies.values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert any(s["Action"] == "batch:SubmitJob" for s in statements)
    # WHEN each request a grantee could make is decided against the grant's statements,
    # THEN it submits and stops this pipeline's jobs on the deployed revisions only, and
    # cannot re-tag another pipeline's job or set a tag key of its own choosing
    check_job_permissions(statements, template, "ProdQueue", PIPELINE_TAG, JOB_TAG_KEYS)


def test_another_wildcard_on_the_execution_role_fails_synthesis(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path)
    stack = cdk.Stack(app, "Widened")
    pipeline = ArrayJobPipeline(stack, "Pipeline", array_size=10)
    pipeline.jobs.execution_role.add_to_policy(
        iam.PolicyStatement(actions=["s3:ListAllMyBuckets"], resources=["*"])
    )
    with pytest.raises(Exception, match="grants s3:ListAllMyBuckets on every resource"):
        app.synth()


# --- checkov ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_checkov_finds_nothing_unexplained(stack: Synthesized) -> None:
    report = run_checkov(stack.assembly_dir / "ArrayJobPipeline.template.json")
    assert report["results"]["failed_checks"] == [], [
        (c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]
    ]
    skipped = {
        (c["check_id"], c["resource"].split(".")[0]) for c in report["results"]["skipped_checks"]
    }
    # every skip in the list is used (the starter's only where a trigger is, see
    # test_triggers_stack), and is the list's (no skip comes from anywhere else)
    used = [s for s in CHECKOV_SKIPS if not s.path_suffix.startswith("Starter/")]
    assert {c for c, _ in skipped} == {s.check for s in used}
    assert len(report["results"]["skipped_checks"]) == len(used)
    for check in report["results"]["skipped_checks"]:
        assert len(check["check_result"]["suppress_comment"]) > 60


def test_job_e_logs_the_s3_url_and_only_the_message_carries_the_link(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from helpers.jobs_world import jobs_world, sample_inputs
    from pipeline.jobs.program import run_main

    with jobs_world(array_size=2) as world:
        world.put_inputs(sample_inputs(12))
        world.run_until_e()
        capfd.readouterr()
        # WHEN JobE runs as its program does (run_main writes its result to the job's log),
        # with both streams captured, the library's loggers at every level, and the others
        # (botocore's) at the level a job runs them
        with caplog.at_level(logging.DEBUG, logger="pipeline"):
            code = run_main(
                "JobE",
                world.run_e,
            )
        (notification,) = world.notifications()
    out, err = capfd.readouterr()
    logged = out + err + caplog.text
    assert code == 0
    # THEN the log names the summary by its s3:// URL and holds no link or signature
    assert "s3://" in out
    assert "Signature" not in logged
    assert "https://" not in logged
    assert "Signature" in notification["Message"]
