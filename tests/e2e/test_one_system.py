"""One system: what a stack deploys is what every run submits, costs and pre-flights, and the
two backends answer the same commands with the same shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.batch import (
    EngineBatch,
    cli_in_process,
    container_as_the_stack_registers,
    engine_batch,
    stack_document,
    stack_template,
)
from helpers.synth import Synthesized, new_app, resolve, synthesize
from pipeline.document import DOCUMENT_OUTPUT, VERSION, PipelineDocument
from pipeline.spec import DEFAULT_SPEC

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def overridden_stack(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The README's example: JobB deployed with 16 vCPUs and 8192 MiB."""
    from pipeline import JobOverride
    from pipeline.stacks import PipelineStack

    app = new_app(tmp_path_factory.mktemp("overridden"))
    stack = PipelineStack(
        app,
        "Overridden",
        pipeline={"job_overrides": {"JobB": JobOverride(vcpus=16, memory_mib=8192)}},
    )
    return synthesize(app, stack)


@pytest.fixture
def deployed(overridden_stack: Synthesized) -> Iterator[EngineBatch]:
    """moto's CloudFormation holding the synthesized outputs, references resolved to moto's
    queue and job definitions (moto cannot create the Batch resources themselves)."""
    with engine_batch() as aws:

        def name(logical_id: str, attribute: str | None) -> str:
            if "Queue" in logical_id:
                return aws.queue_arn
            for key, arn in aws.definition_arns.items():
                if logical_id.startswith(f"PipelineJobs{key}") and "Role" not in logical_id:
                    return arn
            return f"pipeline-{logical_id.lower()}"[:63]

        outputs = {
            key: resolve(output["Value"], name)
            for key, output in overridden_stack.template["Outputs"].items()
        }
        aws.cloudformation.create_stack(
            StackName="Overridden",
            TemplateBody=json.dumps(
                {
                    "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in outputs.items()},
                }
            ),
        )
        yield aws


def _requirements(request: dict[str, Any]) -> dict[str, str]:
    return {r["type"]: r["value"] for r in request["containerOverrides"]["resourceRequirements"]}


def test_dry_run_prints_what_the_stack_deployed(deployed: EngineBatch) -> None:
    code, out, err = cli_in_process(
        deployed, "--stack", "Overridden", "--dry-run", "--json", "--array-size", "4"
    )
    assert code == 0, err
    requests = {r["jobName"]: r for r in json.loads(out)}
    assert _requirements(requests["JobB"]) == {"VCPU": "16", "MEMORY": "8192"}
    assert _requirements(requests["JobC"]) == {"VCPU": "1", "MEMORY": "32768"}
    assert requests["JobB"]["jobDefinition"] == deployed.definition_arns["JobB"]
    # and the worst case printed is the deployed one: 4 x 16 vCPU x 2 h x 3 attempts
    assert "JobB: 4 x 16 vCPU / 8 GiB x 2 h x 3 = 384.0 vCPU-hours" in err


def test_the_cost_guard_judges_the_deployed_resources(deployed: EngineBatch) -> None:
    # JobB at 16 vCPUs: 2 x 16 x 2 h x 3 = 192 vCPU-hours; at the default 32 it would be 384.
    # The rest of the run adds 2 x 1 x 2 x 3 (JobC) + 1 x 3 (JobA) + 10 x 0.5 x 3 (JobD)
    # + 0.25 x 3 (JobE) = 30.75, so 250 passes the deployed pipeline and refuses the default.
    limit = ("--max-vcpu-hours", "250", "--array-size", "2", "--dry-run")
    code, _, err = cli_in_process(deployed, "--stack", "Overridden", *limit)
    assert code == 0, err
    deployed.cloudformation.create_stack(
        StackName="Default",
        TemplateBody=stack_template(deployed.queue_arn, deployed.definition_arns),
    )
    code, _, err = cli_in_process(deployed, "--stack", "Default", *limit)
    assert code == 252
    assert "above --max-vcpu-hours 250" in err


