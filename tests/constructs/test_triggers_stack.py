"""The trigger props in a consumer's app: two pipelines in one stack, one on a schedule, one on
upload; what each synthesizes to, and that it stays clean (cdk-nag, cfn-lint, checkov)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from helpers.iam_policy import check_job_permissions
from helpers.synth import (
    Synthesized,
    captured_id,
    logical_id_of,
    new_app,
    resource_given_to_jobs,
    run_checkov,
    synthesize,
)
from pipeline.contract import INPUT_BUCKET, INPUT_PREFIX, NOTIFICATION_TOPIC_ARN
from pipeline.errors import PipelineConfigError
from pipeline.spec import DEFAULT_SPEC, JOB_TAG_KEYS, PIPELINE_TAG
from pipeline.trigger_events import (
    ALLOW_OVERLAP,
    MAX_VCPU_HOURS,
    QUEUE,
    schedule_event,
    upload_pattern,
)

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


_STARTER = {"Handler": "pipeline.starter.handler"}
"""What makes a Lambda function a pipeline's starter."""
_UPLOADS = {"EventPattern": {"source": ["aws.s3"]}}
"""What makes a rule the upload trigger: it matches S3's events."""


def _queue(template: Template, prefix: str) -> str:
    """The job queue of the pipeline named ``prefix``, known by its name."""
    return logical_id_of(template, "AWS::Batch::JobQueue", {"JobQueueName": f"{prefix}-ProdQueue"})


def _starter(template: Template, prefix: str) -> str:
    """The starter function of the pipeline named ``prefix``: the one told that pipeline's
    queue."""
    queue_arn = {"Fn::GetAtt": [_queue(template, prefix), "JobQueueArn"]}
    return logical_id_of(
        template,
        "AWS::Lambda::Function",
        {**_STARTER, "Environment": {"Variables": {QUEUE: queue_arn}}},
    )


def _starter_role(stack: Synthesized, prefix: str) -> str:
    """The role the starter function of the pipeline named ``prefix`` runs with."""
    role = Capture()
    stack.resource(_starter(stack.assertions, prefix)).has_resource_properties(
        "AWS::Lambda::Function", {"Role": {"Fn::GetAtt": [role, "Arn"]}}
    )
    return captured_id(role)


def _statements_of(template: Template, role: str) -> list[dict[str, Any]]:
    """The statements of every policy attached to ``role``."""
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": role}])}}
    )
    return [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _dead_letters(template: Template, prefix: str) -> str:
    """The queue the pipeline's failure rule keeps what it could not deliver in."""
    queue = Capture()
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "detail": {"jobQueue": [{"Fn::GetAtt": [_queue(template, prefix), "JobQueueArn"]}]}
            },
            "Targets": [{"DeadLetterConfig": {"Arn": {"Fn::GetAtt": [queue, "Arn"]}}}],
        },
    )
    return captured_id(queue)


# --- the consumer app ---------------------------------------------------------------------------


def test_two_triggered_pipelines_synthesize_without_name_collisions(ingest: Synthesized) -> None:
    template = ingest.assertions
    # THEN each pipeline has its own queue and definitions, each name used once ...
    template.resource_count_is("AWS::Batch::JobQueue", 2)
    template.resource_count_is("AWS::Batch::JobDefinition", 2 * len(DEFAULT_SPEC.jobs))
    for prefix in ("nightly", "uploads"):
        _queue(template, prefix)
        for job in DEFAULT_SPEC:
            logical_id_of(
                template,
                "AWS::Batch::JobDefinition",
                {"JobDefinitionName": f"{prefix}-{job.definition_name}"},
            )
        # ... and one starter each, named by CloudFormation (no physical name to collide)
        ingest.resource(_starter(template, prefix)).has_resource_properties(
            "AWS::Lambda::Function", {"FunctionName": Match.absent()}
        )
    template.resource_properties_count_is("AWS::Lambda::Function", _STARTER, 2)
    template.resource_count_is("AWS::Scheduler::Schedule", 1)
    template.resource_properties_count_is("AWS::Events::Rule", _UPLOADS, 1)


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
    template = ingest.assertions
    starter = _starter(template, "nightly")
    template.resource_count_is("AWS::Scheduler::Schedule", 1)
    event = schedule_event(
        "Ingest/Nightly", "<aws.scheduler.execution-id>", "<aws.scheduler.scheduled-time>"
    )
    template.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "ScheduleExpression": "cron(30 2 * * ? *)",
            "ScheduleExpressionTimezone": "Europe/London",
            "State": "ENABLED",
            "Target": {
                "Arn": {"Fn::GetAtt": [starter, "Arn"]},
                "Input": Match.serialized_json(Match.exact(event)),
            },
        },
    )


