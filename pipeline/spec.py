"""The five jobs of the AWS Batch "Example Array Job Workflow", as plain data.

The single source of truth for job names, resources, array sizes, dependency types, commands,
parameters, the steps each job runs, and what each job may touch. The constructs, the submitter,
the local mode and the tests all read it; none restates a job name, a size or a dependency type.
It imports nothing from aws-cdk-lib or boto3, so job programs and the CLI load it cheaply.

The workflow text (AWS Batch User Guide) gives its SubmitJob requests with the deprecated
``containerOverrides.vcpus/memory`` and with JSON syntax errors; the intent is kept here and the
resources are expressed as ``resourceRequirements`` (see :meth:`JobSpec.resource_requirements`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pipeline import contract
from pipeline.batch_facts import (
    CANNOT_PULL_CONTAINER,
    HOST_TERMINATED_PATTERN,
    MAX_ATTEMPTS,
    MAX_DEPENDENCIES,
    MIN_TIMEOUT_SECONDS,
    DependencyType,
    RetryRule,
)
from pipeline.contract import RUN_PREFIX_PATTERN, VALIDATION_STEPS
from pipeline.errors import SpecError
from pipeline.limits import check_array_size
from pipeline.steps import DEFAULT_STEPS, PipelineSteps

DEFAULT_ARRAY_SIZE = 10_000
"""Children of JobB and JobC in the workflow; one per manifest shard written by JobA."""
OBJECTS_PER_CHILD = 100
"""A run sized to its input (``--array-size auto``, a new run's default) gets one JobB and
JobC child per this many objects, so a container's start is paid for by work: AWS Batch's
guide says a job of a few seconds may take longer to schedule than to run, and suggests
grouping work into jobs of 3-5 minutes ("When to use AWS Batch"). A target, not a
measurement: lower it for slow objects (``--objects-per-child``)."""
CONTAINER_START_SECONDS = 30
"""An assumption (AWS documents no figure): seconds from a child's placement on a running
instance to its program's start (the scheduler's pass and the container's start, the image
already on the instance). Predictions count it once per child."""
INSTANCE_START_SECONDS = 180
"""An assumption: seconds before the first job runs on compute environments scaled to zero
(minvCpus 0, as the construct deploys them): an instance's launch and boot, the ECS agent's
registration and the image's pull. Predictions count it once per run."""
QUEUE_NAME = "ProdQueue"
"""The job queue's name in the workflow; a pipeline's ``name_prefix`` is put in front of it."""

SOURCE_BUCKET = "SourceBucket"
RECIPIENT = "Recipient"
"""JobE's parameters in the workflow (``Ref::SourceBucket``, ``Ref::Recipient``)."""

JOB_USER_ID = 10001
"""The uid every job container runs as (job definitions set ``user``; the default image's
Dockerfile creates it). The hosts' firewall rejects instance-metadata requests from any uid but
root, so a job, whatever its image, cannot read the instance role's credentials."""


@dataclass(frozen=True)
class Dependency:
    """One ``dependsOn`` entry. ``on`` is the key of the job waited for (None for SEQUENTIAL)."""

    type: DependencyType
    on: str | None = None

    def __post_init__(self) -> None:
        if (self.type is DependencyType.SEQUENTIAL) != (self.on is None):
            raise SpecError(
                "a SEQUENTIAL dependency names no job and every other dependency names one; "
                f"got type={self.type.value} on={self.on!r}"
            )


RETRY_RULES: tuple[RetryRule, ...] = (
    # The host went away (a Spot reclaim: "Host EC2 (instance i-...) terminated."): retry.
    RetryRule("RETRY", on_status_reason=HOST_TERMINATED_PATTERN),
    # The image could not be pulled on a fresh instance: retry.
    RetryRule("RETRY", on_reason=f"{CANNOT_PULL_CONTAINER}:*"),
    # The program met a transient failure (throttling, 5xx, timeouts) beyond its own retries.
    RetryRule("RETRY", on_exit_code=str(contract.EXIT_TRANSIENT)),
    # The program's own failure: retrying would fail the same way.
    RetryRule("EXIT", on_exit_code="*"),
    RetryRule("EXIT", on_reason="*"),
)
"""Every job's retry strategy: infrastructure failures and the programs' transient exit code
are retried, application errors are not. (Batch never retries an attempt that exceeded its
timeout.) AWS Batch takes at most five evaluateOnExit entries: these are five."""


