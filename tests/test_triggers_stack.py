"""The trigger props in a consumer's app: two pipelines in one stack, one on a schedule, one on
upload; what each synthesizes to, and that it stays clean (cdk-nag, cfn-lint, checkov)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import Synthesized, new_app, run_checkov, synthesize
from iam_policy import check_job_permissions

from pipeline.contract import INPUT_PREFIX
from pipeline.errors import PipelineConfigError
from pipeline.spec import DEFAULT_SPEC, JOB_TAG_KEYS, PIPELINE_TAG
from pipeline.trigger_events import schedule_event, upload_pattern

CONSUMER_APP = """
import aws_cdk as cdk
from aws_cdk import aws_scheduler as scheduler
from pipeline import ArrayJobPipeline


class IngestStack(cdk.Stack):
    def __init__(self, scope, construct_id, **kwargs):
        super().__init__(scope, construct_id, **kwargs)
        self.nightly = ArrayJobPipeline(
            self, "Nightly", name_prefix="nightly", array_size=500,
            run_schedule=scheduler.ScheduleExpression.cron(
                minute="30", hour="2", time_zone=cdk.TimeZone.EUROPE_LONDON),
            trigger_max_vcpu_hours=20000,
        )
        self.uploads = ArrayJobPipeline(
            self, "Uploads", name_prefix="uploads", array_size=50, run_on_upload=True,
        )
