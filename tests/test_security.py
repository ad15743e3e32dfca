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
from conftest import REPO, Synthesized, new_app, run_checkov
from iam_policy import check_job_permissions

from pipeline.constructs.checkov import CHECKOV_SKIPS
from pipeline.constructs.compute import IMDS_ADDRESS, IMDS_BLOCK_SCRIPT, IMDS_IPV6_ADDRESS
from pipeline.spec import JOB_TAG_KEYS, JOB_USER_ID, PIPELINE_TAG


@pytest.fixture(
    scope="module",
    params=["cdk.json's flags", pytest.param("no flags", marks=pytest.mark.slow)],
)
def stack(request: pytest.FixtureRequest) -> Synthesized:
    """Each claim below holds for the repository's app and for an app with no feature flags
    at all (a consumer's plain ``python app.py``, or an app older than those flags)."""
    name = "default_stack" if request.param == "cdk.json's flags" else "no_flags_stack"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def _user_data(stack: Synthesized) -> str:
    (template,) = stack.resources("AWS::EC2::LaunchTemplate").values()
    user_data = template["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    return user_data if isinstance(user_data, str) else json.dumps(user_data)


def test_the_launch_template_installs_the_metadata_block_at_boot(
    stack: Synthesized,
) -> None:
    user_data = _user_data(stack)
    # a MIME multi-part document, as Batch requires of launch template user data, whose
    # boothook is the script the tests below run
    assert user_data.startswith("Content-Type: multipart/mixed; boundary=")
    assert 'Content-Type: text/cloud-boothook; charset="utf-8"' in user_data
    assert IMDS_BLOCK_SCRIPT in json.loads(json.dumps(user_data))
    # the ECS agent's task-credential endpoint is left alone
    assert "169.254.170.2" not in user_data
    (template,) = stack.resources("AWS::EC2::LaunchTemplate").values()
    options = template["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    assert options["HttpTokens"] == "required"
    assert options["HttpProtocolIpv6"] == "disabled"


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


@pytest.mark.slow  # a few seconds: in the full suite, not the fast loop
@pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(c) for c in ("unshare", "iptables", "ip6tables")),
    reason="needs root, unshare and iptables/ip6tables (scripts/dev setup installs iptables)",
)
def test_the_boothook_keeps_every_uid_but_root_from_the_metadata_service(tmp_path: Path) -> None:
    # GIVEN a network namespace whose loopback carries both metadata addresses, and the
    # systemctl and poweroff the hook would call on failure recorded instead of run
    stubs = _stubs(tmp_path / "stubs", systemctl="0", poweroff="0")
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
    definitions = stack.resources("AWS::Batch::JobDefinition").values()
    assert {d["Properties"]["ContainerProperties"]["User"] for d in definitions} == {
        str(JOB_USER_ID)
    }
    dockerfile = (REPO / "job_images" / "Dockerfile").read_text()
    assert f"USER {JOB_USER_ID}\n" in dockerfile
    assert f"--uid {JOB_USER_ID} " in dockerfile


