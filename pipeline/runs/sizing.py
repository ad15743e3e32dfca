"""How a run's array jobs fit their queue: how many children can run at once under the compute
environments' maxvCpus and instance types, the waves that makes, and the worst case in time.

AWS Batch places each child on an instance of one of the queue's compute environments; an
environment grows to at most its ``maxvCpus``. So at most ``maxvCpus // instance vCPUs``
instances of a type run, each holding as many children as its vCPUs and usable memory fit;
the best type of each environment, summed over the environments, bounds the children at once.
This is an upper bound: other jobs on the queue, Spot capacity and account quotas can lower it.
On this machine (``--local``) the bound is its vCPU budget, as the local scheduler places jobs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.batch_facts import DependencyType
from pipeline.errors import SpecError
from pipeline.instances import (
    DEFAULT_CPU_INSTANCE_TYPES,
    DEFAULT_MAX_VCPUS,
    DEFAULT_MEMORY_INSTANCE_TYPES,
    INSTANCE_TYPES,
    InstanceType,
)
from pipeline.spec import JobSpec, PipelineSpec

if TYPE_CHECKING:
    from pipeline.runs.api import BatchApi


@dataclass(frozen=True)
class Environment:
    """One compute environment: how far it grows, on which instance types."""

    name: str
    max_vcpus: int
    instance_types: tuple[InstanceType, ...] = ()
    unknown_types: tuple[str, ...] = ()
    """Instance types (or families, or ``optimal``) this library's table does not know."""

    def at_once(self, vcpus: float, memory_mib: int) -> int:
        """Most children of that size running at once in this environment."""
        if not self.instance_types:  # types unknown: only maxvCpus bounds it
            return int(self.max_vcpus // vcpus)
        best = 0
        for kind in self.instance_types:
            per_instance = min(
                int(kind.vcpus // vcpus), int(kind.usable_memory_mib // max(memory_mib, 1))
            )
            best = max(best, (self.max_vcpus // kind.vcpus) * per_instance)
        return best


@dataclass(frozen=True)
class Capacity:
    """Where a run's children run: a queue's compute environments, or this machine."""

    description: str
    environments: tuple[Environment, ...] = ()
    cores: int | None = None
    """This machine's vCPU budget (``--local``), instead of environments."""

    def at_once(self, vcpus: float, memory_mib: int) -> int:
        if self.cores is not None:  # one machine: a job takes its vCPUs, at most all of them
            return self.cores // min(max(1, math.ceil(vcpus)), self.cores)
        return sum(e.at_once(vcpus, memory_mib) for e in self.environments)


@dataclass(frozen=True)
class JobSizing:
    key: str
    children: int
    vcpus: float
    memory_mib: int
    at_once: int
    hours_per_attempt: float
    attempts: int

    @property
    def waves(self) -> int:
        """Rounds of children, each as many as run at once (0: none can start)."""
        return math.ceil(self.children / self.at_once) if self.at_once else 0

    @property
    def worst_hours(self) -> float:
        """Every wave's children running every attempt to the timeout."""
        return self.waves * self.hours_per_attempt * self.attempts

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.key,
            "children": self.children,
            "atOnce": min(self.at_once, self.children),
            "waves": self.waves,
            "worstCaseHours": round(self.worst_hours, 3),
        }


def sizing(spec: PipelineSpec, capacity: Capacity) -> list[JobSizing]:
    """Each array job of ``spec`` against ``capacity`` (none when its size is unknown)."""
    if capacity.cores is None and not capacity.environments:
        return []
    return [
        JobSizing(
            key=job.key,
            children=job.array_size,
            vcpus=job.vcpus,
            memory_mib=job.memory_mib,
            # SEQUENTIAL children run one after another, whatever the capacity.
            at_once=1 if _sequential(job) else capacity.at_once(job.vcpus, job.memory_mib),
            hours_per_attempt=job.timeout_seconds / 3600,
            attempts=job.retry_attempts,
        )
        for job in spec
        if job.array_size is not None
    ]


def _sequential(job: JobSpec) -> bool:
    return any(d.type is DependencyType.SEQUENTIAL for d in job.depends_on)


def format_sizing(capacity: Capacity, sized: Sequence[JobSizing]) -> list[str]:
    if not sized:
        return [f"capacity unknown ({capacity.description}): no children at once to show"]
    lines = [f"capacity ({capacity.description}):"]
    for job in sized:
        if not job.at_once:
            lines.append(
                f"  {job.key}: {job.children:,} x {job.vcpus:g} vCPU / {job.memory_mib:,} MiB: "
                "no child fits; it would wait in RUNNABLE"
            )
            continue
        at_once = min(job.at_once, job.children)
        lines.append(
            f"  {job.key}: {job.children:,} children, at most {at_once:,} at once -> "
            f"{job.waves:,} wave{'s' * (job.waves != 1)}; worst case {job.waves:,} x "
            f"{job.hours_per_attempt:g} h x {job.attempts} attempts = {job.worst_hours:,.1f} h"
        )
    return lines


def default_capacity() -> Capacity:
    """The queue a pipeline deployed with the construct's defaults has."""
    return Capacity(
        f"the library's default compute environments, maxvCpus {DEFAULT_MAX_VCPUS} each",
        tuple(
            Environment(name, DEFAULT_MAX_VCPUS, tuple(INSTANCE_TYPES[t] for t in types))
            for name, types in (
                ("MemoryOptimized", DEFAULT_MEMORY_INSTANCE_TYPES),
                ("CpuOptimized", DEFAULT_CPU_INSTANCE_TYPES),
            )
        ),
    )


def queue_environments(batch: BatchApi, queue: str) -> list[Environment]:
    """The queue's compute environments, as DescribeJobQueues and DescribeComputeEnvironments
    say (one call each)."""
    queues = batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
    if not queues:
        raise SpecError(f"job queue {queue} does not exist; check --stack/--queue and --region")
    arns = [e["computeEnvironment"] for e in queues[0].get("computeEnvironmentOrder", [])]
    described = (
        batch.describe_compute_environments(computeEnvironments=arns)["computeEnvironments"]
        if arns
        else []
    )
    found = []
    for environment in described:
        resources: Mapping[str, Any] = environment.get("computeResources") or {}
        if not resources.get("maxvCpus"):
            continue  # unmanaged, or without a limit to size against
        names = list(resources.get("instanceTypes", []))
        found.append(
            Environment(
                str(environment.get("computeEnvironmentName", "")),
                int(resources.get("maxvCpus", 0)),
                tuple(INSTANCE_TYPES[n] for n in names if n in INSTANCE_TYPES),
                tuple(n for n in names if n not in INSTANCE_TYPES),
            )
        )
    return found
