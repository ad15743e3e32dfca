"""What the local AWS Batch endpoint holds besides jobs: compute environments, job queues and
job definitions with their revisions, named and described as AWS Batch names and describes
them.

A compute environment here is bookkeeping: every job runs on this machine, within its vCPU
budget. Its ``state`` matters (a DISABLED environment places no job), its instance types and
``maxvCpus`` are only reported back. A job definition's image is recorded, never pulled.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.batch_facts import (
    SERVICE_LINKED_ROLE,
    SERVICE_LINKED_ROLE_PATH,
    RetryRule,
)
from pipeline.local.batch.checks import (
    check_compute_environment,
    check_compute_environment_update,
    check_environment,
    check_name,
    check_queue_environments,
    check_retry_strategy,
    check_tags,
    check_timeout,
    check_vcpu_bounds,
)
from pipeline.local.batch.exceptions import BatchClientError

DEFAULT_LOG_GROUP = "/aws/batch/job"
"""Where AWS Batch sends a job's output when its definition names no log group."""


@dataclass(frozen=True)
class Place:
    """The account and region every ARN of the endpoint carries."""

    account: str
    region: str

    def arn(self, resource: str) -> str:
        return f"arn:aws:batch:{self.region}:{self.account}:{resource}"


@dataclass
class ComputeEnvironment:
    name: str
    arn: str
    request: dict[str, Any]
    state: str = "ENABLED"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """What it launches: EC2, SPOT, FARGATE or FARGATE_SPOT (an unmanaged one: EC2)."""
        return str((self.request.get("computeResources") or {}).get("type") or "EC2")

    @property
    def ecs_cluster_arn(self) -> str:
        """Every environment places its jobs on one ECS cluster; here, this machine."""
        return self.arn.replace(":batch:", ":ecs:").replace(
            "compute-environment/", "cluster/AWSBatch-"
        )

    @property
    def container_instance_arn(self) -> str:
        """The ECS container instance the environment's jobs run on (AttemptContainerDetail
        ``containerInstanceArn``): this machine, one instance per environment, in ECS's
        ``container-instance/<cluster>/<id>`` form, its ID fixed by the environment's ARN."""
        prefix, cluster = self.ecs_cluster_arn.split(":cluster/", 1)
        instance = uuid.uuid5(uuid.NAMESPACE_URL, self.arn).hex
        return f"{prefix}:container-instance/{cluster}/{instance}"

    def describe(self) -> dict[str, Any]:
        described = {
            "computeEnvironmentName": self.name,
            "computeEnvironmentArn": self.arn,
            "ecsClusterArn": self.ecs_cluster_arn,
            "containerOrchestrationType": "ECS",
            "type": self.request.get("type", "MANAGED"),
            "state": self.state,
            "status": "VALID",
            "statusReason": "ComputeEnvironment Healthy",
            "tags": dict(self.tags),
        }
        for key in ("computeResources", "unmanagedvCpus", "updatePolicy", "context", "ecsSettings"):
            if key in self.request:
                described[key] = self.request[key]
        described["serviceRole"] = self.service_role_arn
        return described

    @property
    def service_role_arn(self) -> str:
        """``serviceRole`` as an ARN: Batch's service-linked role when none was given ("that
        role is used by default"), a role name as a role on the path / ("Batch assumes that
        your ARN doesn't use the service-role path prefix"; CreateComputeEnvironment
        serviceRole)."""
        role = str(self.request.get("serviceRole") or "")
        if role.startswith("arn:"):
            return role
        _, partition, _, _, account, _ = self.arn.split(":", 5)
        path = f"{SERVICE_LINKED_ROLE_PATH}{SERVICE_LINKED_ROLE}" if not role else f"/{role}"
        return f"arn:{partition}:iam::{account}:role{path.replace('//', '/')}"


