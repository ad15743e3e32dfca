"""Job queues and compute environments on the engine (:mod:`helpers.batch`), made as a stack or
an administrator makes them: CreateComputeEnvironment and CreateJobQueue through a Batch client,
so DescribeJobQueues, DescribeComputeEnvironments and GetJobQueueSnapshot are the engine's own
answers.

The engine reports every compute environment VALID and healthy: the health of the instances
behind one (an instance role that is not valid, Spot capacity that is not there) is not a thing
it models. :func:`report_health` puts that status on the engine's answer, as AWS reports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from helpers.batch import ACCOUNT


def managed_environment(
    client: Any,
    name: str,
    instance_types: Sequence[str] = ("r6i.8xlarge",),
    *,
    max_vcpus: int = 256,
    state: str = "ENABLED",
    **resources: Any,
) -> str:
    """A managed compute environment (EC2 unless ``resources`` say another ``type``) of
    ``instance_types`` and ``max_vcpus``; ``resources`` are merged into its computeResources.
    Returns its ARN."""
    return str(
        client.create_compute_environment(
            computeEnvironmentName=name,
            type="MANAGED",
            state=state,
            computeResources={
                "type": "EC2",
                "minvCpus": 0,
                "maxvCpus": max_vcpus,
                "instanceTypes": list(instance_types),
                "subnets": ["subnet-0local"],
                "securityGroupIds": ["sg-0local"],
                "instanceRole": f"arn:aws:iam::{ACCOUNT}:instance-profile/{name}",
                **resources,
            },
        )["computeEnvironmentArn"]
    )


def unmanaged_environment(client: Any, name: str) -> str:
    """An unmanaged compute environment (no computeResources); returns its ARN."""
    return str(
        client.create_compute_environment(
            computeEnvironmentName=name, type="UNMANAGED", state="ENABLED"
        )["computeEnvironmentArn"]
    )


def job_queue(client: Any, name: str, *environments: str) -> str:
    """A job queue on ``environments`` (ARNs), in that order; returns its ARN."""
    return str(
        client.create_job_queue(
            jobQueueName=name,
            priority=1,
            state="ENABLED",
            computeEnvironmentOrder=[
                {"order": order, "computeEnvironment": arn}
                for order, arn in enumerate(environments, start=1)
            ],
        )["jobQueueArn"]
    )


def report_health(client: Any, name: str, status: str, reason: str | None) -> None:
    """DescribeComputeEnvironments through ``client`` reports the environment ``name`` with
    ``status`` and ``reason`` (None: no statusReason), as AWS reports an environment whose
    instances cannot be launched; every other field is the engine's."""

    def health(parsed: dict[str, Any], **_: Any) -> None:
        for environment in parsed.get("computeEnvironments", []):
            if environment.get("computeEnvironmentName") == name:
                environment["status"] = status
                environment.pop("statusReason", None)
                if reason is not None:
                    environment["statusReason"] = reason

    client.meta.events.register("after-call.batch.DescribeComputeEnvironments", health)


def described_environments(client: Any) -> list[list[str]]:
    """The ``computeEnvironments`` of every DescribeComputeEnvironments sent through ``client``
    from now on, in a list that fills as they are sent."""
    asked: list[list[str]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        asked.append(list(params.get("computeEnvironments") or []))

    client.meta.events.register("before-parameter-build.batch.DescribeComputeEnvironments", record)
    return asked