@dataclass(frozen=True)
class JobSpec:
    """One job of the workflow: its definition, resources, array shape and dependencies."""

    key: str
    """Short, stable name used for job names, construct IDs and output keys (``JobA``)."""
    definition_name: str
    """Job definition name from the workflow (``JobA-list-and-validate``)."""
    description: str
    module: str
    """Python module the default image runs (``python -m <module>``)."""
    vcpus: float
    memory_mib: int
    array_size: int | None
    """Children of the array job, or None for a standard (non-array) job."""
    scales_with_input: bool
    """True where the array size is the pipeline's array size (JobB, JobC): one child per shard."""
    depends_on: tuple[Dependency, ...]
    parameters: tuple[str, ...]
    """Names of the job definition parameters the command refers to as ``Ref::<name>``."""
    timeout_seconds: int
    """Per attempt (per child for an array job); Batch terminates the attempt after this."""
    retry_attempts: int
    """Attempts including the first; only infrastructure failures are retried."""
    access: tuple[Access, ...] = ()
    """What the job may read, write and call; its job role grants exactly this. Run data
    lives under ``runs/<run-id>/`` in every bucket but BucketA, which is only read."""
    step: str | None = None
    """The part of the pipeline's steps the job runs: ``cpu``, ``memory``, ``aggregate``
    (its step) or ``check`` (the steps' checks); None for none."""
    environment: tuple[tuple[str, str], ...] = ()
    """Variables its job definition sets besides the pipeline's (a ``JobOverride``'s)."""
    command_override: tuple[str, ...] | None = None
    """The container command when not the job program's (a ``JobOverride``'s)."""

    @property
    def is_array(self) -> bool:
        return self.array_size is not None

    @property
    def command(self) -> tuple[str, ...]:
        """The container command; parameters are passed as ``--kebab-name Ref::Name``."""
        if self.command_override is not None:
            return self.command_override
        arguments: list[str] = []
        for name in self.parameters:
            arguments += [f"--{_kebab(name)}", f"Ref::{name}"]
        return ("python", "-m", self.module, *arguments)

    def resource_requirements(self) -> list[dict[str, str]]:
        """``resourceRequirements`` as SubmitJob and RegisterJobDefinition take them."""
        return [
            {"type": "VCPU", "value": _format_vcpus(self.vcpus)},
            {"type": "MEMORY", "value": str(self.memory_mib)},
        ]


@dataclass(frozen=True)
class PipelineResource:
    """A resource every job may need, named to the jobs through one environment variable."""

    key: str
    """Construct-facing name (``input_bucket``)."""
    env: str
    """Environment variable that carries the resource's name or ARN into the job container."""
    output: str
    """CfnOutput key on PipelineStack, for people and scripts (runs read the document)."""
    description: str
    kind: str = "bucket"
    """``bucket``, ``table`` or ``topic``: how an :class:`Access` to it becomes IAM."""


RESOURCES: tuple[PipelineResource, ...] = (
    PipelineResource(
        "input_bucket", contract.INPUT_BUCKET, "InputBucketName", "BucketA: the input objects"
    ),
    PipelineResource(
        "cpu_results_bucket",
        contract.CPU_RESULTS_BUCKET,
        "CpuResultsBucketName",
        "BucketB: manifests and JobB's results (intermediate)",
    ),
    PipelineResource(
        "memory_results_bucket",
        contract.MEMORY_RESULTS_BUCKET,
        "MemoryResultsBucketName",
        "BucketC: JobC's per-object outputs",
    ),
    PipelineResource(
        "output_bucket",
        contract.OUTPUT_BUCKET,
        "OutputBucketName",
        "Reports, rejects and the run summary",
    ),
    PipelineResource(
        "metadata_table",
        contract.METADATA_TABLE,
        "MetadataTableName",
        "JobC's metadata items",
        kind="table",
    ),
    PipelineResource(
        "notification_topic",
        contract.NOTIFICATION_TOPIC_ARN,
        "NotificationTopicArn",
        "Pipeline notifications",
        kind="topic",
    ),
)
"""The resources, in a fixed order; keys, environment variables and output keys are unique."""