@dataclass
class JobQueue:
    name: str
    arn: str
    request: dict[str, Any]
    order: list[tuple[int, ComputeEnvironment]]
    """``computeEnvironmentOrder``: each environment with its ``order`` as given, in
    ascending order ("Compute environments are tried in ascending order",
    ComputeEnvironmentOrder)."""
    state: str = "ENABLED"
    priority: int = 1
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def environments(self) -> list[ComputeEnvironment]:
        return [environment for _, environment in self.order]

    @property
    def places_jobs(self) -> bool:
        """Whether a RUNNABLE job of this queue may start: some compute environment of it is
        ENABLED (AWS Batch places no job in a DISABLED one)."""
        return any(e.state == "ENABLED" for e in self.environments)

    @property
    def placing_environment(self) -> ComputeEnvironment:
        """Where a job of the queue is placed: its first ENABLED environment in order (the
        first one, when a job started while none was)."""
        enabled = [e for e in self.environments if e.state == "ENABLED"]
        return (enabled or self.environments)[0]

    def describe(self) -> dict[str, Any]:
        return {
            "jobQueueName": self.name,
            "jobQueueArn": self.arn,
            "state": self.state,
            "status": "VALID",
            "statusReason": "JobQueue Healthy",
            "priority": self.priority,
            # The orders as given, not renumbered: a client that sends them back in
            # UpdateJobQueue keeps them.
            "computeEnvironmentOrder": [
                {"order": order, "computeEnvironment": e.arn} for order, e in self.order
            ],
            "jobStateTimeLimitActions": self.request.get("jobStateTimeLimitActions", []),
            "tags": dict(self.tags),
        }


@dataclass
class JobDefinition:
    """One revision of a job definition, as RegisterJobDefinition received it."""

    name: str
    revision: int
    arn: str
    request: dict[str, Any]
    status: str = "ACTIVE"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def container(self) -> dict[str, Any]:
        return dict(self.request.get("containerProperties") or {})

    @property
    def command(self) -> list[str]:
        return [str(a) for a in self.container.get("command") or []]

    @property
    def environment(self) -> dict[str, str]:
        return {e["name"]: e["value"] for e in self.container.get("environment") or []}

    @property
    def parameters(self) -> dict[str, str]:
        return dict(self.request.get("parameters") or {})

    @property
    def vcpus(self) -> float:
        return resources_of(self.container)[0]

    @property
    def memory_mib(self) -> int:
        return resources_of(self.container)[1]

    @property
    def attempts(self) -> int:
        return int((self.request.get("retryStrategy") or {}).get("attempts") or 1)

    @property
    def retry_rules(self) -> tuple[RetryRule, ...]:
        return retry_rules(self.request.get("retryStrategy"))

    @property
    def timeout_seconds(self) -> int | None:
        return (self.request.get("timeout") or {}).get("attemptDurationSeconds") or None

    @property
    def propagate_tags(self) -> bool:
        return bool(self.request.get("propagateTags"))

    def log_place(self) -> tuple[str, str]:
        """(log group, stream prefix) of the ``awslogs`` driver: the definition's options, or
        AWS Batch's defaults (``/aws/batch/job``, the definition's name)."""
        options = (self.container.get("logConfiguration") or {}).get("options") or {}
        return (
            str(options.get("awslogs-group") or DEFAULT_LOG_GROUP),
            str(options.get("awslogs-stream-prefix") or self.name),
        )

    def describe(self) -> dict[str, Any]:
        described = {
            key: value
            for key, value in self.request.items()
            if key not in ("jobDefinitionName", "tags")
        }
        described.update(
            jobDefinitionName=self.name,
            jobDefinitionArn=self.arn,
            revision=self.revision,
            status=self.status,
            tags=dict(self.tags),
        )
        return described


def resources_of(container: Mapping[str, Any]) -> tuple[float, int]:
    """(vCPUs, MiB) from ``resourceRequirements``, or the deprecated ``vcpus``/``memory``
    fields, which AWS Batch still maps to resource requirements."""
    vcpus: float | None = None
    memory: int | None = None
    for requirement in container.get("resourceRequirements") or []:
        if requirement.get("type") == "VCPU":
            vcpus = float(requirement["value"])
        elif requirement.get("type") == "MEMORY":
            memory = int(requirement["value"])
    if vcpus is None and container.get("vcpus") is not None:
        vcpus = float(container["vcpus"])
    if memory is None and container.get("memory") is not None:
        memory = int(container["memory"])
    return (vcpus or 1.0), (memory or 2048)


