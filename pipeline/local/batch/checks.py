"""What the engine refuses of a request, as AWS Batch refuses it: each check raises
:class:`.exceptions.BatchClientError` (400 ``ClientException``) with a message that says what
is wrong. The limits are AWS Batch's (:mod:`pipeline.batch_facts`); the rules are the API
Reference's for SubmitJob, CreateComputeEnvironment and CreateJobQueue.

Types come first: a request whose members are not what botocore's model of the API says
(a string ``maxResults``, a list where an object goes) is refused before any rule is applied,
so a malformed request is a 400, never an error of the engine's own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from pipeline.batch_facts import (
    DEFAULT_ALLOCATION_STRATEGY,
    FARGATE_UPDATES,
    MAX_ARRAY_SIZE,
    MAX_ATTEMPTS,
    MAX_COMPUTE_ENVIRONMENTS_PER_QUEUE,
    MAX_DEPENDENCIES,
    MAX_EVALUATE_ON_EXIT,
    MIN_ARRAY_SIZE,
    MIN_ATTEMPTS,
    MIN_TIMEOUT_SECONDS,
    RESERVED_VARIABLE_PREFIX,
    SCALING_UPDATES,
    SERVICE_LINKED_ROLE,
    DependencyType,
)
from pipeline.local.batch.exceptions import BatchClientError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""Job, compute environment and queue names: 1-128 letters, numbers, hyphens, underscores."""
MAX_TAGS = 50
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
FARGATE = frozenset({"FARGATE", "FARGATE_SPOT"})
EC2 = frozenset({"EC2", "SPOT"})


@cache
def _model() -> Any:
    import botocore.session  # lazy: the model is read once, when the first request comes

    return botocore.session.get_session().get_service_model("batch")


def check_types(operation: str, request: Mapping[str, Any]) -> None:
    """``request`` has the members botocore's model of ``operation`` declares, of their
    types, the required ones present. Members the model does not know are left alone (a
    newer client may send them)."""
    from botocore.validate import ParamValidator

    shape = _model().operation_model(operation).input_shape
    if shape is None:
        return
    report = ParamValidator().validate(dict(request), shape)
    problems = [
        line.strip()
        for line in report.generate_report().splitlines()
        if line.strip() and not line.strip().startswith("Unknown parameter")
    ]
    if problems:
        raise BatchClientError("; ".join(problems))


def check_name(value: object, what: str) -> str:
    name = str(value or "")
    if not NAME.fullmatch(name):
        raise BatchClientError(
            f"{what} {name!r} must be 1-128 letters, numbers, hyphens or underscores, "
            "starting with a letter or number"
        )
    return name


