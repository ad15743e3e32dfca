"""pipeline/spec.py: the workflow as data, and the rules AWS Batch applies to it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from pipeline.errors import SpecError
from pipeline.limits import check_array_size, check_email
from pipeline.spec import (
    DEFAULT_SPEC,
    RESOURCES,
    Dependency,
    DependencyType,
    PipelineSpec,
    prefixed,
)


def test_jobs_are_the_workflows_five_in_order() -> None:
    assert [(j.key, j.definition_name) for j in DEFAULT_SPEC] == [
        ("JobA", "JobA-list-and-validate"),
        ("JobB", "JobB-CPU-Intensive-Processing"),
        ("JobC", "JobC-Memory-Intensive-Processing"),
        ("JobD", "JobD-Sequential-Validation"),
        ("JobE", "JobE-Cleanup-and-Notification"),
    ]


def test_dependencies_are_the_workflows() -> None:
    deps = {j.key: [(d.type.value, d.on) for d in j.depends_on] for j in DEFAULT_SPEC}
    assert deps == {
        "JobA": [],
        "JobB": [("STANDARD", "JobA")],
        "JobC": [("N_TO_N", "JobB")],
        "JobD": [("STANDARD", "JobC"), ("SEQUENTIAL", None)],
        "JobE": [("STANDARD", "JobD")],
    }


def test_job_e_passes_its_parameters_as_refs() -> None:
    assert DEFAULT_SPEC.job("JobE").command == (
        "python",
        "-m",
        "pipeline.jobs.job_e",
        "--source-bucket",
        "Ref::SourceBucket",
        "--recipient",
        "Ref::Recipient",
    )


def test_resource_requirements_replace_the_deprecated_fields() -> None:
    assert DEFAULT_SPEC.job("JobB").resource_requirements() == [
        {"type": "VCPU", "value": "32"},
        {"type": "MEMORY", "value": "4096"},
    ]


def test_with_array_size_changes_b_and_c_only() -> None:
    spec = DEFAULT_SPEC.with_array_size(8)
    assert {j.key: j.array_size for j in spec} == {
        "JobA": None,
        "JobB": 8,
        "JobC": 8,
        "JobD": 10,
        "JobE": None,
    }
    assert DEFAULT_SPEC.array_size == 10_000  # frozen: the original is untouched


@pytest.mark.parametrize("size", [2, 10, 10_000])
def test_array_sizes_batch_accepts(size: int) -> None:
    assert check_array_size(size) == size


@pytest.mark.parametrize("size", [0, 1, -5, 10_001, True, 2.5, "8"])
def test_array_sizes_batch_rejects(size: object) -> None:
    with pytest.raises(SpecError, match="array size must be"):
        check_array_size(size)


def test_n_to_n_needs_arrays_of_equal_size() -> None:
    jobs = list(DEFAULT_SPEC.jobs)
    jobs[2] = replace(jobs[2], array_size=5, scales_with_input=False)
    with pytest.raises(
        SpecError, match="JobC is N_TO_N on JobB: both must be array jobs of the same size"
    ):
        PipelineSpec(tuple(jobs))


def test_sequential_needs_an_array_job() -> None:
    jobs = list(DEFAULT_SPEC.jobs)
    jobs[3] = replace(jobs[3], array_size=None)
    with pytest.raises(SpecError, match="JobD has a SEQUENTIAL dependency but is not an array"):
        PipelineSpec(tuple(jobs))


def test_at_most_twenty_dependencies() -> None:
    jobs = list(DEFAULT_SPEC.jobs)
    jobs[4] = replace(jobs[4], depends_on=(Dependency(DependencyType.STANDARD, "JobD"),) * 21)
    with pytest.raises(SpecError, match="JobE has 21 dependencies; AWS Batch allows at most 20"):
        PipelineSpec(tuple(jobs))


def test_dependencies_point_at_earlier_jobs() -> None:
    jobs = list(DEFAULT_SPEC.jobs)
    jobs[0] = replace(jobs[0], depends_on=(Dependency(DependencyType.STANDARD, "JobE"),))
    with pytest.raises(SpecError, match="JobA depends on 'JobE', which is not an earlier job"):
        PipelineSpec(tuple(jobs))


def test_sequential_names_no_job() -> None:
    with pytest.raises(SpecError, match="SEQUENTIAL dependency names no job"):
        Dependency(DependencyType.SEQUENTIAL, "JobC")


@pytest.mark.parametrize("address", ["pipeline-notifications@mycompany.com", "a.b+c@x.io"])
def test_email_addresses_accepted(address: str) -> None:
    assert check_email(address) == address


@pytest.mark.parametrize("address", ["", "nobody", "a@b", "a@@b.com", "a b@c.com", "@x.com"])
def test_email_addresses_rejected(address: str) -> None:
    with pytest.raises(SpecError, match="is not an email address"):
        check_email(address)


def test_resource_keys_environment_names_and_outputs_are_unique() -> None:
    for attribute in ("key", "env", "output"):
        values = [getattr(r, attribute) for r in RESOURCES]
        assert len(values) == len(set(values)), attribute


def test_prefixed_names() -> None:
    assert prefixed("", "ProdQueue") == "ProdQueue"
    assert prefixed("dev", "ProdQueue") == "dev-ProdQueue"


def test_spec_and_package_import_without_aws_cdk() -> None:
    # Job programs and the CLI read the spec; they must not pay for loading aws-cdk-lib.
    code = "import sys, pipeline, pipeline.spec; print('aws_cdk' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
