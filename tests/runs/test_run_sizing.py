"""pipeline/runs/sizing.py: how many children of a run's arrays run at once on a queue's compute
environments (or on this machine), the waves that makes and the worst case in hours. Instance
types are made up here, so the arithmetic shows."""

from __future__ import annotations

from typing import Any

import pytest

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


class QueueBatch:
    def __init__(self, queues: list[dict[str, Any]], environments: list[dict[str, Any]]) -> None:
        self.queues = queues
        self.environments = environments
        self.asked: list[list[str]] = []

    def describe_job_queues(self, *, jobQueues: list[str]) -> dict[str, Any]:  # noqa: N803
        return {"jobQueues": self.queues}

    def describe_compute_environments(
        self,
        *,
        computeEnvironments: list[str],  # noqa: N803
    ) -> dict[str, Any]:
        self.asked.append(computeEnvironments)
        return {"computeEnvironments": self.environments}


def test_a_queues_environments_are_read_with_the_types_this_library_knows() -> None:
    batch = QueueBatch(
        [
            {
                "computeEnvironmentOrder": [
                    {"computeEnvironment": "arn:ce/a"},
                    {"computeEnvironment": "arn:ce/b"},
                ]
            }
        ],
        [
            {
                "computeEnvironmentName": "a",
                "computeResources": {"maxvCpus": 96, "instanceTypes": ["c6i.8xlarge", "optimal"]},
            },
            {"computeEnvironmentName": "unmanaged"},
            {"computeEnvironmentName": "zero", "computeResources": {"maxvCpus": 0}},
        ],
    )
    (environment,) = queue_environments(batch, "ProdQueue")  # type: ignore[arg-type]
    assert batch.asked == [["arn:ce/a", "arn:ce/b"]]
    assert (environment.name, environment.max_vcpus) == ("a", 96)
    assert [t.name for t in environment.instance_types] == ["c6i.8xlarge"]
    assert environment.unknown_types == ("optimal",)


def test_a_queue_without_environments_asks_for_none() -> None:
    batch = QueueBatch([{"computeEnvironmentOrder": []}], [])
    assert queue_environments(batch, "ProdQueue") == []  # type: ignore[arg-type]
    assert batch.asked == []


def test_a_queue_that_does_not_exist_says_what_to_check() -> None:
    with pytest.raises(SpecError, match="job queue Nope does not exist; check --stack/--queue"):
        queue_environments(QueueBatch([], []), "Nope")  # type: ignore[arg-type]
