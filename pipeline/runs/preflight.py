"""Checks a run must pass before its first SubmitJob: the worst-case cost, and that every job
fits an instance type of the queue's compute environments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.batch_facts import MIN_ARRAY_SIZE
from pipeline.errors import SpecError
from pipeline.instances import InstanceType
from pipeline.runs.sizing import queue_environments
from pipeline.spec import JobSpec, PipelineSpec

if TYPE_CHECKING:
    from pipeline.runs.api import BatchApi


@dataclass(frozen=True)
class JobCost:
    """Worst case of one job: every child runs every attempt to its timeout."""

    key: str
    children: int
    vcpus: float
    memory_gib: float
    hours_per_attempt: float
    attempts: int

    @property
    def vcpu_hours(self) -> float:
        return self.children * self.vcpus * self.hours_per_attempt * self.attempts

    @property
    def gib_hours(self) -> float:
        return self.children * self.memory_gib * self.hours_per_attempt * self.attempts


def worst_case(spec: PipelineSpec) -> list[JobCost]:
    return [
        JobCost(
            key=job.key,
            children=job.array_size or 1,
            vcpus=job.vcpus,
            memory_gib=job.memory_mib / 1024,
            hours_per_attempt=job.timeout_seconds / 3600,
            attempts=job.retry_attempts,
        )
        for job in spec
    ]


def format_costs(costs: Sequence[JobCost]) -> list[str]:
    lines = ["worst case (children x resources x timeout x attempts):"]
    for c in costs:
        lines.append(
            f"  {c.key}: {c.children:,} x {c.vcpus:g} vCPU / {c.memory_gib:g} GiB x "
            f"{c.hours_per_attempt:g} h x {c.attempts} = {c.vcpu_hours:,.1f} vCPU-hours, "
            f"{c.gib_hours:,.1f} GiB-hours"
        )
    total_vcpu = sum(c.vcpu_hours for c in costs)
    total_gib = sum(c.gib_hours for c in costs)
    lines.append(f"  total: {total_vcpu:,.1f} vCPU-hours, {total_gib:,.1f} GiB-hours")
    return lines


COMMAND_LINE_GUARD = (
    "max_vcpu_hours {limit:g}; lower array_size or raise the limit (see the dry run)"
)
SMALLEST_ARRAY_GUARD = (
    "max_vcpu_hours {limit:g}; raise the limit: the arrays are at AWS Batch's smallest size, "
    "{size} (see the dry run)"
)
TRIGGER_GUARD = (
    "the triggers' limit of {limit:g} (the construct's trigger_max_vcpu_hours); raise it, or "
    "lower the pipeline's array size"
)


def check_cost(
    spec: PipelineSpec, max_vcpu_hours: float | None, *, guard: str = COMMAND_LINE_GUARD
) -> None:
    """Refuse a run whose worst case exceeds ``max_vcpu_hours``; ``guard`` names the limit
    and what to do, for the message."""
    if max_vcpu_hours is None:
        return
    total = sum(c.vcpu_hours for c in worst_case(spec))
    if guard == COMMAND_LINE_GUARD and spec.array_size <= MIN_ARRAY_SIZE:
        guard = SMALLEST_ARRAY_GUARD.replace("{size}", str(MIN_ARRAY_SIZE))
    if total > max_vcpu_hours:
        raise SpecError(
            f"the run's worst case is {total:,.1f} vCPU-hours, above "
            + guard.format(limit=max_vcpu_hours),
            field="max_vcpu_hours",
        )


def queue_instance_types(batch: BatchApi, queue: str) -> tuple[list[InstanceType], list[str], int]:
    """(known instance types, unknown type names, largest maxvCpus) of the queue's compute
    environments."""
    environments = queue_environments(batch, queue)
    known = [kind for e in environments for kind in e.instance_types]
    unknown = [name for e in environments for name in e.unknown_types]
    return known, unknown, max((e.max_vcpus for e in environments), default=0)


def check_fit(spec: PipelineSpec, batch: BatchApi, queue: str) -> None:
    """Every job must fit one instance type of the queue (else it would sit RUNNABLE until
    the queue's time limit cancels it) and the environments' maxvCpus. Instance types the
    project's table does not know (or "optimal") are not judged."""
    known, unknown, max_vcpus = queue_instance_types(batch, queue)
    for job in spec:
        _check_job_fits(job, known, unknown, max_vcpus, queue)


def _check_job_fits(
    job: JobSpec, known: list[InstanceType], unknown: list[str], max_vcpus: int, queue: str
) -> None:
    if known and not unknown and not any(i.fits(job.vcpus, job.memory_mib) for i in known):
        largest = max(known, key=lambda i: (i.usable_memory_mib, i.vcpus))
        raise SpecError(
            f"{job.key} needs {job.vcpus:g} vCPU and {job.memory_mib:,} MiB, which no instance "
            f"type of {queue} fits (roomiest: {largest.name}, {largest.vcpus} vCPU, "
            f"{largest.usable_memory_mib:,} MiB usable); add a larger instance type to its "
            "compute environments"
        )
    if max_vcpus and job.vcpus > max_vcpus:
        raise SpecError(
            f"{job.key} needs {job.vcpus:g} vCPUs but {queue}'s compute environments allow at "
            f"most {max_vcpus}; raise their maxvCpus"
        )