def test_the_failure_rule_retries_and_keeps_what_it_cannot_deliver(
    stack: Synthesized,
) -> None:
    (rule,) = stack.resources("AWS::Events::Rule").values()
    (target,) = rule["Properties"]["Targets"]
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
    dead_letters = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    queue = stack.template["Resources"][dead_letters]["Properties"]
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert "KmsMasterKeyId" in queue
    (queue_policy,) = stack.resources("AWS::SQS::QueuePolicy").values()
    statements = queue_policy["Properties"]["PolicyDocument"]["Statement"]
    send = next(s for s in statements if s["Action"] == "sqs:SendMessage")
    assert send["Principal"] == {"Service": "events.amazonaws.com"}
    assert "aws:SourceArn" in send["Condition"]["ArnEquals"]
    (alarm,) = stack.resources("AWS::CloudWatch::Alarm").values()
    assert alarm["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"


def _key_statements(stack: Synthesized) -> list[dict[str, Any]]:
    (key,) = stack.resources("AWS::KMS::Key").values()
    return list(key["Properties"]["KeyPolicy"]["Statement"])


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
    # GIVEN the alarm on the dead-letter queue
    resources = stack.template["Resources"]
    (alarm,) = stack.resources("AWS::CloudWatch::Alarm").values()
    name = alarm["Properties"]["AlarmName"]
    (action,) = alarm["Properties"]["AlarmActions"]
    topic_id = action["Ref"]
    # THEN it publishes to a topic of its own, not the notification topic whose delivery failed
    assert "AlarmTopic" in topic_id
    assert resources[topic_id]["Type"] == "AWS::SNS::Topic"
    encrypted_with = resources[topic_id]["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    # AND the topic policy lets CloudWatch publish for this alarm only ...
    (policy,) = [
        p
        for p in stack.resources("AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [{"Ref": topic_id}]
    ]
    from_this_alarm = {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        "ArnEquals": {"aws:SourceArn": _alarm_arn(name)},
    }
    publish = next(
        s
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow" and s["Action"] == "sns:Publish"
    )
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert publish["Condition"] == from_this_alarm
    # ... and the topic's key lets it encrypt what it publishes, for this alarm only
    key_policy = resources[encrypted_with]["Properties"]["KeyPolicy"]["Statement"]
    use = next(s for s in key_policy if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"})
    assert set(use["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert use["Condition"] == from_this_alarm


def test_the_key_lets_each_service_act_only_as_documented(stack: Synthesized) -> None:
    statements = _key_statements(stack)
    # EventBridge: no source conditions (they could drop every notification); the topic and
    # queue policies hold it to this pipeline's rules
    events = next(
        s for s in statements if s.get("Principal") == {"Service": "events.amazonaws.com"}
    )
    assert sorted(events["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert "Condition" not in events
    # CloudWatch Logs: this account's log groups, by encryption context, and no action that
    # carries no encryption context (it could never match)
    logs = next(s for s in statements if "logs." in json.dumps(s.get("Principal")))
    assert "kms:EncryptionContext:aws:logs:arn" in logs["Condition"]["ArnLike"]
    assert not any(a.startswith("kms:Describe") for a in logs["Action"])
    # the key encrypts the table, both log groups, both topics and the dead-letter queue
    template = json.dumps(stack.template)
    (key_id,) = stack.resources("AWS::KMS::Key")
    assert template.count(f'"Fn::GetAtt": ["{key_id}", "Arn"]') >= 5


def test_the_execution_role_trusts_only_this_accounts_ecs_tasks(
    stack: Synthesized,
) -> None:
    role = next(r for k, r in stack.resources("AWS::IAM::Role").items() if "ExecutionRole" in k)
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Condition"]["StringEquals"] == {
        "aws:SourceAccount": {"Ref": "AWS::AccountId"}
    }


def test_output_is_versioned_with_expiring_noncurrent_versions(stack: Synthesized) -> None:
    buckets = stack.resources("AWS::S3::Bucket")
    output = next(b for k, b in buckets.items() if "OutputBucket" in k)["Properties"]
    assert output["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = output["LifecycleConfiguration"]["Rules"]
    assert {
        "Id": "ExpireNoncurrentVersions",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
        "Status": "Enabled",
    } in rules
    bucket_a = next(b for k, b in buckets.items() if "BucketA" in k)["Properties"]
    assert "VersioningConfiguration" not in bucket_a


@pytest.mark.slow  # a synthesis of its own
def test_input_versioning_versions_bucket_a(tmp_path: Path) -> None:
    import aws_cdk as cdk

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path, nist=True)
    stack = cdk.Stack(app, "Versioned")
    ArrayJobPipeline(stack, "P", array_size=10, input_versioning=True)
    buckets = {
        k: r["Properties"]
        for k, r in app.synth().get_stack_by_name("Versioned").template["Resources"].items()
        if r["Type"] == "AWS::S3::Bucket"
    }
    bucket_a = next(b for k, b in buckets.items() if "BucketA" in k)
    assert bucket_a["VersioningConfiguration"] == {"Status": "Enabled"}
    assert {
        "Id": "ExpireNoncurrentVersions",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
        "Status": "Enabled",
    } in bucket_a["LifecycleConfiguration"]["Rules"]


def test_every_bucket_is_owner_enforced_private_encrypted_and_tls_only(
    stack: Synthesized,
) -> None:
    buckets = stack.resources("AWS::S3::Bucket")
    assert len(buckets) == 5  # BucketA, B, C, output, access logs
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        # no ACLs: the bucket owner owns every object, and no canned ACL is set
        assert props["OwnershipControls"] == {
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]
        }, logical_id
        assert "AccessControl" not in props, logical_id
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert encryption["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
        if "AccessLogs" not in logical_id:
            logging = props["LoggingConfiguration"]
            assert "AccessLogs" in logging["DestinationBucketName"]["Ref"], logical_id
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
        for p in stack.resources("AWS::S3::BucketPolicy").values()
    }
    assert set(policies) == set(buckets)
    for logical_id, statements in policies.items():
        denies = [s["Condition"] for s in statements if s["Effect"] == "Deny"]
        assert {"Bool": {"aws:SecureTransport": "false"}} in denies, logical_id
        assert {"NumericLessThan": {"s3:TlsVersion": 1.2}} in denies, logical_id
    # access logs arrive under the bucket policy (the logging service, from this account's
    # buckets), not through the LogDeliveryWrite ACL
    (log_bucket,) = [k for k in buckets if "AccessLogs" in k]
    delivery = next(
        s
        for s in policies[log_bucket]
        if s.get("Principal") == {"Service": "logging.s3.amazonaws.com"}
    )
    assert delivery["Action"] == "s3:PutObject"
    assert delivery["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_the_vpcs_default_security_group_is_closed(stack: Synthesized) -> None:
    (vpc_id,) = stack.resources("AWS::EC2::VPC")
    (restrict,) = stack.resources("Custom::VpcRestrictDefaultSG").values()
    assert restrict["Properties"]["DefaultSecurityGroupId"] == {
        "Fn::GetAtt": [vpc_id, "DefaultSecurityGroup"]
    }
    (instances,) = stack.resources("AWS::EC2::SecurityGroup").values()
    assert "SecurityGroupIngress" not in instances["Properties"]


def test_every_service_role_trusts_its_service_for_this_account_only(
    stack: Synthesized,
) -> None:
    roles = stack.resources("AWS::IAM::Role")
    for logical_id, role in roles.items():
        for statement in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            service = statement["Principal"].get("Service")
            if service in (
                None,
                "lambda.amazonaws.com",
                "ec2.amazonaws.com",
                "batch.amazonaws.com",
            ):
                continue  # CDK's own custom-resource handlers, the instance profile, Batch's
            conditions = statement.get("Condition", {})
            source_account = conditions.get("StringEquals", {}).get("aws:SourceAccount")
            source_arn = {
                **conditions.get("ArnLike", {}),
                **conditions.get("StringEquals", {}),
            }.get("aws:SourceArn")
            assert source_account == {"Ref": "AWS::AccountId"}, (logical_id, service)
            assert source_arn is not None, (logical_id, service)
    flow_log = next(r for k, r in roles.items() if "FlowLogRole" in k)
    (trust,) = flow_log["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert ":vpc-flow-log/*" in json.dumps(trust["Condition"]["ArnLike"]["aws:SourceArn"])


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
    statements = [
        s
        for k, p in template["Resources"].items()
        if p["Type"] == "AWS::IAM::Policy" and "SubmitJobsGrant" in k
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert statements
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


def test_job_e_logs_the_s3_url_and_only_the_message_carries_the_link() -> None:
    from jobs_world import jobs_world, sample_inputs

    from pipeline.jobs import job_e

    with jobs_world(array_size=2) as world:
        world.put_inputs(sample_inputs(12))
        world.run_until_e()
        # WHEN JobE runs, what it returns is what run_main prints to the job's log
        result = job_e.run(
            world.s3,
            world.sns,
            world.dynamodb,
            world.ctx,
            source_bucket=world.ctx.output_bucket,
            recipient=None,
        )
        (notification,) = world.notifications()
    logged = json.dumps(result)
    assert result["summary"].startswith("s3://")
    assert "Signature" not in logged
    assert "http" not in logged
    # the presigned link (with its credentials) goes only to the topic's subscribers
    assert "Signature" in notification["Message"]
