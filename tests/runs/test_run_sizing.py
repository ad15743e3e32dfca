"""pipeline/runs/sizing.py: how many children of a run's arrays run at once on a queue's compute
environments (or on this machine), the waves that makes and the worst case in hours. Instance
types are made up here, so the arithmetic shows; a deployed queue is read from the engine's
Batch (tests/helpers/batch.py), with compute environments made as a stack makes them
(tests/helpers/queues.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.batch import EngineBatch, engine_batch
from helpers.queues import (
    described_environments,
    job_queue,
    managed_environment,
    unmanaged_environment,
)
from pipeline.errors import SpecError
from pipeline.instances import DEFAULT_MAX_VCPUS, InstanceType
from pipeline.runs.sizing import (
    Capacity,
    Environment,
    JobSizing,
    default_capacity,
    format_sizing,
    queue_environments,
    sizing,
)
from pipeline.spec import DEFAULT_SPEC

# 8 vCPUs and 10,000 MiB of which a job may reserve its usable share
EIGHT = InstanceType("eight.large", 8, 10_000)
SIXTEEN = InstanceType("sixteen.large", 16, 40_000)


def test_an_environment_of_unknown_types_is_bounded_by_its_maxvcpus_only() -> None:
    assert Environment("any", 64).at_once(4, 1_000_000) == 16
    assert Environment("any", 64).at_once(0.5, 1) == 128


def test_an_environment_fills_as_many_instances_as_its_maxvcpus_allows() -> None:
    environment = Environment("cpu", 40, (EIGHT,))
    # 40 // 8 = 5 instances; 4 children of 2 vCPUs each fit one by vCPUs
    assert environment.at_once(2, 1) == 20
    # memory decides when it fills first: one child of 6,000 MiB per instance
    assert environment.at_once(1, 6_000) == 5
    # a child that fits no instance runs nowhere
    assert environment.at_once(9, 1) == 0


def test_the_best_instance_type_of_an_environment_counts() -> None:
    # 32 vCPUs: four EIGHTs (one 6,000 MiB child each) or two SIXTEENs (six each)
    assert Environment("mixed", 32, (EIGHT, SIXTEEN)).at_once(1, 6_000) == 12
    assert Environment("mixed", 32, (SIXTEEN, EIGHT)).at_once(1, 6_000) == 12


def test_a_queues_environments_add_up() -> None:
    capacity = Capacity("q", (Environment("a", 16, (EIGHT,)), Environment("b", 12)))
    assert capacity.at_once(4, 1_000) == 4 + 3


@pytest.mark.parametrize(
    ("vcpus", "at_once"),
    [(0.25, 8), (1, 8), (1.5, 4), (3, 2), (8, 1), (32, 1)],
)
def test_this_machine_runs_its_cores_worth_of_whole_vcpus(vcpus: float, at_once: int) -> None:
    # a job takes its vCPUs rounded up, at least one and at most all eight
    assert Capacity("this machine", cores=8).at_once(vcpus, 1_000_000) == at_once


@pytest.mark.parametrize(
    ("children", "at_once", "waves"),
    [(10, 5, 2), (11, 5, 3), (4, 5, 1), (1, 1, 1), (10, 0, 0)],
)
def test_waves_are_the_children_over_those_at_once_rounded_up(
    children: int, at_once: int, waves: int
) -> None:
    job = JobSizing("JobB", children, 1, 1, at_once, hours_per_attempt=2.0, attempts=3)
    assert job.waves == waves
    assert job.worst_hours == waves * 2.0 * 3


def test_a_jobs_sizing_as_json_shows_no_more_at_once_than_children() -> None:
    job = JobSizing("JobB", 4, 1, 1, at_once=100, hours_per_attempt=1 / 3, attempts=3)
    assert job.as_json() == {
        "job": "JobB",
        "children": 4,
        "atOnce": 4,
        "waves": 1,
        "worstCaseHours": 1.0,
    }


def test_the_arrays_of_a_run_are_sized_and_the_checks_run_one_at_a_time() -> None:
    spec = DEFAULT_SPEC.with_array_size(100)
    sized = {job.key: job for job in sizing(spec, Capacity("this machine", cores=2))}
    assert list(sized) == ["JobB", "JobC", "JobD"]
    assert (sized["JobB"].children, sized["JobB"].at_once, sized["JobB"].waves) == (100, 1, 100)
    assert (sized["JobC"].at_once, sized["JobC"].waves) == (2, 50)
    # JobD's children are SEQUENTIAL: one at a time, whatever the capacity
    assert (sized["JobD"].children, sized["JobD"].at_once, sized["JobD"].waves) == (10, 1, 10)
    job_b = spec.job("JobB")
    assert sized["JobB"].hours_per_attempt == job_b.timeout_seconds / 3600
    assert sized["JobB"].attempts == job_b.retry_attempts == 3
    assert (sized["JobB"].vcpus, sized["JobB"].memory_mib) == (job_b.vcpus, job_b.memory_mib)


def test_an_unknown_capacity_sizes_nothing() -> None:
    assert sizing(DEFAULT_SPEC, Capacity("unknown")) == []
    assert format_sizing(Capacity("unknown"), []) == [
        "capacity unknown (unknown): no children at once to show"
    ]


def test_the_sizing_in_words() -> None:
    lines = format_sizing(
        Capacity("the queue"),
        [
            JobSizing("JobB", 10_000, 32, 4096, 16, hours_per_attempt=2, attempts=3),
            JobSizing("JobD", 1, 1, 32_768, 1, hours_per_attempt=0.5, attempts=3),
            JobSizing("JobC", 10_000, 1, 32_768, 0, hours_per_attempt=2, attempts=3),
        ],
    )
    assert lines == [
        "capacity (the queue):",
        "  JobB: 10,000 children, at most 16 at once -> 625 waves; worst case 625 x 2 h x 3 "
        "attempts = 3,750.0 h",
        "  JobD: 1 children, at most 1 at once -> 1 wave; worst case 1 x 0.5 h x 3 attempts = "
        "1.5 h",
        "  JobC: 10,000 x 1 vCPU / 32,768 MiB: no child fits; it would wait in RUNNABLE",
    ]


def test_the_default_capacity_is_the_constructs_two_environments() -> None:
    capacity = default_capacity()
    assert [(e.name, e.max_vcpus) for e in capacity.environments] == [
        ("MemoryOptimized", DEFAULT_MAX_VCPUS),
        ("CpuOptimized", DEFAULT_MAX_VCPUS),
    ]
    assert all(e.instance_types and not e.unknown_types for e in capacity.environments)
    # every job of the workflow fits the default queue
    assert all(job.at_once > 0 for job in sizing(DEFAULT_SPEC, capacity))


# --- a deployed queue -----------------------------------------------------------------------


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def test_a_queues_environments_are_read_with_the_types_this_library_knows(
    aws: EngineBatch,
) -> None:
    # GIVEN a queue on a managed environment of a known and an unknown type, an unmanaged
    # one, and a managed one of maxvCpus 0
    environments = [
        managed_environment(aws.reader, "a", ["c6i.8xlarge", "optimal"], max_vcpus=96),
        unmanaged_environment(aws.reader, "unmanaged"),
        managed_environment(aws.reader, "zero", ["c6i.8xlarge"], max_vcpus=0),
    ]
    queue = job_queue(aws.reader, "Sized", *environments)
    asked = described_environments(aws.batch)
    # WHEN its environments are read
    (environment,) = queue_environments(aws.batch, queue)
    # THEN in one DescribeComputeEnvironments for the queue's environments; only the one with
    # a maxvCpus to size against counts, with the types this library knows and the others
    assert asked == [environments]
    assert (environment.name, environment.max_vcpus) == ("a", 96)
    assert [t.name for t in environment.instance_types] == ["c6i.8xlarge"]
    assert environment.unknown_types == ("optimal",)


def test_a_queue_without_environments_asks_for_none(aws: EngineBatch) -> None:
    # GIVEN a queue AWS describes with no compute environments (a SageMaker Training queue has
    # service environments instead); the engine makes only queues on compute environments, so
    # its answer is given that queue's shape; the account has another queue's environment
    job_queue(aws.reader, "Other", managed_environment(aws.reader, "elsewhere", max_vcpus=64))

    def no_environments(parsed: dict[str, Any], **_: Any) -> None:
        for queue in parsed["jobQueues"]:
            queue["computeEnvironmentOrder"] = []

    aws.batch.meta.events.register("after-call.batch.DescribeJobQueues", no_environments)
    asked = described_environments(aws.batch)
    # WHEN its environments are read THEN there are none, and no DescribeComputeEnvironments
    # is sent (without names it would describe every environment of the account)
    assert queue_environments(aws.batch, aws.queue_arn) == []
    assert asked == []


def test_a_queue_that_does_not_exist_says_what_to_check(aws: EngineBatch) -> None:
    with pytest.raises(SpecError, match="job queue Nope does not exist; check --stack/--queue"):
        queue_environments(aws.batch, "Nope")