BUCKET_KEYS: tuple[str, ...] = tuple(r.key for r in RESOURCES if r.kind == "bucket")
"""``input_bucket``, ``cpu_results_bucket``, ``memory_results_bucket``, ``output_bucket``."""


@dataclass(frozen=True)
class Access:
    """One thing a job may do to one pipeline resource; its job role is derived from these.

    For a bucket, ``s3:ListBucket`` is granted on the bucket and limited to ``prefix`` (no
    condition when ``prefix`` is None); object actions are granted on ``prefix`` (every
    object when None). For the table and the topic, the actions are granted on the resource.
    """

    resource: str
    """A key of :data:`RESOURCES`."""
    actions: tuple[str, ...]
    prefix: str | None = None

    def __post_init__(self) -> None:
        kinds = {r.key: r.kind for r in RESOURCES}
        if self.resource not in kinds:
            raise SpecError(f"access to unknown resource {self.resource!r}; see RESOURCES")
        lists = "s3:ListBucket" in self.actions
        if kinds[self.resource] == "bucket" and lists and self.actions != ("s3:ListBucket",):
            raise SpecError("s3:ListBucket is a bucket action; give it an Access of its own")

    @property
    def lists_bucket(self) -> bool:
        return self.actions == ("s3:ListBucket",)


def _list(bucket: str, prefix: str | None = None) -> Access:
    return Access(bucket, ("s3:ListBucket",), prefix)


SCRATCH = "/tmp"
"""The one writable path of a job container: the jobs stage objects only under ``TMPDIR``."""
SCRATCH_MOUNT_OPTIONS = ("rw", "exec", "nosuid", "nodev")
"""Stated, not left to the host's Docker. No setuid programs or devices there; ``exec``
because a step may run a tool it unpacks in scratch, and ``noexec`` would be no boundary for
code that already runs as the job (any step can run Python)."""


