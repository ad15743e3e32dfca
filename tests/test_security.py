"""Security claims as the template makes them hold on AWS: job containers kept from the
instance role, notifications that cannot be lost, confused-deputy conditions, grants that
reach only this pipeline and hide nobody else's findings, and checkov clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Synthesized, new_app, run_checkov
from iam_policy import check_job_permissions

from pipeline.constructs.checkov import CHECKOV_SKIPS
from pipeline.spec import JOB_TAG_KEYS, JOB_USER_ID, PIPELINE_TAG


def _user_data(default_stack: Synthesized) -> str:
    (template,) = default_stack.resources("AWS::EC2::LaunchTemplate").values()
    user_data = template["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    return user_data if isinstance(user_data, str) else json.dumps(user_data)


def test_the_hosts_reject_metadata_requests_from_job_containers(
    default_stack: Synthesized,
) -> None:
    user_data = _user_data(default_stack)
    # a MIME multi-part document, as Batch requires of launch template user data
    assert user_data.startswith("Content-Type: multipart/mixed; boundary=")
    assert 'Content-Type: text/cloud-boothook; charset="utf-8"' in user_data
    # every uid but root is rejected on the way to the instance metadata service ...
    assert (
        'rule="OUTPUT --destination 169.254.169.254 --match owner ! --uid-owner 0 --jump REJECT"'
        in user_data
    )
    assert "iptables --check $rule 2>/dev/null || iptables --insert $rule" in user_data
    # ... and the ECS agent's task-credential endpoint is left alone
    assert "169.254.170.2" not in user_data
    (template,) = default_stack.resources("AWS::EC2::LaunchTemplate").values()
    options = template["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    assert options["HttpTokens"] == "required"
    assert options["HttpProtocolIpv6"] == "disabled"


def test_every_job_runs_as_the_uid_the_rule_rejects(default_stack: Synthesized) -> None:
    definitions = default_stack.resources("AWS::Batch::JobDefinition").values()
    assert {d["Properties"]["ContainerProperties"]["User"] for d in definitions} == {
        str(JOB_USER_ID)
    }
    dockerfile = (REPO / "job_images" / "Dockerfile").read_text()
    assert f"USER {JOB_USER_ID}\n" in dockerfile
    assert f"--uid {JOB_USER_ID} " in dockerfile


def test_the_failure_rule_retries_and_keeps_what_it_cannot_deliver(
    default_stack: Synthesized,
) -> None:
    (rule,) = default_stack.resources("AWS::Events::Rule").values()
    (target,) = rule["Properties"]["Targets"]
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}
    dead_letters = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    queue = default_stack.template["Resources"][dead_letters]["Properties"]
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert "KmsMasterKeyId" in queue
    (queue_policy,) = default_stack.resources("AWS::SQS::QueuePolicy").values()
    statements = queue_policy["Properties"]["PolicyDocument"]["Statement"]
    send = next(s for s in statements if s["Action"] == "sqs:SendMessage")
    assert send["Principal"] == {"Service": "events.amazonaws.com"}
    assert "aws:SourceArn" in send["Condition"]["ArnEquals"]
    (alarm,) = default_stack.resources("AWS::CloudWatch::Alarm").values()
    assert alarm["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"


def _key_statements(default_stack: Synthesized) -> list[dict[str, Any]]:
    (key,) = default_stack.resources("AWS::KMS::Key").values()
    return list(key["Properties"]["KeyPolicy"]["Statement"])


def test_the_key_lets_services_act_only_for_this_account(default_stack: Synthesized) -> None:
    statements = _key_statements(default_stack)
    events = next(
        s for s in statements if s.get("Principal") == {"Service": "events.amazonaws.com"}
    )
    assert sorted(events["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert events["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":rule/*" in json.dumps(events["Condition"]["ArnLike"]["aws:SourceArn"])
    logs = next(s for s in statements if "logs." in json.dumps(s.get("Principal")))
    assert "kms:EncryptionContext:aws:logs:arn" in logs["Condition"]["ArnLike"]
    # the key encrypts the table, both log groups, the topic and the dead-letter queue
    template = json.dumps(default_stack.template)
    (key_id,) = default_stack.resources("AWS::KMS::Key")
    assert template.count(f'"Fn::GetAtt": ["{key_id}", "Arn"]') >= 4


def test_the_execution_role_trusts_only_this_accounts_ecs_tasks(
    default_stack: Synthesized,
) -> None:
    role = next(
        r for k, r in default_stack.resources("AWS::IAM::Role").items() if "ExecutionRole" in k
    )
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Condition"]["StringEquals"] == {
        "aws:SourceAccount": {"Ref": "AWS::AccountId"}
    }


def test_output_is_versioned_with_expiring_noncurrent_versions(default_stack: Synthesized) -> None:
    buckets = default_stack.resources("AWS::S3::Bucket")
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


# --- grants -----------------------------------------------------------------------------------


def _consumer(tmp_path: Path, *, unrelated_wildcard: bool) -> Any:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path)
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
def test_checkov_finds_nothing_unexplained(default_stack: Synthesized) -> None:
    report = run_checkov(default_stack.assembly_dir / "ArrayJobPipeline.template.json")
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