def test_the_schedule_role_may_only_invoke_this_starter(ingest: Synthesized) -> None:
    template = ingest.assertions
    # GIVEN the role of the schedule, which is in the default group
    role = Capture()
    template.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {"GroupName": Match.absent(), "Target": {"RoleArn": {"Fn::GetAtt": [role, "Arn"]}}},
    )
    schedule_role = captured_id(role)
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
    # THEN only EventBridge Scheduler, for this account's default group, may assume it ...
    ingest.resource(schedule_role).has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    Match.object_like(
                        {
                            "Principal": Match.exact({"Service": "scheduler.amazonaws.com"}),
                            "Condition": Match.exact(
                                {
                                    "StringEquals": {
                                        "aws:SourceAccount": {"Ref": "AWS::AccountId"},
                                        "aws:SourceArn": schedule_group,
                                    }
                                }
                            ),
                        }
                    )
                ]
            },
            "ManagedPolicyArns": Match.absent(),
        },
    )
    # ... and its one policy lets it invoke this starter (and its versions), nothing else
    starter_arn = {"Fn::GetAtt": [_starter(template, "nightly"), "Arn"]}
    attached = {"Roles": Match.array_with([{"Ref": schedule_role}])}
    template.resource_properties_count_is("AWS::IAM::Policy", attached, 1)
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            **attached,
            "PolicyDocument": {
                "Statement": [
                    Match.object_like(
                        {
                            "Effect": "Allow",
                            "Action": "lambda:InvokeFunction",
                            "Resource": [starter_arn, {"Fn::Join": ["", [starter_arn, ":*"]]}],
                        }
                    )
                ]
            },
        },
    )


def test_a_pipeline_without_triggers_has_no_starter(template: Template) -> None:
    # no starter function, nothing to invoke one, no role for one
    template.resource_properties_count_is("AWS::Lambda::Function", _STARTER, 0)
    template.resource_count_is("AWS::Lambda::EventInvokeConfig", 0)
    template.resource_count_is("AWS::Scheduler::Schedule", 0)
    template.resource_properties_count_is("AWS::Events::Rule", _UPLOADS, 0)
    template.resource_properties_count_is(
        "AWS::IAM::Role", {"Description": Match.string_like_regexp("starter")}, 0
    )


# --- the upload rule ----------------------------------------------------------------------------


def test_bucket_a_sends_its_events_to_eventbridge_without_a_custom_resource(
    ingest: Synthesized,
) -> None:
    template = ingest.assertions
    # GIVEN each pipeline's BucketA, as its jobs are told it
    uploads = resource_given_to_jobs(template, INPUT_BUCKET, "uploads")
    nightly = resource_given_to_jobs(template, INPUT_BUCKET, "nightly")
    # THEN the upload-triggered one sends its events to EventBridge, the other sends none,
    # and no custom resource configures either
    ingest.resource(uploads).has_resource_properties(
        "AWS::S3::Bucket",
        {
            "NotificationConfiguration": Match.exact(
                {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
            )
        },
    )
    ingest.resource(nightly).has_resource_properties(
        "AWS::S3::Bucket", {"NotificationConfiguration": Match.absent()}
    )
    template.resource_count_is("Custom::S3BucketNotifications", 0)


def test_the_upload_rule_matches_ready_markers_of_bucket_a_only(ingest: Synthesized) -> None:
    template = ingest.assertions
    # GIVEN the upload pipeline's BucketA, starter and dead-letter queue
    bucket = resource_given_to_jobs(template, INPUT_BUCKET, "uploads")
    detail = json.loads(
        json.dumps(upload_pattern("BUCKET")).replace('"BUCKET"', json.dumps({"Ref": bucket}))
    )
    # THEN the one rule on S3's events matches objects created in that bucket under the
    # ready marker's key, and sends them to that starter, keeping what it cannot deliver
    template.resource_properties_count_is("AWS::Events::Rule", _UPLOADS, 1)
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": Match.exact(
                {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": detail}
            ),
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Fn::GetAtt": [_starter(template, "uploads"), "Arn"]},
                        "DeadLetterConfig": {
                            "Arn": {"Fn::GetAtt": [_dead_letters(template, "uploads"), "Arn"]}
                        },
                    }
                )
            ],
        },
    )


# --- the starter --------------------------------------------------------------------------------


def test_the_starter_role_is_held_to_this_pipelines_queue_definitions_and_tag(
    ingest: Synthesized,
) -> None:
    template = ingest.assertions
    # GIVEN what the policies attached to the upload pipeline's starter role allow
    role = _starter_role(ingest, "uploads")
    statements = _statements_of(template, role)
    # THEN each request it could make is decided as for a grantee of this pipeline
    check_job_permissions(
        statements, ingest.template, "uploads-ProdQueue", PIPELINE_TAG, JOB_TAG_KEYS, "Uploads"
    )
    # AND it submits to this pipeline's queue and the exact revisions deployed, not name:*
    definitions = [
        logical_id_of(
            template,
            "AWS::Batch::JobDefinition",
            {"JobDefinitionName": f"uploads-{job.definition_name}"},
        )
        for job in DEFAULT_SPEC
    ]
    queue_arn = {"Fn::GetAtt": [_queue(template, "uploads"), "JobQueueArn"]}
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": Match.array_with([{"Ref": role}]),
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "batch:SubmitJob",
                                "Resource": [queue_arn, *({"Ref": d} for d in definitions)],
                            }
                        )
                    ]
                )
            },
        },
    )
    # AND it has no data access but listing BucketA's keys (the next test), and no managed
    # policy
    actions = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert "batch:SubmitJob" in actions
    assert not any(a.startswith(("dynamodb:", "iam:")) for a in actions)
    assert {a for a in actions if a.startswith("s3:")} == {"s3:ListBucket"}
    ingest.resource(role).has_resource_properties(
        "AWS::IAM::Role", {"ManagedPolicyArns": Match.absent()}
    )