def scratch_size_mib(memory_mib: int) -> int:
    """The scratch tmpfs of a job with ``memory_mib``: half of it. A tmpfs lives in memory and
    what is written there counts against the container's memory limit, so the job's own
    processes keep the other half; the runner stages at most 80% of the free scratch at once
    and fails a child whose largest object does not fit, saying how much scratch it needs
    (raise the job's memory with ``job_overrides`` for larger objects)."""
    return max(1, memory_mib // 2)


ROLE_PATH_ROOT = "/array-job-pipeline/"
"""The IAM path under which a stack of this library makes a pipeline's job roles and
execution role, followed by the pipeline's queue name (see :func:`job_role_path`): ``--queue``
discovery checks that a revision's roles are there, which only someone allowed to create
roles on that path can arrange."""


def job_role_path(queue_name: str) -> str:
    """The IAM path of a pipeline's job roles and execution role
    (``/array-job-pipeline/ProdQueue/``)."""
    return f"{ROLE_PATH_ROOT}{queue_name}/"


RUN_TAG = "array-pipeline:run-id"
"""Tag the submitter puts on every job of a run (propagated to children) to find it again."""
PIPELINE_TAG = "array-pipeline:pipeline"
"""Tag on every job (propagated to children): the queue name. Grants stop only jobs with this
pipeline's value, and never let a grantee put it on a job another pipeline tagged."""
SUBMISSION_TAG = "array-pipeline:submission"
"""Tag unique to one SubmitJob request, to recognise its job if the answer was lost."""
STARTED_BY_TAG = "array-pipeline:started-by"
"""Tag the starter puts on a triggered run's jobs: ``schedule`` or ``upload`` (else none)."""
JOB_TAG_KEYS = (RUN_TAG, PIPELINE_TAG, SUBMISSION_TAG, STARTED_BY_TAG)
"""The only tag keys a grantee or the starter may set on a job (``aws:TagKeys``)."""
RUN_SETTINGS = (contract.MAX_OBJECT_BYTES, contract.INPUT_PREFIX)
"""Environment variables a run may set for all its jobs; a resume keeps the run's values."""


_COMMON_TIMEOUT = 3600


PIPELINE_JOBS: tuple[JobSpec, ...] = (
    JobSpec(
        key="JobA",
        definition_name="JobA-list-and-validate",
        description="Lists and validates BucketA; writes manifest shards and a rejects list.",
        module="pipeline.jobs.job_a",
        vcpus=1,
        memory_mib=2048,
        array_size=None,
        scales_with_input=False,
        depends_on=(),
        parameters=(),
        timeout_seconds=_COMMON_TIMEOUT,
        retry_attempts=3,
        access=(  # lists and validates the input; writes manifests and rejects
            _list("input_bucket"),
            Access("input_bucket", ("s3:GetObject",)),
            Access("cpu_results_bucket", ("s3:PutObject",), RUN_PREFIX_PATTERN),
            Access("output_bucket", ("s3:PutObject",), RUN_PREFIX_PATTERN),
        ),
    ),
    JobSpec(
        key="JobB",
        definition_name="JobB-CPU-Intensive-Processing",
        description="CPU-intensive work on each object of shard i; results to BucketB.",
        module="pipeline.jobs.job_b",
        vcpus=32,
        memory_mib=4096,
        array_size=DEFAULT_ARRAY_SIZE,
        scales_with_input=True,
        depends_on=(Dependency(DependencyType.STANDARD, "JobA"),),
        parameters=(),
        timeout_seconds=2 * _COMMON_TIMEOUT,
        retry_attempts=3,
        step="cpu",
        access=(  # reads its shard's inputs, writes results
            Access("input_bucket", ("s3:GetObject",)),
            Access(
                "cpu_results_bucket",
                # DeleteObject: a retry of the rejected objects removes the result of one
                # rejected again
                ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"),
                RUN_PREFIX_PATTERN,
            ),
            # a retry of the rejected objects reads the shard's JobC record (what the memory
            # step rejected, and the shard's records once JobE removed BucketB's)
            Access("memory_results_bucket", ("s3:GetObject",), RUN_PREFIX_PATTERN),
        ),
    ),
    JobSpec(
        key="JobC",
        definition_name="JobC-Memory-Intensive-Processing",
        description="Memory-intensive work on JobB child i's results; DynamoDB and BucketC.",
        module="pipeline.jobs.job_c",
        vcpus=1,
        memory_mib=32768,
        array_size=DEFAULT_ARRAY_SIZE,
        scales_with_input=True,
        depends_on=(Dependency(DependencyType.N_TO_N, "JobB"),),
        parameters=(),
        timeout_seconds=2 * _COMMON_TIMEOUT,
        retry_attempts=3,
        step="memory",
        access=(  # reads JobB's results, writes outputs and one item per object
            _list("cpu_results_bucket", RUN_PREFIX_PATTERN),
            Access("cpu_results_bucket", ("s3:GetObject",), RUN_PREFIX_PATTERN),
            Access(
                "memory_results_bucket",
                ("s3:PutObject", "s3:AbortMultipartUpload"),
                RUN_PREFIX_PATTERN,
            ),
            Access("metadata_table", ("dynamodb:BatchWriteItem", "dynamodb:PutItem")),
        ),
    ),
    JobSpec(
        key="JobD",
        definition_name="JobD-Sequential-Validation",
        description="Validation step AWS_BATCH_JOB_ARRAY_INDEX of ten, run one after another.",
        module="pipeline.jobs.job_d",
        vcpus=1,
        memory_mib=32768,
        array_size=VALIDATION_STEPS,
        scales_with_input=False,
        depends_on=(
            Dependency(DependencyType.STANDARD, "JobC"),
            Dependency(DependencyType.SEQUENTIAL),
        ),
        parameters=(),
        timeout_seconds=_COMMON_TIMEOUT // 2,
        retry_attempts=3,
        step="check",
        access=(  # reads everything, writes the validation report (and its shard view)
            _list("input_bucket"),
            Access("input_bucket", ("s3:GetObject",)),
            _list("cpu_results_bucket", RUN_PREFIX_PATTERN),
            _list("memory_results_bucket", RUN_PREFIX_PATTERN),
            _list("output_bucket", RUN_PREFIX_PATTERN),
            Access("cpu_results_bucket", ("s3:GetObject", "s3:PutObject"), RUN_PREFIX_PATTERN),
            Access("memory_results_bucket", ("s3:GetObject",), RUN_PREFIX_PATTERN),
            Access("output_bucket", ("s3:GetObject", "s3:PutObject"), RUN_PREFIX_PATTERN),
            Access(
                "metadata_table", ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query")
            ),
        ),
    ),
    JobSpec(
        key="JobE",
        definition_name="JobE-Cleanup-and-Notification",
        description="Removes the run's intermediates, writes the summary, notifies over SNS.",
        module="pipeline.jobs.job_e",
        vcpus=1,
        memory_mib=2048,
        array_size=None,
        scales_with_input=False,
        depends_on=(Dependency(DependencyType.STANDARD, "JobD"),),
        parameters=(SOURCE_BUCKET, RECIPIENT),
        timeout_seconds=_COMMON_TIMEOUT // 4,
        retry_attempts=3,
        step="aggregate",
        access=(  # removes intermediates, merges the rejects, aggregates, notifies
            _list("cpu_results_bucket", RUN_PREFIX_PATTERN),
            # reads JobD's shard view (the stages' records) before removing it
            Access("cpu_results_bucket", ("s3:GetObject", "s3:DeleteObject"), RUN_PREFIX_PATTERN),
            _list("memory_results_bucket", RUN_PREFIX_PATTERN),
            Access("memory_results_bucket", ("s3:GetObject",), RUN_PREFIX_PATTERN),
            Access("metadata_table", ("dynamodb:Query",)),  # the items, for the aggregate step
            _list("output_bucket", RUN_PREFIX_PATTERN),
            Access("output_bucket", ("s3:GetObject", "s3:PutObject"), RUN_PREFIX_PATTERN),
            Access("notification_topic", ("sns:Publish",)),
        ),
    ),
)


@dataclass(frozen=True)
class PipelineSpec:
    """The ordered jobs of one pipeline; every dependency points at an earlier job."""

    jobs: tuple[JobSpec, ...] = PIPELINE_JOBS
    steps: PipelineSteps = DEFAULT_STEPS
    """The work JobB, JobC and JobE run and the checks JobD adds (see :mod:`pipeline.steps`)."""

    def __post_init__(self) -> None:
        self.validate()

    def __iter__(self) -> Iterator[JobSpec]:
        return iter(self.jobs)

    def job(self, key: str) -> JobSpec:
        for job in self.jobs:
            if job.key == key:
                return job
        known = ", ".join(j.key for j in self.jobs)
        raise SpecError(f"unknown job {key!r}; the jobs are {known}")

    @property
    def array_size(self) -> int:
        """The array size of the jobs that scale with the input (JobB and JobC)."""
        sizes = {j.array_size for j in self.jobs if j.scales_with_input}
        (size,) = sizes  # validate() guarantees exactly one
        assert size is not None
        return size

    def with_array_size(self, size: int) -> PipelineSpec:
        """A copy whose input-scaled arrays (JobB, JobC) have ``size`` children."""
        check_array_size(size, "array_size")
        return replace(
            self,
            jobs=tuple(
                replace(j, array_size=size) if j.scales_with_input else j for j in self.jobs
            ),
        )

    def with_steps(self, steps: PipelineSteps) -> PipelineSpec:
        """A copy that runs ``steps``: each job that runs a step takes the step's vCPUs,
        memory and timeout where the step gives them (checked as the job's own are)."""
        jobs = []
        for job in self.jobs:
            step = steps.step_for(job.step) if job.step else None
            changes = {
                name: getattr(step, name)
                for name in ("vcpus", "memory_mib", "timeout_seconds")
                if step is not None and getattr(step, name) is not None
            }
            changed = replace(job, **changes)
            try:
                check_resources(changed)
            except SpecError as error:
                raise SpecError(f"the {job.step} step ({job.key}): {error}") from None
            jobs.append(changed)
        return replace(self, jobs=tuple(jobs), steps=steps)

    def environment_of(self, job: JobSpec) -> dict[str, str]:
        """What ``job``'s definition sets besides resources and array size: steps, override."""
        return {**(self.steps.environment(job.step) if job.step else {}), **dict(job.environment)}

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> PipelineSpec:
        """A copy with fields of the jobs named in ``overrides`` replaced: ``{"JobB":
        {"vcpus": 16, "memory_mib": 8192}}``. Only the deployable fields may change (vCPUs,
        memory, timeout, attempts, and the ``environment`` and ``command`` a ``JobOverride``
        sets); the copy is validated like the original."""
        allowed = {"vcpus", "memory_mib", "timeout_seconds", "retry_attempts"}
        allowed |= {"environment", "command"}
        for key, changes in overrides.items():
            self.job(key)
            unknown = set(changes) - allowed
            if unknown:
                raise SpecError(
                    f"{key}: {', '.join(sorted(unknown))} cannot be overridden; only "
                    f"{', '.join(sorted(allowed))}"
                )
        return replace(
            self,
            jobs=tuple(
                replace(j, **_job_changes(overrides[j.key])) if j.key in overrides else j
                for j in self.jobs
            ),
        )

    def validate(self) -> None:
        """Check the rules AWS Batch applies at SubmitJob, before anything is submitted."""
        seen: dict[str, JobSpec] = {}
        for job in self.jobs:
            if job.key in seen:
                raise SpecError(f"job key {job.key!r} appears twice; give each job its own key")
            check_resources(job)
            if job.array_size is not None:
                check_array_size(job.array_size, f"{job.key} array size")
            if len(job.depends_on) > MAX_DEPENDENCIES:
                raise SpecError(
                    f"{job.key} has {len(job.depends_on)} dependencies; AWS Batch allows at most "
                    f"{MAX_DEPENDENCIES}"
                )
            for dep in job.depends_on:
                _check_dependency(job, dep, seen)
            seen[job.key] = job
        input_sizes = {j.array_size for j in self.jobs if j.scales_with_input}
        if len(input_sizes) != 1:
            raise SpecError("the jobs that scale with the input must share one array size")


def _job_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in changes.items() if k not in ("environment", "command")}
    if "environment" in changes:
        fields["environment"] = tuple(sorted(dict(changes["environment"]).items()))
    if changes.get("command"):
        fields["command_override"] = tuple(changes["command"])
    return fields


