"""Why a run's jobs wait in RUNNABLE: the likely reason per job, in one line, with what to do.

Each reason comes from the real API answers: the queue and its compute environments
(DescribeJobQueues, DescribeComputeEnvironments: state, status and its reason, maxvCpus against
desiredvCpus, Spot), the fit of the job on the environments' instance types (the pre-flight
check), and the job's position at the front of the queue (GetJobQueueSnapshot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.document import PipelineDocument
from pipeline.runs.preflight import queue_instance_types
from pipeline.runs.progress import JobProgress, find_run

if TYPE_CHECKING:
    from pipeline.runs.api import BatchApi


@dataclass(frozen=True)
class Finding:
    job: str
    kind: str
    """queue-disabled, environment-disabled, environment-invalid, no-fit, max-vcpus, spot,
    queue-position."""
    reason: str
    action: str

    def as_json(self) -> dict[str, str]:
        return {"job": self.job, "kind": self.kind, "reason": self.reason, "action": self.action}


def waiting_jobs(run: dict[str, JobProgress]) -> list[JobProgress]:
    """The run's jobs (or arrays with children) waiting to be placed."""
    return [p for p in run.values() if p.status == "RUNNABLE" or p.children.get("RUNNABLE")]


def diagnose(batch: BatchApi, document: PipelineDocument, run_id: str) -> list[Finding]:
    run = find_run(batch, document.queue, run_id, document.spec)
    waiting = waiting_jobs(run)
    if not waiting:
        return []
    queues = batch.describe_job_queues(jobQueues=[document.queue])["jobQueues"]
    shared: list[tuple[str, str, str]] = []
    environments: list[Any] = []
    if queues:
        queue = queues[0]
        if queue.get("state") == "DISABLED":
            shared.append(
                (
                    "queue-disabled",
                    f"job queue {queue['jobQueueName']} is DISABLED",
                    "enable it (UpdateJobQueue state=ENABLED)",
                )
            )
        arns = [e["computeEnvironment"] for e in queue.get("computeEnvironmentOrder", [])]
        if arns:
            environments = list(
                batch.describe_compute_environments(computeEnvironments=arns)["computeEnvironments"]
            )
    for environment in environments:
        name = environment.get("computeEnvironmentName", "?")
        resources = environment.get("computeResources") or {}
        if environment.get("state") == "DISABLED":
            shared.append(
                (
                    "environment-disabled",
                    f"compute environment {name} is DISABLED",
                    "enable it (UpdateComputeEnvironment state=ENABLED)",
                )
            )
        if environment.get("status") == "INVALID":
            shared.append(
                (
                    "environment-invalid",
                    f"compute environment {name} is INVALID: "
                    f"{environment.get('statusReason') or 'no reason given'}",
                    "fix what the reason names (instance role, subnets, security groups, launch "
                    "template), then update the environment",
                )
            )
        maximum, desired = resources.get("maxvCpus"), resources.get("desiredvCpus")
        if maximum and desired is not None and desired >= maximum:
            shared.append(
                (
                    "max-vcpus",
                    f"compute environment {name} is at its maxvCpus ({maximum}) with jobs running",
                    "wait for them, or raise maxvCpus (the max_vcpus prop)",
                )
            )
        reason = str(environment.get("statusReason") or "")
        if resources.get("type") in ("SPOT", "FARGATE_SPOT") and (
            "capacity" in reason.lower() or "spot" in reason.lower()
        ):
            shared.append(
                (
                    "spot",
                    f"Spot capacity is unavailable to {name}: {reason}",
                    "allow more instance types or subnets (Availability Zones), or run On-Demand",
                )
            )
    known, unknown, _ = queue_instance_types(batch, document.queue)
    positions = _front_of_queue(batch, document.queue)
    findings: list[Finding] = []
    for job in waiting:
        spec = document.spec.job(job.key)
        findings += [Finding(job.key, kind, reason, action) for kind, reason, action in shared]
        if known and not unknown and not any(t.fits(spec.vcpus, spec.memory_mib) for t in known):
            findings.append(
                Finding(
                    job.key,
                    "no-fit",
                    f"no instance type of the queue fits {spec.vcpus:g} vCPU and "
                    f"{spec.memory_mib:,} MiB (types: {', '.join(sorted(t.name for t in known))})",
                    "add a larger instance type to the compute environments, or lower the job's "
                    "resources",
                )
            )
        position = _position(positions, job.job_id)
        if position is not None:
            findings.append(
                Finding(
                    job.key,
                    "queue-position",
                    f"position {position + 1} of {len(positions)} at the front of the queue",
                    f"it waits behind {position} job(s) of higher priority or earlier "
                    "submission; nothing is wrong"
                    if not shared
                    else "see the reasons above",
                )
            )
    return findings


def _front_of_queue(batch: BatchApi, queue: str) -> list[str]:
    """Job ARNs at the front of the queue, in order (empty where the API is not available)."""
    try:
        snapshot = batch.get_job_queue_snapshot(jobQueue=queue)
    except (ClientError, BotoCoreError):
        return []
    front = snapshot.get("frontOfQueue") or {}
    return [str(j.get("jobArn", "")) for j in front.get("jobs", [])]


def _position(front: list[str], job_id: str) -> int | None:
    for position, arn in enumerate(front):
        if arn.endswith(f"/{job_id}") or f"/{job_id}:" in arn:
            return position
    return None
