"""pipeline/runs/discovery.py: the deployed pipeline a run submits to, from a stack's published
document or from the registered job definitions. Batch and CloudFormation here are small
stand-ins with boto3's method names and shapes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from pipeline import contract
from pipeline.document import DOCUMENT_OUTPUT, PipelineDocument
from pipeline.errors import SpecError, TargetError
from pipeline.runs.discovery import document_from_job_definitions, document_from_stack
from pipeline.spec import DEFAULT_SPEC, prefixed
from pipeline.steps import DEFAULT_STEPS


def _definition(key: str, revision: int, prefix: str = "", **container: Any) -> dict[str, Any]:
    """A registered definition of ``key`` as the stack registers it, with the steps."""
    job = DEFAULT_SPEC.job(key)
    name = prefixed(prefix, job.definition_name)
    variables = {
        contract.ARRAY_SIZE: "4",
        contract.INPUT_BUCKET: "bucket-a",
        contract.OUTPUT_BUCKET: "bucket-out",
        **(DEFAULT_STEPS.environment(job.step) if job.step else {}),
    }
    return {
        "jobDefinitionName": name,
        "jobDefinitionArn": f"arn:def/{name}:{revision}",
        "revision": revision,
        "containerProperties": {
            "image": f"image-{key}",
            "environment": [{"name": k, "value": v} for k, v in variables.items()],
            "logConfiguration": {"options": {"awslogs-group": "/pipeline/jobs"}},
            **container,
        },
    }


class Definitions:
    """DescribeJobDefinitions by name (one revision a page) or by ARN."""

    def __init__(self, definitions: list[dict[str, Any]]) -> None:
        self.definitions = definitions

    def describe_job_definitions(self, **request: Any) -> dict[str, Any]:
        if "jobDefinitions" in request:
            found = [
                d for d in self.definitions if d["jobDefinitionArn"] in request["jobDefinitions"]
            ]
            return {"jobDefinitions": found}
        assert request["status"] == "ACTIVE"
        named = [
            d for d in self.definitions if d["jobDefinitionName"] == request["jobDefinitionName"]
        ]
        start = int(request.get("nextToken", 0))
        page: dict[str, Any] = {"jobDefinitions": named[start : start + 1]}
        if start + 1 < len(named):
            page["nextToken"] = str(start + 1)
        return page


def _all(prefix: str = "", **overrides: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for job in DEFAULT_SPEC:
        found += [
            _definition(job.key, 1, prefix),
            _definition(job.key, 2, prefix, **overrides.get(job.key, {})),
        ]
    return found


def test_the_newest_revision_of_each_definition_decides() -> None:
    # GIVEN two revisions of each definition, the newest giving JobB 16 vCPUs and 8 GiB, a
    # timeout and attempts
    batch = Definitions(
        _all(
            "dev",
            JobB={
                "resourceRequirements": [
                    {"type": "VCPU", "value": "16"},
                    {"type": "MEMORY", "value": "8192"},
                ]
            },
        )
    )
    batch.definitions[2]["timeout"] = {"attemptDurationSeconds": 900}
    batch.definitions[3]["timeout"] = {"attemptDurationSeconds": 1800}
    batch.definitions[3]["retryStrategy"] = {"attempts": 5}
    # WHEN the pipeline is read from them
    document = document_from_job_definitions(batch, prefix="dev")  # type: ignore[arg-type]
    # THEN each job runs the newest revision, with what it registered
    assert document.job_definitions["JobB"] == "arn:def/dev-JobB-CPU-Intensive-Processing:2"
    assert document.definition_names["JobA"] == "dev-JobA-list-and-validate"
    job_b = document.spec.job("JobB")
    assert (job_b.vcpus, job_b.memory_mib, job_b.timeout_seconds, job_b.retry_attempts) == (
        16,
        8192,
        1800,
        5,
    )
    assert document.spec.job("JobA") == DEFAULT_SPEC.with_array_size(4).job("JobA")
    # AND the run's size, resources, log group, images and steps come from their variables
    assert document.spec.array_size == 4
    assert document.resources == {"input_bucket": "bucket-a", "output_bucket": "bucket-out"}
    assert document.log_group == "/pipeline/jobs"
    assert document.images["JobC"] == "image-JobC"
    assert document.spec.steps == DEFAULT_STEPS
    assert (document.queue, document.queue_name) == ("dev-ProdQueue", "dev-ProdQueue")
    assert document.source == "the registered job definitions"


def test_the_deprecated_vcpus_and_memory_are_read_when_no_requirements_say() -> None:
    batch = Definitions(_all(JobC={"vcpus": 2, "memory": 3000}))
    job_c = document_from_job_definitions(batch).spec.job("JobC")  # type: ignore[arg-type]
    assert (job_c.vcpus, job_c.memory_mib) == (2, 3000)


def test_a_queue_given_by_arn_is_tagged_by_its_name() -> None:
    queue = "arn:aws:batch:us-east-1:111122223333:job-queue/team-ProdQueue"
    document = document_from_job_definitions(Definitions(_all()), queue=queue)  # type: ignore[arg-type]
    assert (document.queue, document.queue_name) == (queue, "team-ProdQueue")


def test_a_missing_definition_names_itself_and_what_to_check() -> None:
    batch = Definitions([d for d in _all() if "JobD" not in d["jobDefinitionName"]])
    with pytest.raises(TargetError, match="no ACTIVE job definition 'JobD-Sequential-Validation'"):
        document_from_job_definitions(batch)  # type: ignore[arg-type]


def test_definitions_deployed_without_steps_say_to_redeploy() -> None:
    bare = _all()
    for definition in bare:
        definition["containerProperties"]["environment"] = []
    with pytest.raises(SpecError, match="set no PIPELINE_STEP"):
        document_from_job_definitions(Definitions(bare))  # type: ignore[arg-type]


def test_exactly_the_revisions_named_are_read() -> None:
    batch = Definitions(_all())
    arns = {job.key: f"arn:def/{job.definition_name}:1" for job in DEFAULT_SPEC}
    document = document_from_job_definitions(batch, arns=arns)  # type: ignore[arg-type]
    assert document.job_definitions == arns
    with pytest.raises(TargetError, match="no job definition ARN for JobD, JobE"):
        document_from_job_definitions(batch, arns={k: v for k, v in arns.items() if k < "JobD"})  # type: ignore[arg-type]
    gone = {**arns, "JobC": "arn:def/JobC:9"}
    with pytest.raises(TargetError, match="job definition arn:def/JobC:9 does not exist"):
        document_from_job_definitions(batch, arns=gone)  # type: ignore[arg-type]


# --- a stack's document ---------------------------------------------------------------------


class Stacks:
    def __init__(self, outputs: dict[str, str] | None) -> None:
        self.outputs = outputs
        self.meta = SimpleNamespace(region_name="eu-west-1")

    def describe_stacks(self, *, StackName: str) -> dict[str, Any]:  # noqa: N803
        if self.outputs is None:
            raise ClientError(
                {
                    "Error": {
                        "Code": "ValidationError",
                        "Message": f"Stack with id {StackName} does not exist",
                    }
                },
                "DescribeStacks",
            )
        return {
            "Stacks": [
                {"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}
            ]
        }


def test_a_stacks_published_document_is_the_pipeline() -> None:
    published = PipelineDocument.by_name(prefix="dev")
    stacks = Stacks({DOCUMENT_OUTPUT: json.dumps(published.as_json()), "Other": "x"})
    document = document_from_stack(stacks, "Dev")  # type: ignore[arg-type]
    assert document.source == "stack 'Dev'"
    assert document.job_definitions == published.job_definitions
    assert document.queue == "dev-ProdQueue"


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (None, "stack 'Dev' does not exist in eu-west-1; deploy it"),
        ({}, "stack 'Dev' has no PipelineDocument output: it is not a PipelineStack"),
        ({DOCUMENT_OUTPUT: "{not json"}, "stack 'Dev''s PipelineDocument output is not JSON"),
        ({DOCUMENT_OUTPUT: json.dumps({"version": 0})}, "does not hold an array-job-pipeline"),
    ],
)
def test_a_stack_that_cannot_be_used_says_what_to_do(
    outputs: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(TargetError, match=message):
        document_from_stack(Stacks(outputs), "Dev")  # type: ignore[arg-type]


def test_another_cloudformation_error_is_raised_as_it_is() -> None:
    class Throttled(Stacks):
        def describe_stacks(self, *, StackName: str) -> dict[str, Any]:  # noqa: N803
            raise ClientError(
                {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "DescribeStacks"
            )

    with pytest.raises(ClientError, match="Rate exceeded"):
        document_from_stack(Throttled(None), "Dev")  # type: ignore[arg-type]
