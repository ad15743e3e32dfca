"""Template compliance: cdk-nag AwsSolutions and NIST 800-53 rev5, cfn-lint, AWS's offline
template validator, and the real pinned CDK CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match, Template

from helpers.paths import REPO
from helpers.synth import Synthesized, captured_id, new_app, resource_given_to_jobs
from pipeline.contract import INPUT_BUCKET
from pipeline.spec import DEFAULT_SPEC

pytestmark = pytest.mark.slow
EXAMPLE = REPO / "examples" / "access_logs"


def test_default_stack_has_no_unacknowledged_aws_solutions_findings(
    default_stack: Synthesized,
) -> None:
    # The session fixture synthesized with AwsSolutionsChecks registered (as app.py does): an
    # unacknowledged finding raises ValidationFailed there. The report lists only failures.
    report = json.loads((default_stack.assembly_dir / "validation-report.json").read_text())
    failing = [p for p in report["pluginReports"] if p["summary"]["status"] != "success"]
    assert failing == []


def _acknowledgements(default_stack: Synthesized) -> dict[str, str]:
    metadata = json.loads(
        (default_stack.assembly_dir / "ArrayJobPipeline.metadata.json").read_text()
    )
    found: dict[str, str] = {}
    for path, entries in metadata.items():
        for entry in entries:
            if entry["type"] == "aws:cdk:acknowledged-rules":
                found.update({f"{path} {rule}": reason for rule, reason in entry["data"].items()})
    return found


def test_every_acknowledgement_is_specific_and_has_a_reason(default_stack: Synthesized) -> None:
    acknowledged = _acknowledgements(default_stack)
    nag = {k: v for k, v in acknowledged.items() if "AwsSolutions" in k}
    # IAM4 (ECS instance role), S1 (the access-log bucket), IAM5 on the execution role and
    # on each job role's object patterns, SQS3 on the dead-letter queue; nothing stack-wide.
    assert {k.split(" ")[1].split("[")[0] for k in nag} == {
        "Annotation::AwsSolutions-IAM4",
        "Annotation::AwsSolutions-S1",
        "Annotation::AwsSolutions-IAM5",
        "Annotation::AwsSolutions-SQS3",
    }
    assert not any(k.startswith("/ArrayJobPipeline Annotation::AwsSolutions") for k in nag)
    for rule, reason in nag.items():
        assert len(reason) > 60, rule
        if "IAM5[Resource::<" in rule:
            assert rule.endswith("/runs/*]") or "BucketA" in rule, rule


def test_aws_solutions_checks_catch_an_unacknowledged_finding(tmp_path: Path) -> None:
    # GIVEN the same plugin registration as app.py, and a bucket without TLS enforcement
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3

    app = new_app(tmp_path)
    stack = cdk.Stack(app, "Leaky")
    s3.Bucket(stack, "Plain")
    # THEN synthesis fails: the check is live, not a formality
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()


def _cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    return subprocess.run(
        [str(cfn_lint), "--format", "parseable", str(template)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cfn_lint_reports_no_errors_or_warnings(default_stack: Synthesized) -> None:
    result = _cfn_lint(default_stack.assembly_dir / "ArrayJobPipeline.template.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("which", ["default_stack", "no_flags_stack"])
def test_awss_offline_validator_finds_no_error_or_warning(
    request: pytest.FixtureRequest, which: str
) -> None:
    # AWS's own offline validator (resource schemas, semantic and security rules); its
    # informational findings (CDK's Fn::Join where Fn::Sub would read better) are not defects.
    from cloudformation_validate import CompositeEngine

    stack: Synthesized = request.getfixturevalue(which)
    report = CompositeEngine().validate_template(json.dumps(stack.template).encode())
    findings = [
        (d.severity.name, d.rule_id, d.message)
        for d in report.diagnostics
        if d.severity.name not in ("INFO", "INFORMATIONAL")
    ]
    assert findings == []
    assert report.diagnostics, "the validator ran no rule"


def test_the_nist_pack_is_live(tmp_path: Path) -> None:
    # GIVEN the NIST 800-53 rev5 pack registered as app.py registers it, and a role with an
    # inline policy nobody acknowledged
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    app = new_app(tmp_path, nist=True)
    stack = cdk.Stack(app, "Inline")
    role = iam.Role(stack, "Role", assumed_by=iam.AccountRootPrincipal())
    role.add_to_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=["arn:aws:s3:::b/k"])
    )
    # THEN synthesis fails on it
    with pytest.raises(RuntimeError, match=r"NIST\.800\.53\.R5-IAMNoInlinePolicy"):
        app.synth()


def test_destroy_on_delete_variant_is_also_clean(tmp_path: Path) -> None:
    # GIVEN the opt-in that deletes data with the stack (adds the bucket-emptying provider)
    import aws_cdk as cdk

    from pipeline.stacks import PipelineStack

    app = new_app(tmp_path, nist=True)
    stack = PipelineStack(app, "Disposable", pipeline={"removal_policy": cdk.RemovalPolicy.DESTROY})
    # WHEN synthesized with cdk-nag registered (raises on any unacknowledged finding)
    template = Template.from_json(app.synth().get_stack_by_name("Disposable").template)
    # THEN BucketA, with the user's inputs, is the one store kept ...
    bucket_a = resource_given_to_jobs(template, INPUT_BUCKET)
    kept = template.find_resources("AWS::S3::Bucket", {"DeletionPolicy": "Retain"})
    assert set(kept) == {bucket_a}
    # ... the pipeline's own are deleted with the stack, the other four buckets emptied first
    deleted = template.find_resources("AWS::S3::Bucket", {"DeletionPolicy": "Delete"})
    assert len(deleted) == 4
    template.resource_count_is("AWS::S3::Bucket", 5)
    template.resource_count_is("Custom::S3AutoDeleteObjects", len(deleted))
    for bucket in deleted:
        template.has_resource_properties(
            "Custom::S3AutoDeleteObjects", {"BucketName": {"Ref": bucket}}
        )
    template.all_resources("AWS::DynamoDB::Table", {"DeletionPolicy": "Delete"})
    template.all_resources("AWS::Logs::LogGroup", {"DeletionPolicy": "Delete"})
    # AND cfn-lint is clean
    result = _cfn_lint(tmp_path / "Disposable.template.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stack.pipeline.name_prefix == ""


def test_pinned_cdk_cli_synthesizes_the_app(tmp_path: Path) -> None:
    # `npx cdk synth` as a user runs it: the CLI from package.json, the app from cdk.json,
    # no AWS credentials.
    cdk_cli = REPO / "node_modules" / ".bin" / "cdk"
    assert cdk_cli.exists(), "run `npm ci` (scripts/dev setup does) to install the pinned CLI"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k != "CDK_DEFAULT_ACCOUNT"
    }
    env.update(
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    result = subprocess.run(
        [str(cdk_cli), "synth", "--quiet", "--output", str(tmp_path / "cdk.out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads((tmp_path / "cdk.out" / "ArrayJobPipeline.template.json").read_text())
    Template.from_json(template).has_resource_properties(
        "AWS::Batch::JobDefinition", {"JobDefinitionName": "JobA-list-and-validate"}
    )


def _job_role_policies(template: Template, job_key: str) -> list[Any]:
    """The documents of the policies attached to the role of the job whose logs stream under
    its key (whatever prefix its definition's name has)."""
    role = Capture()
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "ContainerProperties": {
                "LogConfiguration": {"Options": {"awslogs-stream-prefix": job_key}},
                "JobRoleArn": {"Fn::GetAtt": [role, "Arn"]},
            }
        },
    )
    policies = template.find_resources(
        "AWS::IAM::Policy",
        {"Properties": {"Roles": Match.array_with([{"Ref": captured_id(role)}])}},
    )
    assert policies, job_key
    return [policy["Properties"]["PolicyDocument"] for policy in policies.values()]


def test_a_pipeline_of_your_steps_is_as_clean(default_stack: Synthesized, tmp_path: Path) -> None:
    # GIVEN the example project's app: its own steps, in an image with its code
    import importlib.util

    from helpers.synth import run_checkov

    spec = importlib.util.spec_from_file_location("example_app", EXAMPLE / "app.py")
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    app = new_app(tmp_path)  # cdk-nag registered: an unacknowledged finding fails synthesis
    stack = example.build(app)
    # WHEN synthesized, THEN cfn-lint and checkov find nothing unexplained, as for the default
    assembly = app.synth()
    template = Path(assembly.directory) / f"{stack.stack_name}.template.json"
    linted = _cfn_lint(template)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    report = run_checkov(template)
    assert report["results"]["failed_checks"] == [], [
        (c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]
    ]
    # AND the job roles are the same as the default pipeline's: a step gets no access of its own
    # (both pipelines are the construct "Pipeline" of their stacks: the same logical IDs)
    steps = Template.from_json(assembly.get_stack_by_name(stack.stack_name).template)
    for job in DEFAULT_SPEC:
        assert _job_role_policies(steps, job.key) == _job_role_policies(
            default_stack.assertions, job.key
        ), job.key