"""


# Its module fixture is made once: its tests run on one worker.
@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    namespace: dict[str, Any] = {}
    exec(compile(CONSUMER_APP, "ingest_app.py", "exec"), namespace)  # a separate app's code
    app = new_app(tmp_path_factory.mktemp("ingest"), nist=True)
    stack = namespace["IngestStack"](app, "Ingest")
    return synthesize(app, stack)


def _of(stack: Synthesized, type_: str, pipeline: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in stack.resources(type_).items() if k.startswith(pipeline)}


def _one(stack: Synthesized, type_: str, pipeline: str) -> tuple[str, dict[str, Any]]:
    (found,) = _of(stack, type_, pipeline).items()
    return found


def _starter_statements(stack: Synthesized, pipeline: str) -> list[dict[str, Any]]:
    (policy,) = [
        p for k, p in _of(stack, "AWS::IAM::Policy", pipeline).items() if "StarterPolicy" in k
    ]
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


# --- the consumer app ---------------------------------------------------------------------------


def test_two_triggered_pipelines_synthesize_without_name_collisions(ingest: Synthesized) -> None:
    queues = [
        r["Properties"]["JobQueueName"] for r in ingest.resources("AWS::Batch::JobQueue").values()
    ]
    definitions = [
        r["Properties"]["JobDefinitionName"]
        for r in ingest.resources("AWS::Batch::JobDefinition").values()
    ]
    assert sorted(queues) == ["nightly-ProdQueue", "uploads-ProdQueue"]
    assert [n for n, c in Counter(definitions).items() if c > 1] == []
    # one starter each, named by CloudFormation (no physical name to collide)
    functions = ingest.resources("AWS::Lambda::Function")
    starters = {k: f for k, f in functions.items() if "StarterFunction" in k}
    assert len(starters) == 2
    assert not any("FunctionName" in f["Properties"] for f in starters.values())
    assert len(ingest.resources("AWS::Scheduler::Schedule")) == 1
    rules = [k for k in ingest.resources("AWS::Events::Rule") if "StarterUpload" in k]
    assert len(rules) == 1


@pytest.mark.slow
def test_cfn_lint_is_clean_on_the_consumer_app(ingest: Synthesized) -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), "--format", "parseable", str(ingest.assembly_dir / "Ingest.template.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


# --- the schedule -------------------------------------------------------------------------------


def test_the_schedule_invokes_the_starter_with_its_input_and_time_zone(ingest: Synthesized) -> None:
    _, schedule = _one(ingest, "AWS::Scheduler::Schedule", "Nightly")
    props = schedule["Properties"]
    function_id, _ = next(
        (k, f)
        for k, f in _of(ingest, "AWS::Lambda::Function", "Nightly").items()
        if "StarterFunction" in k
    )
    assert props["ScheduleExpression"] == "cron(30 2 * * ? *)"
    assert props["ScheduleExpressionTimezone"] == "Europe/London"
    assert props["State"] == "ENABLED"
    assert props["Target"]["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    assert json.loads(props["Target"]["Input"]) == schedule_event(
        "Ingest/Nightly", "<aws.scheduler.execution-id>", "<aws.scheduler.scheduled-time>"
    )


def test_the_schedule_role_may_only_invoke_this_starter(ingest: Synthesized) -> None:
    _, schedule = _one(ingest, "AWS::Scheduler::Schedule", "Nightly")
    role_id = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    role = ingest.template["Resources"][role_id]
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    schedule_group = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":scheduler:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":schedule-group/default",
            ],
        ]
    }
    assert "GroupName" not in schedule["Properties"]  # the schedule is in the default group
    assert trust["Condition"] == {
        "StringEquals": {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"},
            "aws:SourceArn": schedule_group,
        }
    }
    assert "ManagedPolicyArns" not in role["Properties"]
    policies = [
        p
        for p in ingest.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert {s["Action"] for s in statements} == {"lambda:InvokeFunction"}
    for statement in statements:
        for resource in statement["Resource"]:
            assert "NightlyStarterFunction" in json.dumps(resource)


def test_a_pipeline_without_triggers_has_no_starter(default_stack: Synthesized) -> None:
    assert not any("Starter" in k for k in default_stack.template["Resources"])
    assert default_stack.resources("AWS::Scheduler::Schedule") == {}


# --- the upload rule ----------------------------------------------------------------------------


def test_bucket_a_sends_its_events_to_eventbridge_without_a_custom_resource(
    ingest: Synthesized,
) -> None:
    buckets = {k: b for k, b in ingest.resources("AWS::S3::Bucket").items() if "BucketA" in k}
    uploads = next(b for k, b in buckets.items() if k.startswith("Uploads"))
    nightly = next(b for k, b in buckets.items() if k.startswith("Nightly"))
    assert uploads["Properties"]["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    assert "NotificationConfiguration" not in nightly["Properties"]
    assert ingest.resources("Custom::S3BucketNotifications") == {}


def test_the_upload_rule_matches_ready_markers_of_bucket_a_only(ingest: Synthesized) -> None:
    ((rule_id, rule),) = [
        (k, r) for k, r in ingest.resources("AWS::Events::Rule").items() if "StarterUpload" in k
    ]
    bucket_id = next(
        k for k in ingest.resources("AWS::S3::Bucket") if k.startswith("UploadsStorageBucketA")
    )
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"] == json.loads(
        json.dumps(upload_pattern("BUCKET")).replace('"BUCKET"', json.dumps({"Ref": bucket_id}))
    )
    (target,) = rule["Properties"]["Targets"]
    assert "UploadsStarterFunction" in target["Arn"]["Fn::GetAtt"][0]
    assert "DeadLetters" in target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert rule_id.startswith("Uploads")


# --- the starter --------------------------------------------------------------------------------


def test_the_starter_role_is_held_to_this_pipelines_queue_definitions_and_tag(
    ingest: Synthesized,
) -> None:
    statements = _starter_statements(ingest, "Uploads")
    check_job_permissions(
        statements, ingest.template, "uploads-ProdQueue", PIPELINE_TAG, JOB_TAG_KEYS, "Uploads"
    )
    submit = next(s for s in statements if s["Action"] == "batch:SubmitJob")
    resources = json.dumps(submit["Resource"])
    assert "UploadsComputeQueue" in resources
    for job in DEFAULT_SPEC:  # the exact revisions deployed, not name:*
        assert f"UploadsJobs{job.key}" in resources
    assert "job-definition" not in resources
    actions = {a for s in statements for a in s["Action"]}
    assert not any(a.startswith(("s3:", "dynamodb:", "iam:")) for a in actions)
    role_id = next(k for k in _of(ingest, "AWS::IAM::Role", "Uploads") if "StarterRole" in k)
    assert "ManagedPolicyArns" not in ingest.template["Resources"][role_id]["Properties"]


def test_the_starter_is_told_its_pipeline_and_is_not_retried(ingest: Synthesized) -> None:
    function = next(
        f
        for k, f in _of(ingest, "AWS::Lambda::Function", "Nightly").items()
        if "StarterFunction" in k
    )
    props = function["Properties"]
    variables = props["Environment"]["Variables"]
    assert props["Handler"] == "pipeline.starter.handler"
    assert variables["PIPELINE_ALLOW_OVERLAP"] == "false"
    assert variables["PIPELINE_MAX_VCPU_HOURS"] == "20000"
    assert "NightlyEncryptionKey" in props["KmsKeyArn"]["Fn::GetAtt"][0]
    assert INPUT_PREFIX not in variables
    config = next(
        c
        for k, c in ingest.resources("AWS::Lambda::EventInvokeConfig").items()
        if k.startswith("Nightly")
    )
    assert config["Properties"]["MaximumRetryAttempts"] == 0
    assert (
        "NightlyStorageNotificationTopic"
        in config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]["Ref"]
    )


# --- props --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "message"),
    [
        (
            {"allow_overlapping_runs": True},
            "allow_overlapping_runs applies to runs a trigger starts",
        ),
        ({"trigger_max_vcpu_hours": 10}, "trigger_max_vcpu_hours applies to runs a trigger"),
        ({"run_on_upload": True, "trigger_max_vcpu_hours": 0}, "must be a number above 0"),
        ({"run_on_upload": True, "trigger_max_vcpu_hours": True}, "must be a number above 0"),
    ],
)
def test_trigger_props_that_cannot_work_are_refused(props: dict[str, Any], message: str) -> None:
    import aws_cdk as cdk

    from pipeline import ArrayJobPipeline

    stack = cdk.Stack(cdk.App())
    with pytest.raises(PipelineConfigError, match=message):
        ArrayJobPipeline(stack, "P", **props)


def test_upload_runs_with_a_bucket_brought_in_say_what_to_turn_on(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3
    from aws_cdk.assertions import Annotations, Match

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path)
    stack = cdk.Stack(app, "Brought")
    inputs = s3.Bucket.from_bucket_name(stack, "Inputs", "team-inputs")
    ArrayJobPipeline(stack, "P", existing_input_bucket=inputs, run_on_upload=True)
    Annotations.from_stack(stack).has_warning(
        "*", Match.string_like_regexp("turn on Amazon EventBridge notifications for that bucket")
    )


# --- checkov --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_checkov_is_clean_on_the_triggered_pipelines(ingest: Synthesized) -> None:
    report = run_checkov(ingest.assembly_dir / "Ingest.template.json")
    assert report["results"]["failed_checks"] == [], [
        (c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]
    ]
    starter_skips = {
        c["check_id"]
        for c in report["results"]["skipped_checks"]
        if "StarterFunction" in c["resource"]
    }
    assert starter_skips == {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117"}


# --- cdk.json context (npx cdk deploy -c ...) -----------------------------------------------------


def test_context_keys_turn_the_triggers_on() -> None:
    from pipeline.stacks.context import pipeline_props_from_context

    context = {
        "pipeline:runSchedule": "cron(0 2 * * ? *)",
        "pipeline:runScheduleTimeZone": "Europe/London",
        "pipeline:runOnUpload": "true",
        "pipeline:allowOverlappingRuns": "false",
        "pipeline:triggerMaxVcpuHours": "5000",
    }
    props = pipeline_props_from_context(context.get)
    schedule = props["run_schedule"]
    assert schedule.expression_string == "cron(0 2 * * ? *)"
    assert schedule.time_zone is not None
    assert schedule.time_zone.timezone_name == "Europe/London"
    assert props["run_on_upload"] is True
    assert props["allow_overlapping_runs"] is False
    assert props["trigger_max_vcpu_hours"] == 5000.0


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"pipeline:runSchedule": "every night"}, "must be an EventBridge Scheduler expression"),
        (
            {"pipeline:runSchedule": "rate(1 day)", "pipeline:runScheduleTimeZone": "Mars/Olympus"},
            "is not an IANA time zone",
        ),
        ({"pipeline:runScheduleTimeZone": "UTC"}, "needs pipeline:runSchedule"),
        ({"pipeline:runOnUpload": "sometimes"}, "must be true or false"),
        ({"pipeline:triggerMaxVcpuHours": "lots"}, "must be a number"),
    ],
)
def test_bad_trigger_context_is_one_line(context: dict[str, str], message: str) -> None:
    from pipeline.stacks.context import pipeline_props_from_context

    with pytest.raises(PipelineConfigError, match=message):
        pipeline_props_from_context(context.get)


def test_triggers_without_a_cost_cap_warn_at_synth(ingest: Synthesized) -> None:
    from aws_cdk.assertions import Annotations, Match

    warning = Match.string_like_regexp("without trigger_max_vcpu_hours")
    annotations = Annotations.from_stack(ingest.stack)
    annotations.has_warning("/Ingest/Uploads", warning)  # run_on_upload, no cap
    annotations.has_no_warning("/Ingest/Nightly", warning)  # trigger_max_vcpu_hours=20_000
