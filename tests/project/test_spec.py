"""pipeline/spec.py: the workflow as data, and the rules AWS Batch applies to it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from pipeline import contract
from pipeline.batch_facts import MAX_EVALUATE_ON_EXIT, DependencyType, RetryRule
from pipeline.contract import EXIT_TRANSIENT, RUN_PREFIX_PATTERN
from pipeline.errors import SpecError
from pipeline.limits import check_array_size, check_email
from pipeline.spec import (
    DEFAULT_ARRAY_SIZE,
    DEFAULT_SPEC,
    RESOURCES,
    RETRY_RULES,
    Access,
    Dependency,
    PipelineSpec,
    check_resources,
    prefixed,
)
from pipeline.steps import DEFAULT_STEPS, PipelineSteps, Step


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
    jobs[4] = replace(jobs[4], depends_on=(Dependency(DependencyType.STANDARD, "JobD"),) * 20)
    assert len(PipelineSpec(tuple(jobs)).job("JobE").depends_on) == 20
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


# --- dependencies, accesses and retries as Batch takes them ---------------------------------


def test_a_dependency_on_a_job_must_name_it() -> None:
    # GIVEN a STANDARD or N_TO_N dependency without the job it waits for, THEN it is refused
    for kind in (DependencyType.STANDARD, DependencyType.N_TO_N):
        with pytest.raises(
            SpecError,
            match=r"^a SEQUENTIAL dependency names no job and every other dependency names one; "
            rf"got type={kind.value} on=None$",
        ):
            Dependency(kind)


def test_an_access_to_an_unknown_resource_is_refused() -> None:
    with pytest.raises(SpecError, match="access to unknown resource 'bucket_z'; see RESOURCES"):
        Access("bucket_z", ("s3:GetObject",))


def test_listing_a_bucket_is_an_access_of_its_own() -> None:
    # GIVEN s3:ListBucket together with an object action on a bucket, THEN it is refused
    with pytest.raises(
        SpecError, match=r"^s3:ListBucket is a bucket action; give it an Access of its own$"
    ):
        Access("input_bucket", ("s3:ListBucket", "s3:GetObject"))
    # WHEN it stands alone THEN the access lists the bucket; object actions do not
    assert Access("input_bucket", ("s3:ListBucket",)).lists_bucket
    assert not Access("input_bucket", ("s3:GetObject",)).lists_bucket


def test_jobs_list_only_the_buckets_they_read_whole_or_their_runs_prefix() -> None:
    # JobA and JobD list BucketA whole (the inputs); every other listing is under runs/<id>/
    listed = {
        job.key: [(a.resource, a.prefix) for a in job.access if a.lists_bucket]
        for job in DEFAULT_SPEC
    }
    assert listed["JobA"] == [("input_bucket", None)]
    assert listed["JobB"] == []
    assert listed["JobC"] == [("cpu_results_bucket", RUN_PREFIX_PATTERN)]
    assert ("input_bucket", None) in listed["JobD"]
    assert all(prefix == RUN_PREFIX_PATTERN for _, prefix in listed["JobD"][1:])


@pytest.mark.parametrize(
    ("status_reason", "reason", "exit_code", "action"),
    [
        ("Host EC2 (instance i-0abc) terminated.", None, None, "RETRY"),
        (None, "CannotPullContainerError: pull access denied", None, "RETRY"),
        ("Essential container in task exited", None, EXIT_TRANSIENT, "RETRY"),
        ("Essential container in task exited", None, 1, "EXIT"),
        ("Essential container in task exited", None, 0, "EXIT"),
        (None, "OutOfMemoryError: Container killed due to memory usage", None, "EXIT"),
        ("Job attempt duration exceeded timeout", None, None, None),
    ],
)
def test_retry_rules_retry_infrastructure_and_transient_failures_only(
    status_reason: str | None, reason: str | None, exit_code: int | None, action: str | None
) -> None:
    # GIVEN an attempt that ended this way WHEN Batch applies the first rule that matches
    first = next(
        (
            rule.action
            for rule in RETRY_RULES
            if rule.matches(status_reason=status_reason, reason=reason, exit_code=exit_code)
        ),
        None,
    )
    # THEN host losses, image pulls and the transient exit code are retried, all else is not
    assert first == action


def test_retry_rules_as_registered() -> None:
    # AWS Batch takes at most five evaluateOnExit entries
    assert len(RETRY_RULES) <= MAX_EVALUATE_ON_EXIT == 5
    assert [rule.as_evaluate_on_exit() for rule in RETRY_RULES] == [
        {"action": "RETRY", "onStatusReason": "Host EC2*"},
        {"action": "RETRY", "onReason": "CannotPullContainerError:*"},
        {"action": "RETRY", "onExitCode": str(EXIT_TRANSIENT)},
        {"action": "EXIT", "onExitCode": "*"},
        {"action": "EXIT", "onReason": "*"},
    ]


def test_a_rule_on_every_field_needs_them_all() -> None:
    rule = RetryRule("RETRY", on_status_reason="Host*", on_reason="Lost*", on_exit_code="137")
    assert rule.matches(status_reason="Host gone", reason="Lost it", exit_code=137)
    assert not rule.matches(status_reason="Host gone", reason="Lost it", exit_code=1)
    assert not rule.matches(status_reason="Host gone", reason=None, exit_code=137)
    assert not rule.matches(status_reason="Other", reason="Lost it", exit_code=137)


# --- commands and resources -----------------------------------------------------------------


def test_parameters_become_kebab_case_flags_and_an_override_replaces_the_command() -> None:
    job = replace(DEFAULT_SPEC.job("JobE"), parameters=("SourceBucket", "MaxObjectBytes"))
    assert job.command[3:] == (
        "--source-bucket",
        "Ref::SourceBucket",
        "--max-object-bytes",
        "Ref::MaxObjectBytes",
    )
    overridden = replace(job, command_override=("my-program", "--fast"))
    assert overridden.command == ("my-program", "--fast")


def test_fractional_vcpus_are_kept_whole_ones_have_no_decimals() -> None:
    job = DEFAULT_SPEC.job("JobA")
    assert replace(job, vcpus=0.25).resource_requirements()[0] == {"type": "VCPU", "value": "0.25"}
    assert replace(job, vcpus=2.0).resource_requirements()[0] == {"type": "VCPU", "value": "2"}


def test_only_b_and_c_scale_with_the_input_and_only_arrays_are_arrays() -> None:
    assert [j.key for j in DEFAULT_SPEC if j.scales_with_input] == ["JobB", "JobC"]
    assert [j.key for j in DEFAULT_SPEC if j.is_array] == ["JobB", "JobC", "JobD"]
    assert DEFAULT_SPEC.job("JobD").array_size == 10
    assert DEFAULT_SPEC.array_size == DEFAULT_ARRAY_SIZE == 10_000


def test_every_job_is_tried_three_times() -> None:
    assert {j.key: j.retry_attempts for j in DEFAULT_SPEC} == dict.fromkeys(
        ("JobA", "JobB", "JobC", "JobD", "JobE"), 3
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vcpus": 0}, "JobA vCPUs must be 0.25, 0.5 or a positive number; got 0"),
        ({"vcpus": 0.75}, "JobA vCPUs must be 0.25, 0.5 or a positive number; got 0.75"),
        ({"vcpus": True}, "JobA vcpus must be a number; got True"),
        ({"vcpus": "2"}, "JobA vcpus must be a number; got '2'"),
        ({"memory_mib": float("inf")}, "JobA memory_mib must be a finite number; got inf"),
        ({"memory_mib": 3}, "JobA memory must be at least 4 MiB; got 3"),
        ({"timeout_seconds": 59}, "JobA timeout must be at least 60 seconds"),
        ({"retry_attempts": 0}, "JobA attempts must be from 1 to 10; got 0"),
        ({"retry_attempts": 11}, "JobA attempts must be from 1 to 10; got 11"),
    ],
)
def test_resources_batch_would_refuse_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        check_resources(replace(DEFAULT_SPEC.job("JobA"), **changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"vcpus": 0.25},
        {"vcpus": 0.5},
        {"vcpus": 1},
        {"memory_mib": 4},
        {"timeout_seconds": 60},
        {"retry_attempts": 1},
        {"retry_attempts": 10},
    ],
)
def test_resources_at_batchs_limits_are_accepted(changes: dict[str, Any]) -> None:
    check_resources(replace(DEFAULT_SPEC.job("JobA"), **changes))


# --- copies of the spec ---------------------------------------------------------------------


def test_a_job_is_found_by_its_key_and_an_unknown_key_names_the_jobs() -> None:
    assert DEFAULT_SPEC.job("JobC").definition_name == "JobC-Memory-Intensive-Processing"
    with pytest.raises(SpecError, match="unknown job 'JobZ'; the jobs are JobA, JobB, JobC"):
        DEFAULT_SPEC.job("JobZ")


def test_two_jobs_with_one_key_are_refused() -> None:
    jobs = (*DEFAULT_SPEC.jobs, DEFAULT_SPEC.job("JobE"))
    with pytest.raises(SpecError, match="job key 'JobE' appears twice"):
        PipelineSpec(jobs)


def test_the_jobs_that_scale_with_the_input_share_one_size() -> None:
    # GIVEN JobB of 30 children and JobC (no longer N_TO_N on it) of 20
    jobs = list(DEFAULT_SPEC.jobs)
    jobs[1] = replace(jobs[1], array_size=30)
    jobs[2] = replace(jobs[2], array_size=20, depends_on=())
    with pytest.raises(SpecError, match="must share one array size"):
        PipelineSpec(tuple(jobs))


def test_an_array_size_batch_refuses_is_refused_in_a_job_and_a_copy() -> None:
    jobs = list(DEFAULT_SPEC.jobs)
    jobs[3] = replace(jobs[3], array_size=1)
    with pytest.raises(SpecError, match="JobD array size must be"):
        PipelineSpec(tuple(jobs))
    with pytest.raises(SpecError, match="array_size must be"):
        DEFAULT_SPEC.with_array_size(10_001)


def test_overrides_change_the_named_jobs_deployable_fields_only() -> None:
    # WHEN JobB gets more vCPUs, an environment and a command of its own
    spec = DEFAULT_SPEC.with_overrides(
        {"JobB": {"vcpus": 16, "environment": {"B": "2", "A": "1"}, "command": ["run", "b"]}}
    )
    # THEN only JobB changed; its environment is sorted, its command replaces the program's
    job_b = spec.job("JobB")
    assert (job_b.vcpus, job_b.environment, job_b.command) == (
        16,
        (("A", "1"), ("B", "2")),
        ("run", "b"),
    )
    assert spec.environment_of(job_b)["A"] == "1"
    assert [j for j in spec if j.key != "JobB"] == [j for j in DEFAULT_SPEC if j.key != "JobB"]
    # an empty command keeps the program's
    kept = DEFAULT_SPEC.with_overrides({"JobB": {"command": []}}).job("JobB").command
    assert kept == DEFAULT_SPEC.job("JobB").command


def test_an_override_of_another_field_or_job_is_refused() -> None:
    with pytest.raises(
        SpecError,
        match=r"^JobB: array_size, module cannot be overridden; only command, environment, "
        r"memory_mib, retry_attempts, timeout_seconds, vcpus$",
    ):
        DEFAULT_SPEC.with_overrides({"JobB": {"array_size": 4, "module": "x"}})
    with pytest.raises(SpecError, match="unknown job 'JobX'"):
        DEFAULT_SPEC.with_overrides({"JobX": {"vcpus": 2}})
    with pytest.raises(SpecError, match="JobB attempts must be from 1 to 10"):
        DEFAULT_SPEC.with_overrides({"JobB": {"retry_attempts": 0}})


def test_a_steps_resources_become_its_jobs_and_are_checked() -> None:
    # GIVEN steps whose CPU step asks for 4 vCPUs and 1 GiB, and whose memory step sets none
    steps = PipelineSteps(
        cpu=Step.python(
            "pipeline.jobs.default_steps:digest_and_compress", vcpus=4, memory_mib=1024
        ),
        memory=Step.python("pipeline.jobs.default_steps:byte_statistics"),
    )
    # WHEN the spec runs them THEN JobB takes the step's, JobC keeps its own
    spec = DEFAULT_SPEC.with_steps(steps)
    assert (spec.job("JobB").vcpus, spec.job("JobB").memory_mib) == (4, 1024)
    assert spec.job("JobC") == DEFAULT_SPEC.job("JobC")
    assert spec.steps == steps
    # AND a step asking what Batch refuses is named with its job
    too_short = PipelineSteps(
        cpu=Step.python("pipeline.jobs.default_steps:digest_and_compress", timeout=30),
        memory=Step.python("pipeline.jobs.default_steps:byte_statistics"),
    )
    with pytest.raises(SpecError, match="the cpu step \\(JobB\\): JobB timeout must be at least"):
        DEFAULT_SPEC.with_steps(too_short)


def test_the_check_jobs_environment_is_the_steps_checks() -> None:
    environment = DEFAULT_SPEC.environment_of(DEFAULT_SPEC.job("JobD"))
    assert json.loads(environment[contract.CHECKS]) == list(DEFAULT_STEPS.checks)
    assert DEFAULT_SPEC.environment_of(DEFAULT_SPEC.job("JobA")) == {}