def _check_dependency(job: JobSpec, dep: Dependency, earlier: Mapping[str, JobSpec]) -> None:
    if dep.type is DependencyType.SEQUENTIAL:
        if not job.is_array:
            raise SpecError(f"{job.key} has a SEQUENTIAL dependency but is not an array job")
        return
    assert dep.on is not None
    if dep.on not in earlier:
        raise SpecError(f"{job.key} depends on {dep.on!r}, which is not an earlier job")
    if dep.type is DependencyType.N_TO_N:
        other = earlier[dep.on]
        if not (job.is_array and other.is_array and job.array_size == other.array_size):
            raise SpecError(
                f"{job.key} is N_TO_N on {dep.on}: both must be array jobs of the same size "
                f"(got {job.array_size} and {other.array_size})"
            )


def check_resources(job: JobSpec) -> None:
    """Reject vCPU, memory, timeout and attempt values that RegisterJobDefinition would."""
    for name in ("vcpus", "memory_mib", "timeout_seconds", "retry_attempts"):
        value = getattr(job, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{job.key} {name} must be a number; got {value!r}")
        if not math.isfinite(value):
            raise SpecError(f"{job.key} {name} must be a finite number; got {value!r}")
    if job.timeout_seconds < MIN_TIMEOUT_SECONDS:
        raise SpecError(
            f"{job.key} timeout must be at least {MIN_TIMEOUT_SECONDS} seconds (AWS Batch's "
            f"minimum); got {job.timeout_seconds}"
        )
    if not 1 <= job.retry_attempts <= MAX_ATTEMPTS:
        raise SpecError(
            f"{job.key} attempts must be from 1 to {MAX_ATTEMPTS}; got {job.retry_attempts}"
        )
    if job.vcpus <= 0 or (job.vcpus < 1 and job.vcpus not in (0.25, 0.5)):
        raise SpecError(f"{job.key} vCPUs must be 0.25, 0.5 or a positive number; got {job.vcpus}")
    if job.memory_mib < 4:
        raise SpecError(f"{job.key} memory must be at least 4 MiB; got {job.memory_mib}")


def prefixed(prefix: str, name: str) -> str:
    """A Batch resource name with the pipeline's prefix (``ProdQueue`` or ``dev-ProdQueue``)."""
    return f"{prefix}-{name}" if prefix else name


def _kebab(name: str) -> str:  # SourceBucket -> source-bucket
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _format_vcpus(vcpus: float) -> str:
    return str(int(vcpus)) if float(vcpus).is_integer() else str(vcpus)


DEFAULT_SPEC = PipelineSpec()
"""The workflow as AWS documents it: array size 10,000, JobD's ten sequential checks."""
