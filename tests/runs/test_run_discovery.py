"""pipeline/runs/discovery.py: the deployed pipeline a run submits to, from a stack's published
document or from the registered job definitions. The job definitions are registered on the
engine's Batch (a bare :class:`~pipeline.local.batch.models.LocalBatch` behind a boto3 client,
:func:`helpers.batch.batch_clients`), which numbers their revisions and pages
DescribeJobDefinitions; pages of one definition are forced through a botocore hook, so that
every page must be read. CloudFormation here is a small stand-in with boto3's method names and
shapes (it is not Batch)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.batch import ACCOUNT, REGION, batch_clients
from pipeline import contract
from pipeline.document import DOCUMENT_OUTPUT, PipelineDocument
from pipeline.errors import SpecError, TargetError
from pipeline.local.batch.definitions import Place
from pipeline.local.batch.models import LocalBatch
from pipeline.runs.discovery import document_from_job_definitions, document_from_stack
from pipeline.spec import DEFAULT_SPEC, prefixed
from pipeline.steps import DEFAULT_STEPS


@pytest.fixture
def batch() -> Any:
    """A Batch client of an engine of its own, whose DescribeJobDefinitions pages of a name's
    revisions hold one revision each (by ARN, the five fit one page of the default 100)."""
    (client,) = batch_clients(LocalBatch(Place(ACCOUNT, REGION)))

    def one_a_page(params: dict[str, Any], **_: Any) -> None:
        if "jobDefinitionName" in params:
            params.setdefault("maxResults", 1)

    client.meta.events.register("before-parameter-build.batch.DescribeJobDefinitions", one_a_page)
    return client


def _register(batch: Any, key: str, prefix: str = "", steps: bool = True, **fields: Any) -> str:
    """RegisterJobDefinition of ``key``'s definition as the stack registers it (the run's size,
    resource names and, with ``steps``, the steps in its environment), ``fields`` merged in
    (``containerProperties`` into the container); its ARN."""
    job = DEFAULT_SPEC.job(key)
    variables = {
        contract.ARRAY_SIZE: "4",
        contract.INPUT_BUCKET: "bucket-a",
        contract.OUTPUT_BUCKET: "bucket-out",
        **(DEFAULT_STEPS.environment(job.step) if job.step and steps else {}),
    }
    container = {
        "image": f"image-{key}",
        "environment": [{"name": k, "value": v} for k, v in variables.items()] if steps else [],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {"awslogs-group": "/pipeline/jobs"},
        },
        **fields.pop("containerProperties", {}),
    }
    return str(
        batch.register_job_definition(
            jobDefinitionName=prefixed(prefix, job.definition_name),
            type="container",
            containerProperties=container,
            **fields,
        )["jobDefinitionArn"]
    )


def _register_all(
    batch: Any,
    prefix: str = "",
    *,
    newest: Mapping[str, Mapping[str, Any]] | None = None,
    skip: str | None = None,
    steps: bool = True,
) -> dict[str, list[str]]:
    """Two revisions of each job's definition (but ``skip``'s), the newest with ``newest[key]``
    merged in; key -> ARNs, oldest first."""
    arns: dict[str, list[str]] = {}
    for job in DEFAULT_SPEC:
        if job.key != skip:
            arns[job.key] = [
                _register(batch, job.key, prefix, steps),
                _register(batch, job.key, prefix, steps, **dict((newest or {}).get(job.key, {}))),
            ]
    return arns


def test_the_newest_revision_of_each_definition_decides(batch: Any) -> None:
    # GIVEN two revisions of each definition, the newest giving JobB 16 vCPUs and 8 GiB, a
    # timeout and attempts (the older one had another timeout)
    arns = _register_all(
        batch,
        "dev",
        newest={
            "JobB": {
                "containerProperties": {
                    "resourceRequirements": [
                        {"type": "VCPU", "value": "16"},
                        {"type": "MEMORY", "value": "8192"},
                    ]
                },
                "timeout": {"attemptDurationSeconds": 1800},
                "retryStrategy": {"attempts": 5},
            }
        },
    )
    # (a third revision of JobA, deregistered: only ACTIVE revisions count)
    batch.deregister_job_definition(
        jobDefinition=_register(batch, "JobA", "dev", timeout={"attemptDurationSeconds": 900})
    )
    # WHEN the pipeline is read from them
    document = document_from_job_definitions(batch, prefix="dev")
    # THEN each job runs the newest revision, with what it registered
    assert document.job_definitions == {key: revisions[1] for key, revisions in arns.items()}
    assert document.job_definitions["JobB"].endswith(
        ":job-definition/dev-JobB-CPU-Intensive-Processing:2"
    )
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


def test_the_deprecated_vcpus_and_memory_are_read_when_no_requirements_say(batch: Any) -> None:
    _register_all(batch, newest={"JobC": {"containerProperties": {"vcpus": 2, "memory": 3000}}})
    job_c = document_from_job_definitions(batch).spec.job("JobC")
    assert (job_c.vcpus, job_c.memory_mib) == (2, 3000)


def test_a_queue_given_by_arn_is_tagged_by_its_name(batch: Any) -> None:
    _register_all(batch)
    queue = "arn:aws:batch:us-east-1:111122223333:job-queue/team-ProdQueue"
    document = document_from_job_definitions(batch, queue=queue)
    assert (document.queue, document.queue_name) == (queue, "team-ProdQueue")


def test_a_missing_definition_names_itself_and_what_to_check(batch: Any) -> None:
    _register_all(batch, skip="JobD")
    with pytest.raises(TargetError, match="no ACTIVE job definition 'JobD-Sequential-Validation'"):
        document_from_job_definitions(batch)


def test_definitions_deployed_without_steps_say_to_redeploy(batch: Any) -> None:
    _register_all(batch, steps=False)
    with pytest.raises(SpecError, match="set no PIPELINE_STEP"):
        document_from_job_definitions(batch)


def test_exactly_the_revisions_named_are_read(batch: Any) -> None:
    registered = _register_all(batch)
    arns = {key: revisions[0] for key, revisions in registered.items()}
    document = document_from_job_definitions(batch, arns=arns)
    assert document.job_definitions == arns
    with pytest.raises(TargetError, match="no job definition ARN for JobD, JobE"):
        document_from_job_definitions(batch, arns={k: v for k, v in arns.items() if k < "JobD"})
    gone = {**arns, "JobC": arns["JobC"].rsplit(":", 1)[0] + ":9"}
    with pytest.raises(TargetError, match=f"job definition {gone['JobC']} does not exist"):
        document_from_job_definitions(batch, arns=gone)


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
