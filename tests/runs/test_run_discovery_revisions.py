"""``--queue`` discovery, with no stack to say which revisions it registered, refuses a newest
ACTIVE revision that is not what this library registers (pipeline/runs/discovery.py,
``check_registered``), against AWS Batch as this library's engine serves it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.batch import ProcessBatch as LocalBatchHarness
from helpers.batch import engine_with_processes as local_batch
from pipeline import contract
from pipeline.errors import TargetError
from pipeline.runs.discovery import document_from_job_definitions
from pipeline.spec import DEFAULT_SPEC, JOB_USER_ID, prefixed
from pipeline.steps import DEFAULT_STEPS

ACCOUNT = "123456789012"


def _role(pipeline: str, name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/array-job-pipeline/{pipeline}/{name}"


def as_the_stack_registers(key: str, prefix: str = "", **container: Any) -> dict[str, Any]:
    """RegisterJobDefinition for ``key`` with what this library's stack sets: uid 10001, a
    read-only root, and roles on the pipeline's path; ``container`` changes fields (None
    removes one)."""
    job = DEFAULT_SPEC.job(key)
    pipeline = prefixed(prefix, "ProdQueue")
    variables = {
        contract.ARRAY_SIZE: "4",
        **(DEFAULT_STEPS.environment(job.step) if job.step else {}),
    }
    properties: dict[str, Any] = {
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-assets:abc",
        "command": list(job.command),
        "resourceRequirements": job.resource_requirements(),
        "environment": [{"name": k, "value": v} for k, v in variables.items()],
        "user": str(JOB_USER_ID),
        "readonlyRootFilesystem": True,
        "jobRoleArn": _role(pipeline, f"{key}Role"),
        "executionRoleArn": _role(pipeline, "ExecutionRole"),
    }
    for name, value in container.items():
        if value is None:
            properties.pop(name, None)
        else:
            properties[name] = value
    return {
        "jobDefinitionName": prefixed(prefix, job.definition_name),
        "type": "container",
        "containerProperties": properties,
    }


@pytest.fixture
def batch(tmp_path: Path) -> Iterator[LocalBatchHarness]:
    """The engine with the five definitions registered as a stack registers them (revision 1
    of each, the only ACTIVE one)."""
    with local_batch(tmp_path, fork=False) as harness:
        for job in DEFAULT_SPEC:
            harness.client.register_job_definition(**as_the_stack_registers(job.key))
        yield harness


def test_what_the_stack_registers_is_read(batch: LocalBatchHarness) -> None:
    # WHEN the pipeline is discovered from its registered definitions, checked
    document = document_from_job_definitions(batch.client, verify=True)
    # THEN each job is the revision the stack registered
    assert {key: arn.rsplit(":", 1)[1] for key, arn in document.job_definitions.items()} == {
        job.key: "1" for job in DEFAULT_SPEC
    }


_UNLIKE = {
    "no user": ({"user": None}, "it runs as the image's user (often root), not 10001"),
    "root": ({"user": "0"}, "it runs as user '0', not 10001"),
    "privileged": ({"privileged": True}, "it is privileged"),
    "writable root": ({"readonlyRootFilesystem": False}, "its root filesystem is writable"),
    "another job role": (
        {"jobRoleArn": f"arn:aws:iam::{ACCOUNT}:role/admin"},
        f"its job role (arn:aws:iam::{ACCOUNT}:role/admin) is not on the pipeline's path "
        "/array-job-pipeline/ProdQueue/",
    ),
    "another pipeline's role": (
        {"jobRoleArn": _role("dev-ProdQueue", "JobBRole")},
        "is not on the pipeline's path /array-job-pipeline/ProdQueue/",
    ),
    "no execution role": (
        {"executionRoleArn": None},
        "its execution role (none) is not on the pipeline's path",
    ),
}


@pytest.mark.parametrize("case", sorted(_UNLIKE))
def test_a_revision_unlike_the_librarys_is_refused_naming_it(
    batch: LocalBatchHarness, case: str
) -> None:
    changes, problem = _UNLIKE[case]
    # GIVEN JobB's revision the stack registered replaced (deregistered) by one of someone
    # else's, the only ACTIVE one
    batch.client.deregister_job_definition(jobDefinition="JobB-CPU-Intensive-Processing:1")
    batch.client.register_job_definition(**as_the_stack_registers("JobB", **changes))
    # WHEN the pipeline is discovered from its definitions, checked
    with pytest.raises(TargetError) as refused:
        document_from_job_definitions(batch.client, verify=True)
    # THEN the revision is refused in one line that names it, says what is wrong and where
    # to go instead
    message = str(refused.value)
    assert message.startswith(
        "job definition arn:aws:batch:us-east-1:123456789012:job-definition/"
        "JobB-CPU-Intensive-Processing:2 is not what array-job-pipeline registers: "
    )
    assert problem in message
    assert message.endswith(
        "; pass --stack with the PipelineStack's name, which submits exactly the revisions "
        "the stack registered"
    )
    assert "\n" not in message


def test_a_second_active_revision_is_refused_whatever_its_image(batch: LocalBatchHarness) -> None:
    # GIVEN a revision of JobC registered beside the stack's, alike but for its image
    batch.client.register_job_definition(
        **as_the_stack_registers("JobC", image="someone/else:latest")
    )
    # WHEN the pipeline is discovered, checked, THEN the newer one is refused: the stack keeps
    # one ACTIVE revision of each name
    with pytest.raises(TargetError, match=r"JobC-Memory-Intensive-Processing:2 is not what") as e:
        document_from_job_definitions(batch.client, verify=True)
    assert "2 revisions are ACTIVE (also 1): the stack keeps one" in str(e.value)


def test_a_pipelines_own_path_is_the_one_its_prefix_names(tmp_path: Path) -> None:
    # GIVEN a pipeline named dev, registered as its stack registers it
    with local_batch(tmp_path, fork=False) as harness:
        for job in DEFAULT_SPEC:
            harness.client.register_job_definition(**as_the_stack_registers(job.key, "dev"))
        # WHEN it is discovered with its prefix, checked, THEN it is read ...
        document = document_from_job_definitions(harness.client, prefix="dev", verify=True)
        assert document.definition_names["JobA"] == "dev-JobA-list-and-validate"


def test_unchecked_discovery_reads_any_newest_revision(batch: LocalBatchHarness) -> None:
    # GIVEN a newer revision of JobA without a user, beside the stack's
    batch.client.register_job_definition(**as_the_stack_registers("JobA", user=None))
    # WHEN the definitions are read without the check (the local services' own deployment)
    document = document_from_job_definitions(batch.client)
    # THEN the newest is read, as before
    assert document.job_definitions["JobA"].endswith("JobA-list-and-validate:2")


@pytest.mark.slow  # the default stack's synthesis, if this worker has not made it yet
def test_what_the_synthesized_stack_registers_passes_the_check(
    default_stack: Any, tmp_path: Path
) -> None:
    # GIVEN the five definitions as the default stack registers them: their user, root
    # filesystem and privilege, and the ARNs of their roles (with the roles' IAM path)
    resources = default_stack.template["Resources"]

    def role_arn(value: dict[str, Any]) -> str:
        logical_id = value["Fn::GetAtt"][0]
        path = resources[logical_id]["Properties"].get("Path", "/")
        return f"arn:aws:iam::{ACCOUNT}:role{path}{logical_id}"

    registered = {}
    for resource in resources.values():
        if resource["Type"] != "AWS::Batch::JobDefinition":
            continue
        container = resource["Properties"]["ContainerProperties"]
        key = next(
            j.key
            for j in DEFAULT_SPEC
            if j.definition_name == resource["Properties"]["JobDefinitionName"]
        )
        registered[key] = as_the_stack_registers(
            key,
            user=container.get("User"),
            privileged=container.get("Privileged"),
            readonlyRootFilesystem=container.get("ReadonlyRootFilesystem"),
            jobRoleArn=role_arn(container["JobRoleArn"]),
            executionRoleArn=role_arn(container["ExecutionRoleArn"]),
        )
    assert set(registered) == {j.key for j in DEFAULT_SPEC}
    with local_batch(tmp_path, fork=False) as harness:
        for request in registered.values():
            harness.client.register_job_definition(**request)
        # WHEN the pipeline is discovered from them, checked, THEN nothing is refused
        document = document_from_job_definitions(harness.client, verify=True)
    assert set(document.job_definitions) == set(registered)
