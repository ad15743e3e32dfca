"""Every prop a user can get wrong fails with one line that names the prop and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from helpers.paths import CDK_CONTEXT, REPO
from pipeline import (
    DEFAULT_STEPS,
    ArrayJobPipeline,
    JobOverride,
    PipelineConfigError,
    PipelineSteps,
    Step,
)

_MEMORY = DEFAULT_STEPS.memory


def _build(**props: Any) -> None:
    app = cdk.App(context=CDK_CONTEXT)
    stack = cdk.Stack(app, "Validation")
    if props.pop("_with_bucket", False):
        props["existing_input_bucket"] = s3.Bucket.from_bucket_name(stack, "In", "team-inputs")
    ArrayJobPipeline(stack, "Pipeline", **props)


BAD_PROPS = [
    ({"array_size": 0}, r"^array_size must be from 2 to 10,000; got 0$"),
    ({"array_size": 1}, r"^array_size must be from 2 to 10,000; got 1 \(use a standard job"),
    ({"array_size": 10_001}, r"^array_size must be from 2 to 10,000; got 10,001$"),
    ({"array_size": "100"}, r"^array_size must be a whole number from 2 to 10,000; got '100'$"),
    ({"name_prefix": "team a"}, r"^name_prefix 'team a' must be 1-40 letters"),
    ({"name_prefix": "x" * 41}, r"^name_prefix 'x{41}' must be 1-40"),
    ({"notification_email": "ops@"}, r"^notification_email 'ops@' is not an email address"),
    ({"notification_email": "a b@example.com"}, r"^notification_email 'a b@example.com'"),
    ({"max_vcpus": 16}, r"^max_vcpus=16 is below JobB's 32 vCPUs.*at least 32$"),
    (
        {"job_overrides": {"JobC": JobOverride(memory_mib=300_000)}},
        r"^steps/job_overrides/instance types: JobC needs 1 vCPU and 300,000 MiB, which no",
    ),
    (
        # 60,000 MiB is less than c6i.8xlarge's 64 GiB, but not less than what ECS leaves free.
        {
            "memory_instance_types": ["r6i.xlarge"],
            "cpu_instance_types": ["c6i.8xlarge"],
            "job_overrides": {"JobC": JobOverride(memory_mib=60_000)},
        },
        r"JobC needs 1 vCPU and 60,000 MiB, which no instance type of the queue fits",
    ),
    ({"cpu_instance_types": ["c9z.huge"]}, r"^cpu_instance_types/memory_instance_types: .*'c9z"),
    ({"job_overrides": {"JobZ": JobOverride(vcpus=1)}}, r"^job_overrides: unknown job 'JobZ'"),
    ({"job_overrides": {"JobA": JobOverride(vcpus=0)}}, r"^job_overrides: JobA vCPUs must be"),
    ({"arraysize": 10}, r"^ArrayJobPipeline has no prop 'arraysize'; did you mean 'array_size'\?$"),
    (
        {"_with_bucket": True, "input_bucket_props": {"versioned": True}},
        r"^give either existing_input_bucket or input_bucket_props, not both",
    ),
    (
        {"output_bucket_props": {"enforce_ssl": False}},
        r"^output_bucket_props: enforce_ssl=False would weaken a secure default \(True "
        r"\(TLS-only access\)\); remove it$",
    ),
    (
        {"output_bucket_props": {"minimum_tls_version": None}},
        r"^output_bucket_props: minimum_tls_version=None would weaken a secure default \(1\.2",
    ),
    (
        {"input_bucket_props": {"server_access_logs_bucket": None}},
        r"^input_bucket_props: server_access_logs_bucket=None would weaken a secure default",
    ),
    (
        {"topic_props": {"enforce_ssl": False}},
        r"^topic_props: enforce_ssl=False would weaken a secure default",
    ),
    (
        {
            "cpu_results_bucket_props": {
                "block_public_access": s3.BlockPublicAccess(
                    block_public_acls=True,
                    block_public_policy=False,
                    ignore_public_acls=True,
                    restrict_public_buckets=True,
                )
            }
        },
        r"^cpu_results_bucket_props: block_public_access=a BlockPublicAccess that does not "
        r"block all public access would weaken",
    ),
    ({"max_vcpus": -5}, r"^max_vcpus must be a whole number of at least 1; got -5$"),
    (
        {"runnable_timeout": cdk.Duration.minutes(5)},
        r"^runnable_timeout must be from 10 minutes to 24 hours .* got 300 seconds$",
    ),
    ({"cpu_instance_types": []}, r"^cpu_instance_types is empty; name at least one"),
    ({"memory_instance_types": []}, r"^memory_instance_types is empty; name at least one"),
    (
        {"job_overrides": {"JobD": JobOverride(timeout=cdk.Duration.seconds(30))}},
        r"^job_overrides: JobD timeout must be at least 60 seconds",
    ),
    (
        {"job_overrides": {"JobB": JobOverride(environment={"AWS_BATCH_JOB_ID": "x"})}},
        r"^job_overrides: JobB sets AWS_BATCH_JOB_ID; AWS_BATCH_\* variables are set by",
    ),
    (
        {"job_overrides": {"JobC": JobOverride(environment={"TMPDIR": "/var/tmp"})}},
        r"^job_overrides: JobC sets TMPDIR; a job's root filesystem is read-only and its one "
        r"writable place is /tmp \(a tmpfs\), which TMPDIR names: remove it$",
    ),
    (
        {"intermediate_expiration": cdk.Duration.hours(0)},
        r"^intermediate_expiration must be at least 1 day",
    ),
    (
        {"steps": PipelineSteps(cpu=Step.python("nosuch.module:fn"), memory=_MEMORY)},
        r"^cpu step 'nosuch.module:fn' does not import: ModuleNotFoundError",
    ),
    (
        {"steps": PipelineSteps(cpu=Step.python("os.path:join"), memory=_MEMORY)},
        r"^steps: the cpu step 'os.path:join' is not in the library's image; build one with "
        r"your code, image = job_image\(scope, code=\[\.\.\.\]\), and give it to the steps "
        r"with STEPS.with_image\(image\)",
    ),
    (
        {"steps": PipelineSteps(cpu=Step.command("gzip -c {inptu}"), memory=_MEMORY)},
        r"^cpu step command 'gzip -c {inptu}' has {inptu}; only {input} and {output} are "
        r"filled in: write one of them exactly$",
    ),
    (
        {"steps": PipelineSteps(cpu=Step.command("gzip {input}", vcpus=0.3), memory=_MEMORY)},
        r"^the cpu step \(JobB\): JobB vCPUs must be 0.25, 0.5 or a positive number; got 0.3$",
    ),
    ({"steps": "mymod:STEPS"}, r"^steps must be a PipelineSteps object; got str$"),
]


@pytest.mark.parametrize(
    ("props", "message"),
    BAD_PROPS,
    ids=[",".join(sorted(p)) + f"-{i}" for i, (p, _) in enumerate(BAD_PROPS)],
)
def test_bad_prop_fails_with_one_line_naming_it(props: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineConfigError, match=message) as error:
        _build(**props)
    assert "\n" not in str(error.value)
    assert " object at 0x" not in str(error.value)


def test_a_block_public_access_equal_to_block_all_is_accepted() -> None:
    same = s3.BlockPublicAccess(
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
    )
    _build(output_bucket_props={"block_public_access": same})


@pytest.mark.slow  # a few seconds: in the full suite, not the fast loop
def test_user_bucket_props_are_merged_over_the_secure_defaults(tmp_path: Path) -> None:
    app = cdk.App(context=CDK_CONTEXT, outdir=str(tmp_path))
    stack = cdk.Stack(app, "Merged")
    ArrayJobPipeline(stack, "Pipeline", input_bucket_props={"versioned": True})
    template = app.synth().get_stack_by_name("Merged").template
    bucket_a = next(
        v["Properties"]
        for k, v in template["Resources"].items()
        if "StorageBucketA" in k and v["Type"] == "AWS::S3::Bucket"
    )
    assert bucket_a["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket_a["PublicAccessBlockConfiguration"]["BlockPublicAcls"] is True


def _run_app(tmp_path: Path, context: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({**CDK_CONTEXT, **context}),
        "CDK_OUTDIR": str(tmp_path / "out"),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    return subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"pipeline:arraySize": "1"}, "error: array_size must be from 2 to 10,000; got 1"),
        ({"pipeline:arraySize": "ten"}, "error: context pipeline:arraySize must be a whole number"),
        # each case is a fresh `python app.py` (2-4 s): the inner loop keeps two of them
        pytest.param(
            {"pipeline:notificationEmail": "nobody"},
            "error: notification_email 'nobody' is not",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            {"pipeline:spot": "maybe"},
            "error: context pipeline:spot must be true or false",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            {"pipeline:maxvCpus": "-1"},
            "error: max_vcpus must be a whole number of at least 1",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_app_reports_bad_context_in_one_line_without_traceback(
    tmp_path: Path, context: dict[str, Any], message: str
) -> None:
    result = _run_app(tmp_path, context)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
