"""A job of the local AWS Batch endpoint: what SubmitJob asked for, resolved against its job
definition, and its state; described and summarized with AWS Batch's field names.

An array job is a parent with one child per index; the parent's status is derived from its
children's counts, kept as they change (never recounted), as AWS Batch derives it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.batch_facts import (
    ARRAY_CHILD_FAILED,
    DEPENDENCY_FAILED,
    STATUSES,
    TERMINAL,
    RetryRule,
)
from pipeline.local.batch.definitions import JobDefinition, JobQueue, resources_of, retry_rules
from pipeline.local.batch.faults import Fault

if TYPE_CHECKING:
    from pipeline.local.batch.processes import Forked


@dataclass(frozen=True)
class Resolved:
    """What one job runs with: its definition's values with SubmitJob's overrides applied."""

    command: tuple[str, ...]
    environment: dict[str, str]
    vcpus: float
    memory_mib: int
    attempts: int
    retry_rules: tuple[RetryRule, ...]
    retry_strategy: dict[str, Any]
    """The ``retryStrategy`` in force (SubmitJob's, else the definition's), as given."""
    timeout_seconds: int | None
    parameters: dict[str, str]

    @classmethod
    def of(cls, definition: JobDefinition, request: dict[str, Any]) -> Resolved:
        overrides = dict(request.get("containerOverrides") or {})
        container = definition.container
        merged_container = {**container}
        if "resourceRequirements" in overrides or "vcpus" in overrides or "memory" in overrides:
            # An override replaces the requirement it names; the deprecated vcpus/memory
            # fields are mapped to requirements, as AWS Batch still maps them.
            wanted = {r["type"]: r for r in container.get("resourceRequirements") or []}
            if container.get("vcpus") is not None and "VCPU" not in wanted:
                wanted["VCPU"] = {"type": "VCPU", "value": str(container["vcpus"])}
            if container.get("memory") is not None and "MEMORY" not in wanted:
                wanted["MEMORY"] = {"type": "MEMORY", "value": str(container["memory"])}
            for requirement in overrides.get("resourceRequirements") or []:
                wanted[requirement["type"]] = requirement
            if overrides.get("vcpus") is not None:
                wanted["VCPU"] = {"type": "VCPU", "value": str(overrides["vcpus"])}
            if overrides.get("memory") is not None:
                wanted["MEMORY"] = {"type": "MEMORY", "value": str(overrides["memory"])}
            merged_container = {"resourceRequirements": list(wanted.values())}
        vcpus, memory = resources_of(merged_container)
        strategy = request.get("retryStrategy") or definition.request.get("retryStrategy")
        timeout = (request.get("timeout") or {}).get("attemptDurationSeconds")
        return cls(
            command=tuple(str(a) for a in overrides.get("command") or definition.command),
            environment={
                **definition.environment,
                **{e["name"]: e["value"] for e in overrides.get("environment") or []},
            },
            vcpus=vcpus,
            memory_mib=memory,
            attempts=int((strategy or {}).get("attempts") or 1),
            retry_rules=retry_rules(strategy),
            retry_strategy={"attempts": 1, **(strategy or {})},
            timeout_seconds=int(timeout) if timeout else definition.timeout_seconds,
            parameters={**definition.parameters, **(request.get("parameters") or {})},
        )

    def resource_requirements(self) -> list[dict[str, str]]:
        vcpus = f"{self.vcpus:g}"
        return [
            {"type": "VCPU", "value": vcpus},
            {"type": "MEMORY", "value": str(self.memory_mib)},
        ]


@dataclass(eq=False)
class Job:
    """A job, an array parent or an array child."""

    job_id: str
    arn: str
    name: str
    queue: JobQueue
    definition: JobDefinition
    request: dict[str, Any]
    resolved: Resolved
    created_at: int
    parent: Job | None = None
    index: int | None = None
    children: list[Job] = field(default_factory=list)
    status: str = "SUBMITTED"
    status_reason: str | None = None
    started_at: int | None = None
    stopped_at: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    log_stream: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    stopped_by: str | None = None
    """``CancelJob`` or ``TerminateJob`` when a stop ended the job (``isCancelled``,
    ``isTerminated``)."""
    cancel_requested: str | None = None
    """The reason of a CancelJob that waits for the job's dependencies to end."""
    # --- scheduling state (not described) -----------------------------------------------------
    process: subprocess.Popen[bytes] | Forked | None = None
    cores: tuple[int, ...] = ()
    deadline: float | None = None
    fault: Fault | None = None
    counts: dict[str, int] = field(default_factory=dict)
    """An array parent's children by status, kept as they change."""
    unmet: int = 0
    """Dependencies not yet met; the job becomes RUNNABLE when this reaches 0."""

    @property
    def attempt(self) -> int:
        return len(self.attempts)

    @property
    def current_status(self) -> str:
        """A leaf's own status; an array parent's from its children's counts. As on AWS
        Batch, a parent is only ever SUBMITTED, PENDING, FAILED or SUCCEEDED: PENDING from
        the moment a child moves on, until every child has ended ("Array jobs", AWS Batch
        User Guide); how far its children are is in ``statusSummary``."""
        if not self.children:
            return self.status
        counts = self.counts
        ended = counts.get("SUCCEEDED", 0) + counts.get("FAILED", 0)
        if ended == len(self.children):
            return "FAILED" if counts.get("FAILED") else "SUCCEEDED"
        return "SUBMITTED" if counts.get("SUBMITTED") == len(self.children) else "PENDING"

    @property
    def leaves(self) -> list[Job]:
        return self.children or [self]

    @property
    def is_terminal(self) -> bool:
        return self.current_status in TERMINAL

    def parent_reason(self) -> str | None:
        """An ended array parent's status reason: the reason of a stop asked of the parent,
        a dependency failure when every failed child never ran for that reason, else the
        failure of a child."""
        if self.current_status != "FAILED":
            return None
        if self.stopped_by is not None and self.status_reason:
            return self.status_reason
        reasons = {c.status_reason for c in self.children if c.status == "FAILED"}
        return DEPENDENCY_FAILED if reasons == {DEPENDENCY_FAILED} else ARRAY_CHILD_FAILED

    # --- what the API shows -----------------------------------------------------------------

    def shown_tags(self) -> dict[str, str]:
        """The request's tags on the job; an array child shows its parent's when tags are
        propagated."""
        if self.parent is None:
            return dict(self.tags)
        return dict(self.parent.tags) if self.request.get("propagateTags") else {}

    def deprecated_resources(self) -> dict[str, int]:
        """The deprecated ``vcpus`` and ``memory`` as the definition or SubmitJob's
        ``containerOverrides`` gave them (an override wins): ContainerDetail still has both
        members, and AWS's describe-jobs example shows them (``"vcpus": 1``, ``"memory":
        128``) for a definition registered with them. What the job runs with is in
        ``resourceRequirements`` either way."""
        overrides = self.request.get("containerOverrides") or {}
        shown: dict[str, int] = {}
        for key in ("vcpus", "memory"):
            value = overrides.get(key)
            if value is None:
                value = self.definition.container.get(key)
            if value is not None:
                shown[key] = int(value)
        return shown

    def container_environment(self) -> list[dict[str, str]]:
        return [{"name": k, "value": v} for k, v in self.resolved.environment.items()]

    def describe(self) -> dict[str, Any]:
        status = self.current_status
        request = self.request
        described: dict[str, Any] = {
            "jobArn": self.arn,
            "jobName": self.name,
            "jobId": self.job_id,
            "jobQueue": self.queue.arn,
            "status": status,
            "attempts": [dict(a) for a in self.attempts],
            "createdAt": self.created_at,
            "retryStrategy": dict(self.resolved.retry_strategy),
            "dependsOn": list(request.get("dependsOn", [])),
            "jobDefinition": self.definition.arn,
            "parameters": dict(self.resolved.parameters),
            "tags": self.shown_tags(),
            "propagateTags": bool(request.get("propagateTags")),
            "platformCapabilities": ["EC2"],
        }
        if self.resolved.timeout_seconds:
            described["timeout"] = {"attemptDurationSeconds": self.resolved.timeout_seconds}
        container: dict[str, Any] = {
            # What AWS Batch answers for what a definition leaves out, then the definition's
            # own container properties (image, user, roles, log configuration, ...), then
            # what this job runs with once SubmitJob's overrides are applied.
            "volumes": [],
            "mountPoints": [],
            "ulimits": [],
            "secrets": [],
            "networkInterfaces": [],
            **{
                key: value
                for key, value in self.definition.container.items()
                if key not in ("vcpus", "memory")
            },
            **self.deprecated_resources(),
            "command": list(self.resolved.command),
            "environment": self.container_environment(),
            "resourceRequirements": self.resolved.resource_requirements(),
        }
        if self.attempts:
            # The job's container is its latest attempt's: its task and container instance
            # (ContainerDetail taskArn, containerInstanceArn).
            latest = self.attempts[-1]["container"]
            for key in ("taskArn", "containerInstanceArn"):
                if key in latest:
                    container[key] = latest[key]
        if self.children:
            described["arrayProperties"] = {
                "size": len(self.children),
                "statusSummary": {s: self.counts.get(s, 0) for s in STATUSES},
            }
            reason = self.parent_reason()
            if reason:
                described["statusReason"] = reason
        else:
            if self.index is not None:
                described["arrayProperties"] = {"index": self.index}
            if self.exit_code is not None:
                container["exitCode"] = self.exit_code
            if self.log_stream is not None:
                container["logStreamName"] = self.log_stream
            if self.status_reason:
                described["statusReason"] = self.status_reason
        described["container"] = container
        if self.started_at is not None:
            described["startedAt"] = self.started_at
        if self.stopped_at is not None:
            described["stoppedAt"] = self.stopped_at
        described.update(self.stop_flags())
        return described

    def stop_flags(self) -> dict[str, bool]:
        """``isCancelled`` or ``isTerminated``, once a stop ended the job."""
        if self.stopped_by is None or self.current_status != "FAILED":
            return {}
        return {"isTerminated" if self.stopped_by == "TerminateJob" else "isCancelled": True}

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "jobArn": self.arn,
            "jobId": self.job_id,
            "jobName": self.name,
            "createdAt": self.created_at,
            "status": self.current_status,
            "jobDefinition": self.definition.arn,
        }
        if self.children:
            summary["arrayProperties"] = {"size": len(self.children)}
            reason = self.parent_reason()
            if reason:
                summary["statusReason"] = reason
        else:
            if self.index is not None:
                summary["arrayProperties"] = {"index": self.index}
            if self.status_reason:
                summary["statusReason"] = self.status_reason
            if self.exit_code is not None:
                summary["container"] = {"exitCode": self.exit_code}
        if self.started_at is not None:
            summary["startedAt"] = self.started_at
        if self.stopped_at is not None:
            summary["stoppedAt"] = self.stopped_at
        summary.update(self.stop_flags())
        return summary
