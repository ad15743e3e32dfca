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


PRICE_DATE = "2025-01"
PRICE_REGION = "us-east-1"
"""The prices below are AWS's published Linux On-Demand prices per hour in this region at this
date (they could not be re-checked from this project's machines, which have no internet). Other
regions and later dates differ: a cost computed from them is an estimate, and says so."""


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mib: int
    on_demand_usd_per_hour: float = 0.0

    @property
    def usable_memory_mib(self) -> int:
        """Memory a job can reserve on this instance (after the ECS headroom)."""
        return int(self.memory_mib * (1 - ECS_MEMORY_HEADROOM))

    def fits(self, vcpus: float, memory_mib: int) -> bool:
        return vcpus <= self.vcpus and memory_mib <= self.usable_memory_mib

    def share(self, vcpus: float, memory_mib: int) -> float:
        """The fraction of this instance one job of that size occupies (its vCPUs or its
        memory, whichever fills the instance first)."""
        return max(vcpus / self.vcpus, memory_mib / self.usable_memory_mib)

    def child_usd_per_hour(self, vcpus: float, memory_mib: int) -> float:
        """An hour of one job of that size on this instance: its share of the On-Demand
        price, as if the rest of the instance were used by other jobs (no idle time)."""
        return self.on_demand_usd_per_hour * min(self.share(vcpus, memory_mib), 1.0)


def cheapest_fit(
    types: Iterable[InstanceType], vcpus: float, memory_mib: int
) -> InstanceType | None:
    """The priced type of ``types`` on which an hour of one job of that size costs least
    (None: no priced type fits it)."""
    fitting = [t for t in types if t.on_demand_usd_per_hour > 0 and t.fits(vcpus, memory_mib)]
    return min(fitting, key=lambda t: t.child_usd_per_hour(vcpus, memory_mib), default=None)


def _gib(n: int) -> int:
    return n * 1024


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        # Compute optimized (2 GiB per vCPU): JobB's 32-vCPU children.
        InstanceType("c6i.8xlarge", 32, _gib(64), 1.36),
        InstanceType("c6i.12xlarge", 48, _gib(96), 2.04),
        InstanceType("c6i.16xlarge", 64, _gib(128), 2.72),
        InstanceType("c7i.8xlarge", 32, _gib(64), 1.428),
        InstanceType("c7i.16xlarge", 64, _gib(128), 2.856),
        # Memory optimized (8 GiB per vCPU): JobC's and JobD's 32 GiB children. The 2xlarge is
        # the smallest size with headroom for 32768 MiB; r6i.xlarge (32 GiB) would never fit.
        InstanceType("r6i.xlarge", 4, _gib(32), 0.252),
        InstanceType("r6i.2xlarge", 8, _gib(64), 0.504),
        InstanceType("r6i.4xlarge", 16, _gib(128), 1.008),
        InstanceType("r6i.8xlarge", 32, _gib(256), 2.016),
        InstanceType("r7i.2xlarge", 8, _gib(64), 0.5292),
        InstanceType("r7i.4xlarge", 16, _gib(128), 1.0584),
        # General purpose, for consumers that bring their own instance types.
        InstanceType("m6i.large", 2, _gib(8), 0.096),
        InstanceType("m6i.xlarge", 4, _gib(16), 0.192),
        InstanceType("m6i.2xlarge", 8, _gib(32), 0.384),
        InstanceType("m6i.4xlarge", 16, _gib(64), 0.768),
        InstanceType("m6i.8xlarge", 32, _gib(128), 1.536),
    )
}

DEFAULT_MAX_VCPUS = 256
"""Each compute environment's maxvCpus when the construct is given none."""
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
