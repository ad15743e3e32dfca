"""Sizes of the EC2 instance types the pipeline's compute environments use.

AWS Batch places a job only on an instance whose *registered* capacity covers the job's vCPUs
and memory. The ECS agent registers less memory than the instance has (the OS, the agent and
the container runtime keep some), so a 32768 MiB job does not fit a 32 GiB instance: such a job
sits RUNNABLE forever with an empty status reason. This table lets the construct (at synth) and
the submitter (before SubmitJob) reject a job that fits nowhere, with a message that says so.

Plain data: no aws-cdk-lib or boto3 import.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ECS_MEMORY_HEADROOM = 0.10
"""Fraction of an instance's memory treated as unavailable to jobs.

The agent's registered memory is typically 3-7% below the instance's; 10% keeps a margin so a
job sized against this table is placed in practice, not only on paper.
"""


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mib: int

    @property
    def usable_memory_mib(self) -> int:
        """Memory a job can reserve on this instance (after the ECS headroom)."""
        return int(self.memory_mib * (1 - ECS_MEMORY_HEADROOM))

    def fits(self, vcpus: float, memory_mib: int) -> bool:
        return vcpus <= self.vcpus and memory_mib <= self.usable_memory_mib


def _gib(n: int) -> int:
    return n * 1024


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        # Compute optimized (2 GiB per vCPU): JobB's 32-vCPU children.
        InstanceType("c6i.8xlarge", 32, _gib(64)),
        InstanceType("c6i.12xlarge", 48, _gib(96)),
        InstanceType("c6i.16xlarge", 64, _gib(128)),
        InstanceType("c7i.8xlarge", 32, _gib(64)),
        InstanceType("c7i.16xlarge", 64, _gib(128)),
        # Memory optimized (8 GiB per vCPU): JobC's and JobD's 32 GiB children. The 2xlarge is
        # the smallest size with headroom for 32768 MiB; r6i.xlarge (32 GiB) would never fit.
        InstanceType("r6i.xlarge", 4, _gib(32)),
        InstanceType("r6i.2xlarge", 8, _gib(64)),
        InstanceType("r6i.4xlarge", 16, _gib(128)),
        InstanceType("r6i.8xlarge", 32, _gib(256)),
        InstanceType("r7i.2xlarge", 8, _gib(64)),
        InstanceType("r7i.4xlarge", 16, _gib(128)),
        # General purpose, for consumers that bring their own instance types.
        InstanceType("m6i.large", 2, _gib(8)),
        InstanceType("m6i.xlarge", 4, _gib(16)),
        InstanceType("m6i.2xlarge", 8, _gib(32)),
        InstanceType("m6i.4xlarge", 16, _gib(64)),
        InstanceType("m6i.8xlarge", 32, _gib(128)),
    )
}

DEFAULT_CPU_INSTANCE_TYPES: tuple[str, ...] = ("c6i.8xlarge", "c6i.12xlarge", "c6i.16xlarge")
DEFAULT_MEMORY_INSTANCE_TYPES: tuple[str, ...] = ("r6i.2xlarge", "r6i.4xlarge", "r6i.8xlarge")


class UnknownInstanceTypeError(ValueError):
    pass


def lookup(names: Iterable[str]) -> tuple[InstanceType, ...]:
    """The table rows for ``names``; an unknown name raises with the known ones listed."""
    found = []
    for name in names:
        if name not in INSTANCE_TYPES:
            known = ", ".join(sorted(INSTANCE_TYPES))
            raise UnknownInstanceTypeError(
                f"instance type {name!r} is not in pipeline/instances.py; use one of {known} "
                "or add its vCPUs and memory to the table"
            )
        found.append(INSTANCE_TYPES[name])
    return tuple(found)