def retry_rules(strategy: Mapping[str, Any] | None) -> tuple[RetryRule, ...]:
    """A ``retryStrategy``'s ``evaluateOnExit`` entries as rules (actions are not case
    sensitive in the API)."""
    return tuple(
        RetryRule(
            str(entry.get("action", "")).upper(),
            on_status_reason=entry.get("onStatusReason"),
            on_reason=entry.get("onReason"),
            on_exit_code=entry.get("onExitCode"),
        )
        for entry in (strategy or {}).get("evaluateOnExit") or []
    )


class Registry:
    """Compute environments, job queues and job definitions by name, ARN and revision."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self.environments: dict[str, ComputeEnvironment] = {}
        self.queues: dict[str, JobQueue] = {}
        self.definitions: dict[str, list[JobDefinition]] = {}

    # --- compute environments -----------------------------------------------------------------

    def create_compute_environment(self, request: dict[str, Any]) -> dict[str, Any]:
        check_compute_environment(request)
        name = _required(request, "computeEnvironmentName")
        if name in self.environments:
            raise BatchClientError(f"Object already exists: compute environment {name}")
        environment = ComputeEnvironment(
            name,
            self.place.arn(f"compute-environment/{name}"),
            request,
            state=_state(request.get("state", "ENABLED")),
            tags=dict(request.get("tags") or {}),
        )
        self.environments[name] = environment
        return {"computeEnvironmentName": name, "computeEnvironmentArn": environment.arn}

    def environment(self, reference: str) -> ComputeEnvironment:
        name = reference.rsplit("/", 1)[-1]
        found = self.environments.get(name)
        if found is None or reference not in (name, found.arn):
            raise BatchClientError(f"Compute environment {reference} does not exist")
        return found

    def update_compute_environment(self, request: dict[str, Any]) -> dict[str, Any]:
        """UpdateComputeEnvironment applies every member the API Reference documents as
        updatable: ``state``, ``serviceRole``, ``unmanagedvCpus``, ``computeResources``
        (merged into the environment's), ``updatePolicy``, ``context`` and ``ecsSettings``.
        What Batch would refuse is refused, before anything changes
        (:func:`.checks.check_compute_environment_update`)."""
        environment = self.environment(_required(request, "computeEnvironment"))
        check_compute_environment_update(environment.request, request)
        state = _state(request["state"]) if "state" in request else environment.state
        resources = {
            **(environment.request.get("computeResources") or {}),
            **(request.get("computeResources") or {}),
        }
        check_vcpu_bounds(resources)
        environment.state = state
        if request.get("computeResources"):
            environment.request["computeResources"] = resources
        for key in ("serviceRole", "unmanagedvCpus", "context", "ecsSettings"):
            if key in request:
                environment.request[key] = request[key]
        if "updatePolicy" in request:
            environment.request["updatePolicy"] = {
                **(environment.request.get("updatePolicy") or {}),
                **request["updatePolicy"],
            }
        return {
            "computeEnvironmentName": environment.name,
            "computeEnvironmentArn": environment.arn,
        }

    def delete_compute_environment(self, request: dict[str, Any]) -> dict[str, Any]:
        """As AWS Batch deletes one: "you must set its state to DISABLED ... and
        disassociate it from any job queues" first (DeleteComputeEnvironment)."""
        environment = self.environment(_required(request, "computeEnvironment"))
        if environment.state != "DISABLED":
            raise BatchClientError(
                f"Compute environment {environment.name} must be DISABLED before it is deleted"
            )
        using = sorted(q.name for q in self.queues.values() if environment in q.environments)
        if using:
            raise BatchClientError(
                f"Compute environment {environment.name} is still used by job queue "
                f"{', '.join(using)}; remove it from their computeEnvironmentOrder first"
            )
        del self.environments[environment.name]
        return {}

    def describe_compute_environments(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted = request.get("computeEnvironments")
        found = (
            [self.environments[e.rsplit("/", 1)[-1]] for e in wanted if self._has_environment(e)]
            if wanted
            else list(self.environments.values())
        )
        page, token = _page(found, request)
        return {"computeEnvironments": [e.describe() for e in page], **token}

    def _has_environment(self, reference: str) -> bool:
        try:
            self.environment(reference)
        except BatchClientError:
            return False
        return True

    # --- job queues -----------------------------------------------------------------------------

    def create_job_queue(self, request: dict[str, Any]) -> dict[str, Any]:
        name = check_name(request.get("jobQueueName"), "jobQueueName")
        check_tags(request.get("tags"))
        if name in self.queues:
            raise BatchClientError(f"Object already exists: job queue {name}")
        queue = JobQueue(
            name,
            self.place.arn(f"job-queue/{name}"),
            request,
            self._ordered_environments(request.get("computeEnvironmentOrder") or []),
            state=_state(request.get("state", "ENABLED")),
            priority=int(request.get("priority", 1)),
            tags=dict(request.get("tags") or {}),
        )
        self.queues[name] = queue
        return {"jobQueueName": name, "jobQueueArn": queue.arn}

    def _ordered_environments(
        self, order: Sequence[Mapping[str, Any]]
    ) -> list[tuple[int, ComputeEnvironment]]:
        ranked = sorted(order, key=lambda entry: int(entry.get("order", 0)))
        environments = [
            (int(entry.get("order", 0)), self.environment(str(entry["computeEnvironment"])))
            for entry in ranked
        ]
        check_queue_environments([e.kind for _, e in environments])
        return environments

    def queue(self, reference: str) -> JobQueue:
        name = reference.rsplit("/", 1)[-1]
        found = self.queues.get(name)
        if found is None or reference not in (name, found.arn):
            raise BatchClientError(f"Job Queue {reference} does not exist")
        return found

    def update_job_queue(self, request: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(_required(request, "jobQueue"))
        if "state" in request:
            queue.state = _state(request["state"])
        if "priority" in request:
            queue.priority = int(request["priority"])
        if request.get("computeEnvironmentOrder"):
            queue.order = self._ordered_environments(request["computeEnvironmentOrder"])
        return {"jobQueueName": queue.name, "jobQueueArn": queue.arn}

    def delete_job_queue(self, request: dict[str, Any]) -> dict[str, Any]:
        """As AWS Batch deletes one: "You must first disable submissions for a queue with
        the UpdateJobQueue operation" (DeleteJobQueue). Its jobs are the caller's to end."""
        queue = self.queue(_required(request, "jobQueue"))
        if queue.state != "DISABLED":
            raise BatchClientError(f"Job queue {queue.name} must be DISABLED before it is deleted")
        del self.queues[queue.name]
        return {}

    def describe_job_queues(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted = request.get("jobQueues")
        found = []
        for reference in wanted or list(self.queues):
            try:
                found.append(self.queue(reference))
            except BatchClientError:
                continue
        page, token = _page(found, request)
        return {"jobQueues": [q.describe() for q in page], **token}

    # --- job definitions ------------------------------------------------------------------------

    def register_job_definition(self, request: dict[str, Any]) -> dict[str, Any]:
        name = _required(request, "jobDefinitionName")
        if request.get("type", "container") != "container":
            raise BatchClientError(
                f"job definition type {request.get('type')!r} is not served locally; "
                "register a container job definition"
            )
        container = request.get("containerProperties") or {}
        if not container.get("image"):
            raise BatchClientError("containerProperties.image is required")
        check_name(name, "jobDefinitionName")
        check_retry_strategy(request.get("retryStrategy"))
        check_timeout(request.get("timeout"))
        check_environment(container.get("environment"), "containerProperties")
        check_tags(request.get("tags"))
        revisions = self.definitions.setdefault(name, [])
        revision = len(revisions) + 1
        definition = JobDefinition(
            name,
            revision,
            self.place.arn(f"job-definition/{name}:{revision}"),
            dict(request),
            tags=dict(request.get("tags") or {}),
        )
        revisions.append(definition)
        return {
            "jobDefinitionName": name,
            "jobDefinitionArn": definition.arn,
            "revision": revision,
        }

    def definition(self, reference: str, *, active_only: bool = True) -> JobDefinition:
        """A definition by ARN, ``name:revision`` or ``name`` (its newest ACTIVE revision)."""
        tail = reference.split("job-definition/", 1)[-1] if reference.startswith("arn:") else None
        name, _, revision = (tail or reference).partition(":")
        revisions = self.definitions.get(name, [])
        chosen: JobDefinition | None = None
        if revision:
            if revision.isdigit() and 0 < int(revision) <= len(revisions):
                chosen = revisions[int(revision) - 1]
        else:
            active = [d for d in revisions if d.status == "ACTIVE"]
            chosen = active[-1] if active else None
        if chosen is None or (tail is not None and chosen.arn != reference):
            raise BatchClientError(f"Job definition {reference} does not exist")
        if active_only and chosen.status != "ACTIVE":
            raise BatchClientError(f"Job definition {reference} is INACTIVE")
        return chosen

    def deregister_job_definition(self, request: dict[str, Any]) -> dict[str, Any]:
        self.definition(_required(request, "jobDefinition"), active_only=False).status = "INACTIVE"
        return {}

    def describe_job_definitions(self, request: dict[str, Any]) -> dict[str, Any]:
        everything = [d for revisions in self.definitions.values() for d in revisions]
        if request.get("jobDefinitions"):
            found = []
            for reference in request["jobDefinitions"]:
                # Each entry is `name:revision` or a revision's ARN (DescribeJobDefinitions,
                # AWS Batch API Reference); AWS answers nothing for a bare name, which names
                # no revision (boto3#2908, aws/aws-sdk#94), unlike SubmitJob, which takes one.
                if ":" not in str(reference):
                    continue
                try:
                    found.append(self.definition(str(reference), active_only=False))
                except BatchClientError:
                    continue
        elif request.get("jobDefinitionName"):
            found = list(self.definitions.get(str(request["jobDefinitionName"]), []))
        else:
            found = everything
        if request.get("status"):
            found = [d for d in found if d.status == request["status"]]
        page, token = _page(found, request)
        return {"jobDefinitions": [d.describe() for d in page], **token}

    # --- tags -----------------------------------------------------------------------------------

    def tagged(self, arn: str) -> dict[str, str] | None:
        """The tags of the environment, queue or definition ``arn`` names (None: none such)."""
        for environment in self.environments.values():
            if environment.arn == arn:
                return environment.tags
        for queue in self.queues.values():
            if queue.arn == arn:
                return queue.tags
        for revisions in self.definitions.values():
            for definition in revisions:
                if definition.arn == arn:
                    return definition.tags
        return None


def _required(request: Mapping[str, Any], name: str) -> str:
    value = request.get(name)
    if not value:
        raise BatchClientError(f"{name} is required")
    return str(value)


def _state(value: object) -> str:
    if value not in ("ENABLED", "DISABLED"):
        raise BatchClientError(f"state must be ENABLED or DISABLED; got {value!r}")
    return str(value)


PAGE = 100


def _page(items: Sequence[Any], request: Mapping[str, Any]) -> tuple[list[Any], dict[str, str]]:
    """A page of ``items`` as AWS Batch pages its listings: ``maxResults`` (default 100) from
    the position ``nextToken`` names; a ``nextToken`` when more are left."""
    size = int(request.get("maxResults") or PAGE)
    start = page_token(request.get("nextToken"))
    end = start + max(size, 1)
    token = {"nextToken": str(end)} if end < len(items) else {}
    return list(items[start:end]), token


def page_token(value: object) -> int:
    if value in (None, ""):
        return 0
    if not str(value).isdigit():
        raise BatchClientError(f"nextToken {value!r} is not valid")
    return int(str(value))


def ceil_vcpus(vcpus: float) -> int:
    """Cores a job takes on this machine: its vCPUs rounded up (0.25 and 0.5 take one)."""
    return max(1, math.ceil(vcpus))