def check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags as TagResource, SubmitJob and the Create calls take them."""
    tags = dict(tags or {})
    if len(tags) > MAX_TAGS:
        raise BatchClientError(f"A resource can have at most {MAX_TAGS} tags; got {len(tags)}")
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY or len(str(value)) > MAX_TAG_VALUE:
            raise BatchClientError(
                f"Tag {key!r}: keys are 1-{MAX_TAG_KEY} characters, values at most {MAX_TAG_VALUE}"
            )
        if key.lower().startswith("aws:"):
            raise BatchClientError(f"Tag {key!r}: the aws: prefix is reserved for AWS's use")
    return {key: str(value) for key, value in tags.items()}


def check_retry_strategy(strategy: Mapping[str, Any] | None) -> None:
    """A ``retryStrategy``: 1 to 10 attempts, at most five ``evaluateOnExit`` rules, each
    RETRY or EXIT."""
    strategy = strategy or {}
    attempts = strategy.get("attempts")
    if attempts is not None and not MIN_ATTEMPTS <= int(attempts) <= MAX_ATTEMPTS:
        raise BatchClientError(
            f"retryStrategy.attempts must be between {MIN_ATTEMPTS} and {MAX_ATTEMPTS}"
        )
    rules = list(strategy.get("evaluateOnExit") or [])
    if len(rules) > MAX_EVALUATE_ON_EXIT:
        raise BatchClientError(
            f"retryStrategy.evaluateOnExit has more than {MAX_EVALUATE_ON_EXIT} entries"
        )
    for rule in rules:
        if str(rule.get("action", "")).upper() not in ("RETRY", "EXIT"):
            raise BatchClientError("retryStrategy.evaluateOnExit[].action must be RETRY or EXIT")


def check_timeout(timeout: Mapping[str, Any] | None) -> None:
    seconds = (timeout or {}).get("attemptDurationSeconds")
    if seconds is not None and int(seconds) < MIN_TIMEOUT_SECONDS:
        raise BatchClientError(
            f"timeout.attemptDurationSeconds must be at least {MIN_TIMEOUT_SECONDS} seconds"
        )


def check_environment(environment: Any, what: str) -> None:
    """No variable a job definition or an override sets may start with ``AWS_BATCH``:
    "This naming convention is reserved for variables that Batch sets" (KeyValuePair)."""
    for entry in environment or []:
        name = str(entry.get("name") or "")
        if name.startswith(RESERVED_VARIABLE_PREFIX[:-1]):
            raise BatchClientError(
                f"{what}: environment variable {name!r} starts with AWS_BATCH, which is "
                "reserved for variables that AWS Batch sets"
            )


def check_submit_job(request: Mapping[str, Any]) -> int | None:
    """What SubmitJob refuses of ``request`` without looking at other jobs; its array size."""
    check_name(request.get("jobName"), "jobName")
    size = (request.get("arrayProperties") or {}).get("size")
    if size is not None and not MIN_ARRAY_SIZE <= int(size) <= MAX_ARRAY_SIZE:
        raise BatchClientError(
            f"Array size must be between {MIN_ARRAY_SIZE} and {MAX_ARRAY_SIZE}; got {size}"
        )
    depends_on = list(request.get("dependsOn") or [])
    if len(depends_on) > MAX_DEPENDENCIES:
        raise BatchClientError(
            f"A job can depend on at most {MAX_DEPENDENCIES} jobs; got {len(depends_on)}"
        )
    for dependency in depends_on:
        kind = dependency.get("type", DependencyType.STANDARD.value)
        if kind not in set(DependencyType):
            raise BatchClientError(f"Dependency type {kind!r} is not valid")
        if kind == DependencyType.SEQUENTIAL:
            if size is None:
                raise BatchClientError("A SEQUENTIAL dependency needs an array job")
            if dependency.get("jobId"):
                raise BatchClientError("A SEQUENTIAL dependency names no jobId")
        elif not dependency.get("jobId"):
            raise BatchClientError(f"A {kind} dependency names the jobId it waits for")
    check_retry_strategy(request.get("retryStrategy"))
    check_timeout(request.get("timeout"))
    check_tags(request.get("tags"))
    check_environment(
        (request.get("containerOverrides") or {}).get("environment"), "containerOverrides"
    )
    return None if size is None else int(size)


def check_compute_environment(request: Mapping[str, Any]) -> None:
    """CreateComputeEnvironment: a MANAGED environment says what to launch, within vCPU
    bounds that make sense."""
    check_name(request.get("computeEnvironmentName"), "computeEnvironmentName")
    kind = request.get("type")
    if kind not in ("MANAGED", "UNMANAGED"):
        raise BatchClientError(f"type must be MANAGED or UNMANAGED; got {kind!r}")
    check_tags(request.get("tags"))
    resources = request.get("computeResources")
    if kind == "UNMANAGED":
        return
    if request.get("unmanagedvCpus") is not None:
        # "This parameter is only supported when the type parameter is set to UNMANAGED"
        # (CreateComputeEnvironment unmanagedvCpus).
        raise BatchClientError("unmanagedvCpus is for UNMANAGED compute environments only")
    if not resources:
        raise BatchClientError("A MANAGED compute environment needs computeResources")
    if resources.get("type") not in EC2 | FARGATE:
        raise BatchClientError(
            "computeResources.type must be EC2, SPOT, FARGATE or FARGATE_SPOT; got "
            f"{resources.get('type')!r}"
        )
    if resources.get("maxvCpus") is None:
        raise BatchClientError("computeResources.maxvCpus is required")
    if not resources.get("subnets"):
        raise BatchClientError("computeResources.subnets is required")
    if resources["type"] in EC2 and not resources.get("instanceRole"):
        # "This parameter is required for Amazon EC2 instances types" (ComputeResource
        # instanceRole); Fargate takes none.
        raise BatchClientError(
            "computeResources.instanceRole is required for EC2 and SPOT compute resources: "
            "the ECS instance profile their instances run with (ecsInstanceRole, say)"
        )
    check_vcpu_bounds(resources)


def service_linked(role: object) -> bool:
    """Whether a compute environment's ``serviceRole`` is Batch's service-linked role, which
    one created without a role uses (CreateComputeEnvironment ``serviceRole``)."""
    return not role or str(role).rstrip("/").rsplit("/", 1)[-1] == SERVICE_LINKED_ROLE


def check_compute_environment_update(current: Mapping[str, Any], update: Mapping[str, Any]) -> None:
    """What UpdateComputeEnvironment (``update``) may change of the environment ``current``
    describes (its request, as updated so far), as the API Reference and the User Guide's
    "Updating compute environments" say; a change Batch does not make is refused, never
    dropped."""
    managed = current.get("type") == "MANAGED"
    if update.get("unmanagedvCpus") is not None and managed:
        # "Don't specify this parameter for a managed compute environment" (unmanagedvCpus).
        raise BatchClientError("unmanagedvCpus is for UNMANAGED compute environments only")
    if update.get("eksConfiguration"):
        # "Only specify this parameter if the compute environment's
        # containerOrchestrationType is EKS" (eksConfiguration); every one here is ECS.
        raise BatchClientError("eksConfiguration is for EKS compute environments; this is ECS")
    role = update.get("serviceRole", current.get("serviceRole"))
    if service_linked(role) != service_linked(current.get("serviceRole")):
        # "If the compute environment has a service-linked role, it can't be changed to use
        # a regular IAM role. Likewise, ..." (UpdateComputeEnvironment serviceRole).
        raise BatchClientError(
            "serviceRole cannot change between the service-linked role "
            f"({SERVICE_LINKED_ROLE}) and a regular IAM role"
        )
    changes = dict(update.get("computeResources") or {})
    if not changes:
        return
    if not managed:
        raise BatchClientError("An UNMANAGED compute environment has no computeResources")
    resources = current.get("computeResources") or {}
    if resources.get("type") in FARGATE:
        refused = sorted(set(changes) - FARGATE_UPDATES)
        if refused:
            raise BatchClientError(
                f"computeResources {', '.join(refused)} cannot be updated on a Fargate compute "
                f"environment; {', '.join(sorted(FARGATE_UPDATES))} can"
            )
        return
    infrastructure = sorted(set(changes) - SCALING_UPDATES)
    if not infrastructure:
        return
    # An infrastructure update "requires the AWSServiceRoleForBatch service-linked role and
    # an allocation strategy of BEST_FIT_PROGRESSIVE, SPOT_CAPACITY_OPTIMIZED, or
    # SPOT_PRICE_CAPACITY_OPTIMIZED" ("Perform infrastructure updates", AWS Batch User Guide).
    strategy = resources.get("allocationStrategy") or DEFAULT_ALLOCATION_STRATEGY
    if not service_linked(role) or DEFAULT_ALLOCATION_STRATEGY in (
        strategy,
        changes.get("allocationStrategy"),
    ):
        raise BatchClientError(
            f"Changing computeResources {', '.join(infrastructure)} is an infrastructure "
            f"update, which needs the {SERVICE_LINKED_ROLE} service role and an allocation "
            f"strategy other than {DEFAULT_ALLOCATION_STRATEGY} (this environment has "
            f"{'the service-linked role' if service_linked(role) else role} and {strategy})"
        )
    if changes.get("type") not in (None, *EC2):
        raise BatchClientError(
            "computeResources.type of an EC2 or SPOT environment stays EC2 or SPOT"
        )


def check_vcpu_bounds(resources: Mapping[str, Any]) -> None:
    low, high = resources.get("minvCpus"), resources.get("maxvCpus")
    desired = resources.get("desiredvCpus")
    if low is not None and high is not None and int(low) > int(high):
        raise BatchClientError(
            f"computeResources.minvCpus ({low}) must not be above maxvCpus ({high})"
        )
    if desired is not None and (
        (low is not None and int(desired) < int(low))
        or (high is not None and int(desired) > int(high))
    ):
        raise BatchClientError("computeResources.desiredvCpus must be within minvCpus..maxvCpus")


def check_queue_environments(kinds: list[str]) -> None:
    """A queue orders 1 to 3 compute environments, all EC2 (EC2, SPOT, unmanaged) or all
    Fargate: "You can't mix compute environment architecture types" (CreateJobQueue)."""
    if not 1 <= len(kinds) <= MAX_COMPUTE_ENVIRONMENTS_PER_QUEUE:
        raise BatchClientError(
            f"computeEnvironmentOrder must name 1 to {MAX_COMPUTE_ENVIRONMENTS_PER_QUEUE} "
            f"compute environments; got {len(kinds)}"
        )
    if {k in FARGATE for k in kinds} == {True, False}:
        raise BatchClientError(
            "computeEnvironmentOrder mixes EC2 and Fargate compute environments; a queue's "
            "environments must all be one or the other"
        )
