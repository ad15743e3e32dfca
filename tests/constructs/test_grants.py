"""What each grant gives, decided request by request against the synthesized statements:
``grant_start_runs`` invokes the starter and nothing else, in any app (it makes the starter when
no trigger did), with the scanners still clean."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from helpers.iam_policy import BATCH, decide
from helpers.synth import Synthesized, logical_id_of, new_app, run_checkov, synthesize

pytestmark = pytest.mark.slow  # one synthesis of a consumer app, with cdk-nag registered

_STARTER = {"Handler": "pipeline.starter.handler"}
_OPERATOR = {"Description": "operators: start runs"}


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """A consumer's app with no trigger and no feature flags beyond cdk.json's, where a role
    of operators is granted grant_start_runs (synthesis raises on any unacknowledged
    AwsSolutions or NIST 800-53 rev5 finding)."""
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path_factory.mktemp("start-runs"), nist=True)
    stack = cdk.Stack(app, "Operations")
    pipeline = ArrayJobPipeline(stack, "Pipeline", array_size=10)
    operators = iam.Role(
        stack,
        "Operators",
        assumed_by=iam.AccountRootPrincipal(),
        description=_OPERATOR["Description"],
    )
    pipeline.grant_start_runs(operators)
    pipeline.grant_start_runs(operators)  # a second grant makes no second starter
    return synthesize(app, stack)


def _statements(template: Template, role: str) -> list[dict[str, Any]]:
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": role}])}}
    )
    return [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]


def test_grant_start_runs_makes_the_starter_in_an_app_without_triggers(
    consumer: Synthesized,
) -> None:
    template = consumer.assertions
    # THEN there is one starter, and nothing but the grantees invokes it: no schedule, no rule
    template.resource_properties_count_is("AWS::Lambda::Function", _STARTER, 1)
    template.resource_count_is("AWS::Scheduler::Schedule", 0)
    template.resource_properties_count_is(
        "AWS::Events::Rule", {"EventPattern": {"source": ["aws.s3"]}}, 0
    )


def test_grant_start_runs_invokes_the_starter_and_gives_no_submit_job(
    consumer: Synthesized,
) -> None:
    template = consumer.assertions
    # GIVEN the statements of every policy attached to the grantee, and the starter's ARN
    operators = logical_id_of(template, "AWS::IAM::Role", _OPERATOR)
    statements = _statements(template, operators)
    starter = logical_id_of(template, "AWS::Lambda::Function", _STARTER)
    function_arn = "arn:aws:lambda:us-east-1:123456789012:function:starter"

    def arn_of(logical_id: str) -> str:
        return function_arn if logical_id == starter else f"arn:aws:other:::{logical_id}"

    def on(action: str, resource: str) -> str:
        return decide(statements, action, resource, {}, arn_of)

    # WHEN each request the grantee could make is decided
    # THEN it may invoke the starter as deployed ...
    assert on("lambda:InvokeFunction", function_arn) == "allow"
    # ... not a version or alias of it, nor any other function, nor change it
    assert on("lambda:InvokeFunction", f"{function_arn}:1") == "implicit deny"
    assert on("lambda:InvokeFunction", f"{function_arn[:-7]}other") == "implicit deny"
    for action in ("lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration"):
        assert on(action, function_arn) == "implicit deny"
    # AND it can submit, tag, stop or register nothing in AWS Batch
    for action in ("batch:SubmitJob", "batch:TagResource", "batch:RegisterJobDefinition"):
        for resource in (f"{BATCH}:job-queue/ProdQueue", f"{BATCH}:job/any", "*"):
            assert on(action, resource) == "implicit deny", (action, resource)
    # AND the one action it has is the invocation
    actions = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {"lambda:InvokeFunction"}


def test_a_pipeline_with_grant_start_runs_is_checkov_clean(consumer: Synthesized) -> None:
    # WHEN checkov reads the consumer's template
    report = run_checkov(consumer.assembly_dir / "Operations.template.json")
    # THEN it fails nothing; the starter's skips (with their reasons) are in the template
    assert report["results"]["failed_checks"] == [], [
        (c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]
    ]
    starter = logical_id_of(consumer.assertions, "AWS::Lambda::Function", _STARTER)
    skipped = {
        c["check_id"]
        for c in report["results"]["skipped_checks"]
        if c["resource"] == f"AWS::Lambda::Function.{starter}"
    }
    assert skipped == {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117"}


def test_a_pipeline_stack_with_a_starter_names_it_in_its_outputs() -> None:
    import aws_cdk as cdk

    from pipeline.stacks import PipelineStack

    # GIVEN the repository's stack with a trigger, and one without
    triggered = PipelineStack(cdk.App(), "Triggered", pipeline={"run_on_upload": True})
    plain = PipelineStack(cdk.App(), "Plain")
    # THEN the one with a starter outputs its function's name, for `aws lambda invoke`
    assert triggered.node.try_find_child("StarterFunctionName") is not None
    assert plain.node.try_find_child("StarterFunctionName") is None


def test_the_security_pages_start_event_is_one_the_starter_starts_a_run_for() -> None:
    import json
    import re

    from helpers.paths import REPO
    from pipeline.runs.triggers import trigger_from_event
    from pipeline.trigger_events import SCHEDULE

    # GIVEN the payload the security page tells a grantee of grant_start_runs to send
    page = " ".join((REPO / "docs" / "security.md").read_text().split())
    payload = re.search(r"--payload '(\{.*?\})'", page)
    assert payload is not None
    # WHEN the starter reads it
    trigger = trigger_from_event(json.loads(payload.group(1)), input_bucket="bucket-a")
    # THEN it is a start of the whole pipeline, named by the event
    assert (trigger.kind, trigger.input_prefix) == (SCHEDULE, None)
    assert trigger.run_id.startswith("20261201T100000-")