def test_pre_flight_judges_the_deployed_resources(deployed: EngineBatch) -> None:
    # GIVEN a queue whose only instance type has 16 vCPUs (r6i.4xlarge, 128 GiB)
    queue = deployed.managed_queue("r6i.4xlarge", "SmallQueue")
    # WHEN the overridden pipeline runs there, it passes pre-flight and is submitted
    code, out, err = cli_in_process(
        deployed, "--stack", "Overridden", "--queue", queue, "--array-size", "2", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "SUBMITTED"
    # AND the library's default JobB (32 vCPUs) is refused there before any submit
    deployed.cloudformation.create_stack(
        StackName="Default",
        TemplateBody=stack_template(deployed.queue_arn, deployed.definition_arns),
    )
    code, _, err = cli_in_process(
        deployed, "--stack", "Default", "--queue", queue, "--array-size", "2"
    )
    assert code == 252
    assert err.startswith("error: JobB needs 32 vCPU and 4,096 MiB, which no instance type")


def test_without_a_stack_the_registered_definitions_decide(deployed: EngineBatch) -> None:
    # GIVEN JobB deployed again with 8 vCPUs: a new revision, the old one deregistered (as
    # CloudFormation replaces a job definition)
    job_b = DEFAULT_SPEC.job("JobB")
    deployed.batch.register_job_definition(
        jobDefinitionName=job_b.definition_name,
        type="container",
        containerProperties=container_as_the_stack_registers(
            job_b,
            resourceRequirements=[
                {"type": "VCPU", "value": "8"},
                {"type": "MEMORY", "value": "2048"},
            ],
        ),
    )
    deployed.batch.deregister_job_definition(jobDefinition=deployed.definition_arns["JobB"])
    sent: list[dict[str, Any]] = []
    deployed.batch.meta.events.register(
        "before-parameter-build.batch.SubmitJob", lambda params, **_: sent.append(dict(params))
    )
    # WHEN a run names the queue and the definitions, not a stack
    code, _, err = cli_in_process(deployed, "--queue", "ProdQueue", "--array-size", "2")
    # THEN JobB is submitted with what is registered
    assert code == 0, err
    job_b_request = next(r for r in sent if r["jobName"] == "JobB")
    assert _requirements(job_b_request) == {"VCPU": "8", "MEMORY": "2048"}


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            VERSION + 1,
            f"was deployed by a newer array-job-pipeline (document version {VERSION + 1}; "
            f"this one reads {VERSION}); upgrade it: pip install -U array-job-pipeline",
        ),
        (
            0,
            "was deployed by an older array-job-pipeline (document version 0; this one "
            f"reads {VERSION}); redeploy it with this version (npx cdk deploy)",
        ),
    ],
)
def test_a_document_of_another_version_is_one_line_saying_what_to_do(
    version: int, message: str
) -> None:
    with engine_batch() as aws:
        document = stack_document(aws.queue_arn, aws.definition_arns).as_json()
        document["version"] = version
        aws.cloudformation.create_stack(
            StackName="Other",
            TemplateBody=stack_template(aws.queue_arn, aws.definition_arns, document=document),
        )
        code, _, err = cli_in_process(aws, "--stack", "Other", "--dry-run")
    assert code == 254
    assert err == f"error: stack 'Other' {message}\n"


def test_a_document_reads_back_equal() -> None:
    document = stack_document("arn:queue", {j.key: f"arn:{j.key}" for j in DEFAULT_SPEC})
    again = PipelineDocument.from_json(json.loads(json.dumps(document.as_json())), source="s")
    assert again.as_json() == document.as_json()
    assert DOCUMENT_OUTPUT == "PipelineDocument"


def test_the_local_services_register_what_their_document_deploys() -> None:
    from pipeline.local.batch.definitions import JobDefinition
    from pipeline.local.deployment import job_definition_request, local_document

    document = local_document()
    for job in document.spec:
        registered = JobDefinition(
            job.definition_name, 1, "arn", job_definition_request(job, document)
        )
        assert (registered.vcpus, registered.memory_mib) == (job.vcpus, job.memory_mib)
        assert registered.timeout_seconds == job.timeout_seconds
        assert registered.attempts == job.retry_attempts
        assert registered.command == list(job.command)
        assert registered.parameters == document.parameter_defaults(job.key)


def test_an_overridden_command_is_in_the_spec_and_the_document() -> None:
    spec = DEFAULT_SPEC.with_overrides({"JobA": {"command": ["python", "-m", "mine"]}})
    assert spec.job("JobA").command == ("python", "-m", "mine")
    document = stack_document("arn:queue", {j.key: f"arn:{j.key}" for j in spec}, spec)
    published = json.loads(json.dumps(document.as_json()))
    assert published["jobs"]["JobA"]["command"] == ["python", "-m", "mine"]
    assert "command" not in published["jobs"]["JobB"]  # the library's own job program
    again = PipelineDocument.from_json(published, source="s")
    assert again.spec.job("JobA").command == ("python", "-m", "mine")
