"""pipeline/runs/preflight.py: the worst-case cost a run is held to, and the fit of every job on
the queue's instance types, judged before the first SubmitJob. The queues are made on the
engine's Batch (tests/helpers/batch.py), with compute environments of chosen instance types
and maxvCpus (tests/helpers/queues.py), so each limit shows; pre-flight reads them through
DescribeJobQueues and DescribeComputeEnvironments as on AWS."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest

from helpers.batch import EngineBatch, engine_batch
from helpers.queues import job_queue, managed_environment
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


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _queue(aws: EngineBatch, *environments: tuple[int, Sequence[str]]) -> str:
    """A queue named q on compute environments ce-0, ce-1, ... of these (maxvCpus, instance
    types), in that order."""
    arns = [
        managed_environment(aws.reader, f"ce-{i}", types, max_vcpus=most)
        for i, (most, types) in enumerate(environments)
    ]
    job_queue(aws.reader, "q", *arns)
    return "q"


def test_a_queues_types_are_known_unknown_and_its_largest_maxvcpus(aws: EngineBatch) -> None:
    queue = _queue(aws, (64, ["c6i.8xlarge", "optimal"]), (256, ["r6i.8xlarge"]))
    known, unknown, most = queue_instance_types(aws.batch, queue)
    assert [k.name for k in known] == ["c6i.8xlarge", "r6i.8xlarge"]
    assert (unknown, most) == (["optimal"], 256)


def test_every_job_fitting_an_instance_type_passes(aws: EngineBatch) -> None:
    queue = _queue(aws, (256, ["c6i.8xlarge"]), (256, ["r6i.2xlarge"]))
    check_fit(SPEC, aws.batch, queue)


def test_a_job_no_instance_type_fits_is_refused_naming_the_roomiest(aws: EngineBatch) -> None:
    # GIVEN a queue of 2-vCPU, 8-GiB and 32-vCPU, 64-GiB instances: every job fits the latter
    queue = _queue(aws, (256, ["m6i.large", "c6i.8xlarge"]))
    check_fit(SPEC, aws.batch, queue)
    # WHEN JobB asks for 33 vCPUs THEN it is refused, naming the roomiest type
    bigger = SPEC.with_overrides({"JobB": {"vcpus": 33}})
    with pytest.raises(
        SpecError,
        match=r"JobB needs 33 vCPU and 4,096 MiB, which no instance type of q fits "
        r"\(roomiest: c6i.8xlarge, 32 vCPU",
    ):
        check_fit(bigger, aws.batch, queue)


def test_a_queue_with_types_this_library_does_not_know_is_not_judged_by_type(
    aws: EngineBatch,
) -> None:
    bigger = SPEC.with_overrides({"JobB": {"vcpus": 33}})
    check_fit(bigger, aws.batch, _queue(aws, (256, ["c6i.8xlarge", "optimal"])))


def test_a_job_needing_more_vcpus_than_the_environments_allow_is_refused(
    aws: EngineBatch,
) -> None:
    queue = _queue(aws, (16, ["optimal"]))
    with pytest.raises(
        SpecError, match="JobB needs 32 vCPUs but q's compute environments allow at most 16"
    ):
        check_fit(SPEC, aws.batch, queue)
    fits = replace(SPEC, jobs=tuple(replace(j, vcpus=min(j.vcpus, 16)) for j in SPEC.jobs))
    check_fit(fits, aws.batch, queue)
