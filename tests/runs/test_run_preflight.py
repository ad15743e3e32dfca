"""pipeline/runs/preflight.py: the worst-case cost a run is held to, and the fit of every job on
the queue's instance types, judged before the first SubmitJob. Instance types and queues are
made up here, so each limit shows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pipeline.errors import SpecError
from pipeline.runs.preflight import (
    TRIGGER_GUARD,
    check_cost,
    check_fit,
    format_costs,
    queue_instance_types,
    worst_case,
)
from pipeline.spec import DEFAULT_SPEC

SPEC = DEFAULT_SPEC.with_array_size(2)


def test_the_worst_case_of_each_job_in_vcpu_and_gib_hours() -> None:
    costs = {c.key: c for c in worst_case(SPEC)}
    # JobA: one child x 1 vCPU / 2 GiB x 1 h x 3 attempts
    assert (costs["JobA"].children, costs["JobA"].vcpu_hours, costs["JobA"].gib_hours) == (
        1,
        3.0,
        6.0,
    )
    # JobB: 2 children x 32 vCPU / 4 GiB x 2 h x 3 attempts
    assert (costs["JobB"].vcpu_hours, costs["JobB"].gib_hours) == (384.0, 48.0)
    # JobD: 10 children x 1 vCPU / 32 GiB x 0.5 h x 3 attempts
    assert (costs["JobD"].vcpu_hours, costs["JobD"].gib_hours) == (15.0, 480.0)


def test_the_worst_case_in_words() -> None:
    lines = format_costs(worst_case(SPEC))
    assert lines[0] == "worst case (children x resources x timeout x attempts):"
    assert lines[2] == ("  JobB: 2 x 32 vCPU / 4 GiB x 2 h x 3 = 384.0 vCPU-hours, 48.0 GiB-hours")
    total = sum(c.vcpu_hours for c in worst_case(SPEC))
    gib = sum(c.gib_hours for c in worst_case(SPEC))
    assert lines[-1] == f"  total: {total:,.1f} vCPU-hours, {gib:,.1f} GiB-hours"


def test_a_run_at_its_limit_passes_and_one_above_is_refused_naming_the_limit() -> None:
    total = sum(c.vcpu_hours for c in worst_case(SPEC))
    check_cost(SPEC, total)
    check_cost(SPEC, None)
    with pytest.raises(
        SpecError, match=f"worst case is {total:,.1f} vCPU-hours, above max_vcpu_hours"
    ):
        check_cost(SPEC, total - 0.5)
    with pytest.raises(
        SpecError, match=r"above the triggers' limit of 10 \(the construct's"
    ) as error:
        check_cost(SPEC, 10, guard=TRIGGER_GUARD)
    assert error.value.field == "max_vcpu_hours"


class QueueBatch:
    """One queue whose compute environments have these (maxvCpus, instance types)."""

    def __init__(self, *environments: tuple[int, list[str]]) -> None:
        self.environments = environments

    def describe_job_queues(self, **_: Any) -> dict[str, Any]:
        order = [{"computeEnvironment": f"ce-{i}"} for i in range(len(self.environments))]
        return {"jobQueues": [{"computeEnvironmentOrder": order}]}

    def describe_compute_environments(self, **_: Any) -> dict[str, Any]:
        return {
            "computeEnvironments": [
                {
                    "computeEnvironmentName": f"ce-{i}",
                    "computeResources": {"maxvCpus": most, "instanceTypes": types},
                }
                for i, (most, types) in enumerate(self.environments)
            ]
        }


def test_a_queues_types_are_known_unknown_and_its_largest_maxvcpus() -> None:
    batch = QueueBatch((64, ["c6i.8xlarge", "optimal"]), (256, ["r6i.8xlarge"]))
    known, unknown, most = queue_instance_types(batch, "q")  # type: ignore[arg-type]
    assert [k.name for k in known] == ["c6i.8xlarge", "r6i.8xlarge"]
    assert (unknown, most) == (["optimal"], 256)


def test_every_job_fitting_an_instance_type_passes() -> None:
    batch = QueueBatch((256, ["c6i.8xlarge"]), (256, ["r6i.2xlarge"]))
    check_fit(SPEC, batch, "q")  # type: ignore[arg-type]


def test_a_job_no_instance_type_fits_is_refused_naming_the_roomiest() -> None:
    # GIVEN a queue of 2-vCPU, 8-GiB and 32-vCPU, 64-GiB instances: every job fits the latter
    batch = QueueBatch((256, ["m6i.large", "c6i.8xlarge"]))
    check_fit(SPEC, batch, "q")  # type: ignore[arg-type]
    # WHEN JobB asks for 33 vCPUs THEN it is refused, naming the roomiest type
    bigger = SPEC.with_overrides({"JobB": {"vcpus": 33}})
    with pytest.raises(
        SpecError,
        match=r"JobB needs 33 vCPU and 4,096 MiB, which no instance type of q fits "
        r"\(roomiest: c6i.8xlarge, 32 vCPU",
    ):
        check_fit(bigger, batch, "q")  # type: ignore[arg-type]


def test_a_queue_with_types_this_library_does_not_know_is_not_judged_by_type() -> None:
    bigger = SPEC.with_overrides({"JobB": {"vcpus": 33}})
    check_fit(bigger, QueueBatch((256, ["c6i.8xlarge", "optimal"])), "q")  # type: ignore[arg-type]


def test_a_job_needing_more_vcpus_than_the_environments_allow_is_refused() -> None:
    batch = QueueBatch((16, ["optimal"]))
    with pytest.raises(
        SpecError, match="JobB needs 32 vCPUs but q's compute environments allow at most 16"
    ):
        check_fit(SPEC, batch, "q")  # type: ignore[arg-type]
    fits = replace(SPEC, jobs=tuple(replace(j, vcpus=min(j.vcpus, 16)) for j in SPEC.jobs))
    check_fit(fits, batch, "q")  # type: ignore[arg-type]
