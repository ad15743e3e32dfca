"""Synth-time checks of ``ArrayJobPipeline``'s props: what CloudFormation, AWS Batch or a job
would refuse later, refused while the construct is built, in one line naming the prop."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from aws_cdk import Duration
from aws_cdk import aws_ecs as ecs

from pipeline.batch_facts import RESERVED_VARIABLE_PREFIX
from pipeline.constructs.job_definitions import JobOverride
from pipeline.errors import PipelineConfigError, SpecError
from pipeline.instances import InstanceType
from pipeline.spec import SCRATCH, PipelineSpec
from pipeline.steps import PipelineSteps

_T = TypeVar("_T")


def config_check(check: Callable[..., _T], *args: Any) -> _T:
    """Run a spec check; its SpecError becomes a PipelineConfigError with the same message."""
    try:
        return check(*args)
    except PipelineConfigError:
        raise
    except SpecError as error:
        raise PipelineConfigError(str(error)) from error


def apply_overrides(spec: PipelineSpec, overrides: Mapping[str, JobOverride]) -> PipelineSpec:
    try:
        return spec.with_overrides({key: o.spec_changes() for key, o in overrides.items()})
    except SpecError as error:
        raise PipelineConfigError(f"job_overrides: {error}") from error


def checked_steps(steps: PipelineSteps, image: ecs.ContainerImage | None) -> PipelineSteps:
    """``steps`` if they can work: each imports with the right signature, a step of your
    own runs in an image that has it (its own, or the pipeline's ``image``), and what its
    code imports is in that image (when ``job_image`` made it: see
    :mod:`pipeline.step_imports`)."""
    if not isinstance(steps, PipelineSteps):
        raise SpecError(f"steps must be a PipelineSteps object; got {type(steps).__name__}")
    steps.check()
    if image is not None:
        steps.with_image(image).check()  # the steps without an image of their own, in it
    parts = (("cpu", steps.cpu), ("memory", steps.memory), ("aggregate", steps.aggregate))
    for role, step in parts:
        if step is None or step.image is not None or image is not None:
            continue
        if step.kind == "python" and not str(step.target).startswith("pipeline."):
            raise SpecError(
                f"steps: the {role} step {step.label!r} is not in the library's image; build one "
                "with your code, image = job_image(scope, code=[...]), and give it to the steps "
                "with STEPS.with_image(image) (or to this step with Step.python(..., image=...))"
            )
    return steps


MIN_RUNNABLE_TIMEOUT = Duration.minutes(10)
MAX_RUNNABLE_TIMEOUT = Duration.hours(24)


def check_props(props: Mapping[str, Any], *, default_max_vcpus: int) -> None:
    """What CloudFormation or CDK would refuse only at deploy time (or with a jsii traceback),
    refused here in one line naming the prop."""
    max_vcpus = props.get("max_vcpus", default_max_vcpus)
    if isinstance(max_vcpus, bool) or not isinstance(max_vcpus, int) or max_vcpus < 1:
        raise PipelineConfigError(
            f"max_vcpus must be a whole number of at least 1; got {max_vcpus!r}"
        )
    timeout = props.get("runnable_timeout")
    if timeout is not None and not (
        MIN_RUNNABLE_TIMEOUT.to_seconds()
        <= timeout.to_seconds()
        <= MAX_RUNNABLE_TIMEOUT.to_seconds()
    ):
        raise PipelineConfigError(
            f"runnable_timeout must be from 10 minutes to 24 hours (AWS Batch's limits for "
            f"jobStateTimeLimitActions); got {timeout.to_seconds():g} seconds"
        )
    for name in ("cpu_instance_types", "memory_instance_types"):
        if name in props and not list(props[name]):
            raise PipelineConfigError(f"{name} is empty; name at least one instance type")
    expiration = props.get("intermediate_expiration")
    if expiration is not None and expiration.to_days() < 1:
        raise PipelineConfigError(
            "intermediate_expiration must be at least 1 day (S3 lifecycle expiration is in "
            f"whole days); got {expiration.to_seconds():g} seconds"
        )
    limit = props.get("trigger_max_vcpu_hours")
    if limit is not None and (
        isinstance(limit, bool)
        or not isinstance(limit, int | float)
        or not math.isfinite(limit)
        or limit <= 0
    ):
        raise PipelineConfigError(f"trigger_max_vcpu_hours must be a number above 0; got {limit!r}")
    for key, override in dict(props.get("job_overrides", {})).items():
        reserved = sorted(n for n in override.environment if n.startswith(RESERVED_VARIABLE_PREFIX))
        if reserved:
            raise PipelineConfigError(
                f"job_overrides: {key} sets {', '.join(reserved)}; AWS_BATCH_* variables are "
                "set by AWS Batch itself"
            )
        if "TMPDIR" in override.environment:
            raise PipelineConfigError(
                f"job_overrides: {key} sets TMPDIR; a job's root filesystem is read-only and "
                f"its one writable place is {SCRATCH} (a tmpfs), which TMPDIR names: remove it"
            )


def check_capacity(spec: PipelineSpec, instances: Sequence[InstanceType], max_vcpus: int) -> None:
    """Every job must fit one instance type of the queue's compute environments, and the
    environments must be allowed to grow large enough to start it."""
    biggest = max(instances, key=lambda i: (i.vcpus, i.usable_memory_mib))
    roomiest = max(instances, key=lambda i: (i.usable_memory_mib, i.vcpus))
    for job in spec:
        if not any(i.fits(job.vcpus, job.memory_mib) for i in instances):
            raise PipelineConfigError(
                f"steps/job_overrides/instance types: {job.key} needs {job.vcpus:g} vCPU and "
                f"{job.memory_mib:,} MiB, which no instance type of the queue fits (most vCPUs: "
                f"{biggest.name} {biggest.vcpus} vCPU; most usable memory: {roomiest.name} "
                f"{roomiest.usable_memory_mib:,} MiB); add a larger type to cpu_instance_types or "
                f"memory_instance_types, or lower {job.key}'s resources"
            )
        if job.vcpus > max_vcpus:
            raise PipelineConfigError(
                f"max_vcpus={max_vcpus} is below {job.key}'s {job.vcpus:g} vCPUs, so it could "
                f"never start; raise max_vcpus to at least {job.vcpus:g}"
            )