@pytest.mark.parametrize("prefix", ["uploads", "nightly"])
def test_the_starter_may_list_its_bucket_a_and_read_nothing_of_it(
    ingest: Synthesized, prefix: str
) -> None:
    """A triggered run is sized to its input, so the starter lists the run's prefix of
    BucketA: ListBucket on that bucket (no object ARN, so no GetObject), and on no other."""
    template = ingest.assertions
    # GIVEN the S3 statements of the pipeline's starter role
    statements = _statements_of(template, _starter_role(ingest, prefix))
    s3 = [s for s in statements if str(s["Action"]).startswith("s3:")]
    # THEN there is one: ListBucket, allowed, on the pipeline's own BucketA
    bucket = resource_given_to_jobs(template, INPUT_BUCKET, prefix)
    assert s3 == [
        {
            "Action": "s3:ListBucket",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [bucket, "Arn"]},
        }
    ]


def test_the_starter_uses_the_topics_key_through_sns_only(ingest: Synthesized) -> None:
    template = ingest.assertions
    # GIVEN what the policies attached to the nightly starter's role allow with KMS keys
    statements = _statements_of(template, _starter_role(ingest, "nightly"))
    key_uses = [s for s in statements if str(s["Action"]).count("kms:")]
    # THEN it may decrypt and generate data keys (to publish to the encrypted topic, itself
    # and as its failure destination) through SNS in this region, and nothing else
    assert key_uses, statements
    sns_here = {"Fn::Join": ["", ["sns.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}
    for statement in key_uses:
        assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert statement["Condition"] == {"StringEquals": {"kms:ViaService": sns_here}}


def test_the_starter_is_told_its_pipeline_and_is_not_retried(ingest: Synthesized) -> None:
    template = ingest.assertions
    # GIVEN the nightly pipeline's starter, notification topic and the key of that topic
    starter = _starter(template, "nightly")
    topic = resource_given_to_jobs(template, NOTIFICATION_TOPIC_ARN, "nightly")
    key = Capture()
    ingest.resource(topic).has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}}
    )
    # THEN the starter is told the pipeline's overlap rule and cost cap, not an input prefix,
    # and its environment is encrypted with the pipeline's key
    ingest.resource(starter).has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Environment": {
                "Variables": {
                    ALLOW_OVERLAP: "false",
                    MAX_VCPU_HOURS: "20000",
                    INPUT_PREFIX: Match.absent(),
                }
            },
            "KmsKeyArn": {"Fn::GetAtt": [captured_id(key), "Arn"]},
        },
    )
    # AND a failed invocation is not retried: it goes to the notification topic
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "FunctionName": {"Ref": starter},
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {"OnFailure": {"Destination": {"Ref": topic}}},
        },
    )


# --- props --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "message"),
    [
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


@pytest.mark.parametrize("name", ["allow_overlapping_runs", "trigger_max_vcpu_hours"])
def test_a_starter_prop_without_a_starter_fails_validation_naming_it(name: str) -> None:
    import aws_cdk as cdk

    from pipeline import ArrayJobPipeline

    # GIVEN a pipeline with a prop that rules the starter's runs, and no trigger
    stack = cdk.Stack(cdk.App())
    value = {"allow_overlapping_runs": True, "trigger_max_vcpu_hours": 10.0}[name]
    pipeline = ArrayJobPipeline(stack, "P", **{name: value})  # type: ignore[arg-type]
    # WHEN it is validated, as synthesis does
    errors = pipeline.node.validate()
    # THEN the prop is named, with what would make it count
    assert errors == [
        f"{name} applies to runs the starter starts; add run_schedule or run_on_upload, "
        "call grant_start_runs, or remove it"
    ]
    # AND once grant_start_runs makes the starter, it counts
    pipeline.grant_start_runs(iam_role(stack))
    assert pipeline.node.validate() == []


def iam_role(stack: Any) -> Any:
    from aws_cdk import aws_iam as iam

    return iam.Role(stack, "Operator", assumed_by=iam.AccountRootPrincipal())


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
    # each starter skips the same three checks (checkov names a resource Type.LogicalId)
    starters = ingest.assertions.find_resources("AWS::Lambda::Function", {"Properties": _STARTER})
    assert len(starters) == 2
    for starter in starters:
        skipped = {
            c["check_id"]
            for c in report["results"]["skipped_checks"]
            if c["resource"] == f"AWS::Lambda::Function.{starter}"
        }
        assert skipped == {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117"}, starter


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
