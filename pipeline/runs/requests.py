"""The five SubmitJob requests of a run, built from the deployed pipeline. Pure: no AWS call.

The requests keep the workflow's shape (jobName, jobQueue, jobDefinition, arrayProperties,
dependsOn, JobE's parameters) with the deprecated ``containerOverrides.vcpus/memory`` replaced by
``resourceRequirements``; the run id and resource names travel in
``containerOverrides.environment`` and the run id also as a tag propagated to every child.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from pipeline import contract
from pipeline.batch_facts import DependencyType
from pipeline.contract import (
    INDEX_MAP,
    INPUT_PREFIX,
    MAX_OBJECT_BYTES,
    check_input_prefix,
    source_bucket_name,
)
from pipeline.document import PipelineDocument
from pipeline.errors import SpecError
from pipeline.limits import check_array_size, check_email
from pipeline.runs.autosize import DEPLOYED, GIVEN, RESUMED, SizeChoice, choose_size
from pipeline.spec import (
    DEFAULT_SPEC,
    OBJECTS_PER_CHILD,
    PIPELINE_TAG,
    RECIPIENT,
    RUN_SETTINGS,
    RUN_TAG,
    SOURCE_BUCKET,
    JobSpec,
    PipelineSpec,
)
from pipeline.steps import PipelineSteps, describe_steps

if TYPE_CHECKING:
    from mypy_boto3_batch.type_defs import (
        JobDependencyTypeDef,
        ResourceRequirementTypeDef,
        SubmitJobRequestTypeDef,
    )

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


@dataclass(frozen=True)
class RunConfig:
    """What varies per run. Build with :func:`run_config`, which validates every field."""

    run_id: str
    spec: PipelineSpec
    parameters: Mapping[str, str]
    """JobE's parameters (``SourceBucket``, ``Recipient``) given for this run; a parameter left
    out keeps the job definition's default."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """Job settings given for this run (``PIPELINE_MAX_OBJECT_BYTES``,
    ``PIPELINE_INPUT_PREFIX``), over the definitions'."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags besides the run's and the pipeline's (a triggered run's ``started-by``)."""
    size: SizeChoice | None = None
    """How the array size was chosen (given, the run's own, sized to the input, deployed)."""

    @property
    def array_size(self) -> int:
        return self.spec.array_size


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: ``20261125T183000-3fa2c1``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def run_config(
    *,
    array_size: int,
    run_id: str | None = None,
    source_bucket: str | None = None,
    recipient: str | None = None,
    spec: PipelineSpec = DEFAULT_SPEC,
) -> RunConfig:
    """Validate a run's inputs; raises :class:`SpecError` with a one-line message that names
    the field (``array_size``)."""
    checked = RunInputs(
        array_size=array_size, run_id=run_id, source_bucket=source_bucket, recipient=recipient
    ).checked()
    parameters: dict[str, str] = {}
    if checked.source_bucket is not None:
        parameters[SOURCE_BUCKET] = checked.source_bucket
    if checked.recipient is not None:
        parameters[RECIPIENT] = checked.recipient
    return RunConfig(
        run_id=run_id or new_run_id(),
        spec=spec.with_array_size(array_size),
        parameters=parameters,
        size=SizeChoice(array_size, GIVEN, spec.array_size),
    )


@dataclass(frozen=True)
class RunInputs:
    """What a user may give for a run; None leaves the choice to :func:`resolve_run`."""

    array_size: int | None = None
    """JobB's and JobC's children, exactly; None: a new run is sized to its input (see
    :mod:`pipeline.runs.autosize`) when ``input_objects`` is known, else the deployed size,
    and a resumed run keeps its own."""
    run_id: str | None = None
    source_bucket: str | None = None
    recipient: str | None = None
    max_object_bytes: int | None = None
    """JobA rejects larger objects (default: the job definition's: 5 GiB deployed, 1 MiB
    locally)."""
    input_prefix: str | None = None
    """Only BucketA's objects under this S3 prefix are inputs (default: the whole bucket)."""
    steps: PipelineSteps | None = None
    """The steps the user means the run to run; they must be the deployed pipeline's (a
    local run deploys them; a resume runs the run's own)."""
    objects_per_child: int | None = None
    """A run sized to its input gets one child per this many objects (default:
    :data:`pipeline.spec.OBJECTS_PER_CHILD`)."""
    input_objects: int | None = None
    """The objects of the run's input as JobA will shard them (a listing's count, see
    :func:`pipeline.runs.autosize.list_input`); with no ``array_size``, a new run is sized to
    them."""

    def checked(self) -> RunInputs:
        """These inputs, each checked on its own (no deployment needed); :class:`SpecError`
        names the first field that AWS Batch or a job would refuse."""
        if self.array_size is not None:
            check_array_size(self.array_size, "array_size")
        if self.run_id is not None and not _RUN_ID.fullmatch(self.run_id):
            raise SpecError(
                f"run_id {self.run_id!r} must be 1-63 letters, digits or '-', starting with a "
                "letter or digit",
                field="run_id",
            )
        if self.source_bucket is not None:
            try:
                source_bucket_name(self.source_bucket)  # the rule JobE applies
            except ValueError as error:
                raise SpecError(f"source_bucket: {error}", field="source_bucket") from None
        if self.recipient is not None:
            check_email(self.recipient, "recipient")
        size = self.max_object_bytes
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise SpecError(
                f"max_object_bytes must be a whole number above 0; got {size}",
                field="max_object_bytes",
            )
        if self.input_prefix is not None:
            try:
                check_input_prefix(self.input_prefix)
            except ValueError as error:
                raise SpecError(f"input_prefix: {error}", field="input_prefix") from None
        per_child = self.objects_per_child
        if per_child is not None:
            if isinstance(per_child, bool) or not isinstance(per_child, int) or per_child < 1:
                raise SpecError(
                    f"objects_per_child must be a whole number above 0; got {per_child}",
                    field="objects_per_child",
                )
            if self.array_size is not None:
                raise SpecError(
                    "objects_per_child sizes a run to its input, and array_size gives its size: "
                    "give one of them",
                    field="objects_per_child",
                )
        return self

    def with_run_id(self, run_id: str) -> RunInputs:
        return replace(self, run_id=run_id)


def resolve_run(
    document: PipelineDocument,
    inputs: RunInputs,
    *,
    previous_size: int | None = None,
    previous_parameters: Mapping[str, str] | None = None,
    previous_environment: Mapping[str, str] | None = None,
) -> RunConfig:
    """The run's configuration, one rule for every command and backend: what the user gave,
    else what an earlier attempt of the run used (resume), else the deployed pipeline's
    defaults (its array size; JobE's parameter defaults, SourceBucket being the output
    bucket). Raises :class:`SpecError` with a one-line message for a bad value."""
    previous = dict(previous_parameters or {})
    defaults = document.parameter_defaults("JobE")
    if SOURCE_BUCKET not in defaults and document.output_bucket:
        defaults[SOURCE_BUCKET] = f"s3://{document.output_bucket}"

    def pick(given: str | None, name: str) -> str | None:
        return given if given is not None else previous.get(name) or defaults.get(name) or None

    choice = choose_array_size(document, inputs, previous_size)
    config = run_config(
        array_size=choice.size,
        run_id=inputs.run_id,
        source_bucket=pick(inputs.source_bucket, SOURCE_BUCKET),
        recipient=pick(inputs.recipient, RECIPIENT),
        spec=document.spec,
    )
    inputs.checked()
    if inputs.steps is not None and inputs.steps != document.spec.steps:
        raise SpecError(
            f"--steps name other steps than {document.source} runs "
            f"({describe_steps(document.spec.steps)}): a run runs what is deployed (deploy "
            "yours with ArrayJobPipeline(steps=...)), and a resumed run its own steps; leave "
            "out --steps or deploy them",
            field="steps",
        )
    environment = {k: v for k, v in (previous_environment or {}).items() if k in RUN_SETTINGS and v}
    if inputs.max_object_bytes is not None:
        environment[MAX_OBJECT_BYTES] = str(inputs.max_object_bytes)
    if inputs.input_prefix is not None:
        environment[INPUT_PREFIX] = inputs.input_prefix
    return replace(config, environment=environment, size=choice)


def choose_array_size(
    document: PipelineDocument, inputs: RunInputs, previous_size: int | None = None
) -> SizeChoice:
    """A run's array size: the one given, else a resumed run's own, else sized to the input
    when it was listed (``inputs.input_objects``), else the deployed size."""
    deployed = document.spec.array_size
    if inputs.array_size is not None:
        return SizeChoice(inputs.array_size, GIVEN, deployed)
    if previous_size is not None:
        return SizeChoice(previous_size, RESUMED, deployed)
    if inputs.input_objects is not None:
        per_child = inputs.objects_per_child or OBJECTS_PER_CHILD
        return choose_size(inputs.input_objects, deployed=deployed, per_child=per_child)
    return SizeChoice(deployed, DEPLOYED, deployed)


def placeholder_id(job_key: str) -> str:
    """The job ID stand-in the workflow text uses (``JobA_job_ID``), for dry runs."""
    return f"{job_key}_job_ID"


def build_request(
    job: JobSpec,
    document: PipelineDocument,
    config: RunConfig,
    job_ids: Mapping[str, str],
    *,
    reruns: Mapping[str, Sequence[int]] | None = None,
) -> SubmitJobRequestTypeDef:
    """The SubmitJob request of ``job``; ``job_ids`` maps earlier jobs' keys to their IDs.

    ``reruns`` maps keys of array jobs re-run for their failed children only to the original
    indices: such a job becomes an array of that many children (a standard job for one), told
    its indices through ``PIPELINE_INDEX_MAP``; an N_TO_N dependency between two re-runs with
    the same indices stays N_TO_N, otherwise it waits for the whole job.
    """
    reruns = reruns or {}
    rerun = reruns.get(job.key)
    environment = {
        contract.RUN_ID: config.run_id,
        contract.ARRAY_SIZE: str(config.array_size),
        **document.resource_env,
        **config.environment,
    }
    if rerun is not None:
        environment[INDEX_MAP] = ",".join(str(i) for i in rerun)
    request: SubmitJobRequestTypeDef = {
        "jobName": job.key,
        "jobQueue": document.queue,
        "jobDefinition": document.job_definitions[job.key],
    }
    if job.parameters:
        given = {p: config.parameters[p] for p in job.parameters if p in config.parameters}
        if given:
            request["parameters"] = given
    request["containerOverrides"] = {
        "resourceRequirements": cast(
            "list[ResourceRequirementTypeDef]", job.resource_requirements()
        ),
        "environment": [{"name": k, "value": v} for k, v in environment.items()],
    }
    size = job.array_size if rerun is None else len(rerun)
    is_array = job.array_size is not None and size is not None and size > 1
    if is_array and size is not None:
        request["arrayProperties"] = {"size": size}
    depends_on: list[JobDependencyTypeDef] = []
    for dependency in job.depends_on:
        if dependency.type is DependencyType.SEQUENTIAL:
            if is_array:
                depends_on.append({"type": "SEQUENTIAL"})
            continue
        assert dependency.on is not None
        entry: JobDependencyTypeDef = {"jobId": job_ids[dependency.on]}
        aligned = rerun == reruns.get(dependency.on) and is_array
        if dependency.type is DependencyType.N_TO_N and aligned:
            entry["type"] = "N_TO_N"
        depends_on.append(entry)
    if depends_on:
        request["dependsOn"] = depends_on
    request["tags"] = {
        **config.tags,
        RUN_TAG: config.run_id,
        PIPELINE_TAG: document.queue_name or document.queue,
    }
    request["propagateTags"] = True
    return request


def dry_run_requests(
    document: PipelineDocument, config: RunConfig
) -> list[SubmitJobRequestTypeDef]:
    """All five requests with the workflow's placeholders for the IDs not yet known."""
    ids = {job.key: placeholder_id(job.key) for job in config.spec}
    return [build_request(job, document, config, ids) for job in config.spec]
