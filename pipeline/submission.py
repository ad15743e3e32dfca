"""The five SubmitJob requests of a run, built from the spec. Pure: no AWS call here.

The requests keep the workflow's shape (jobName, jobQueue, jobDefinition, arrayProperties,
dependsOn, JobE's parameters) with the deprecated ``containerOverrides.vcpus/memory`` replaced by
``resourceRequirements``; the run id and resource names travel in
``containerOverrides.environment`` and the run id also as a tag propagated to every child.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from job_images.batch_jobs.contract import INDEX_MAP
from pipeline.spec import (
    DEFAULT_SPEC,
    QUEUE_NAME,
    RUN_TAG,
    DependencyType,
    JobSpec,
    PipelineSpec,
    RunEnv,
    SpecError,
    check_array_size,
    check_email,
    prefixed,
)

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
_S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")


@dataclass(frozen=True)
class Targets:
    """Where the jobs go: the queue and each job's definition (ARN, name or name:revision)."""

    queue: str
    job_definitions: Mapping[str, str]
    resources: Mapping[str, str] = field(default_factory=dict)
    """Resource environment variables (``PIPELINE_INPUT_BUCKET`` ...) to pass to every job;
    empty when the job definitions' own values should be used."""
    default_array_size: int | None = None
    log_group: str | None = None
    """CloudWatch log group of the jobs, for failure reports."""

    @classmethod
    def by_name(cls, *, queue: str | None = None, prefix: str = "") -> Targets:
        """Targets named as a pipeline with ``prefix`` names them (latest active revisions)."""
        return cls(
            queue=queue or prefixed(prefix, QUEUE_NAME),
            job_definitions={j.key: prefixed(prefix, j.definition_name) for j in DEFAULT_SPEC},
        )

    @property
    def output_bucket(self) -> str | None:
        return self.resources.get("PIPELINE_OUTPUT_BUCKET")


@dataclass(frozen=True)
class RunConfig:
    """What varies per run. Build with :func:`run_config`, which validates every field."""

    run_id: str
    spec: PipelineSpec
    parameters: Mapping[str, str]
    """JobE's parameters (``SourceBucket``, ``Recipient``) given for this run; a parameter left
    out keeps the job definition's default."""

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
    """Validate a run's inputs; raises :class:`SpecError` with a one-line message."""
    check_array_size(array_size, "--array-size")
    if run_id is not None and not _RUN_ID.fullmatch(run_id):
        raise SpecError(
            f"--run-id {run_id!r} must be 1-63 letters, digits or '-', starting with a letter "
            "or digit"
        )
    parameters: dict[str, str] = {}
    if source_bucket is not None:
        if not _S3_URL.fullmatch(source_bucket):
            raise SpecError(
                f"--source-bucket must be an s3:// URL like s3://my-output-bucket; "
                f"got {source_bucket!r}"
            )
        parameters["SourceBucket"] = source_bucket
    if recipient is not None:
        parameters["Recipient"] = check_email(recipient, "--recipient")
    return RunConfig(
        run_id=run_id or new_run_id(), spec=spec.with_array_size(array_size), parameters=parameters
    )


def placeholder_id(job_key: str) -> str:
    """The job ID stand-in the workflow text uses (``JobA_job_ID``), for dry runs."""
    return f"{job_key}_job_ID"


def build_request(
    job: JobSpec,
    targets: Targets,
    config: RunConfig,
    job_ids: Mapping[str, str],
    *,
    reruns: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """The SubmitJob request of ``job``; ``job_ids`` maps earlier jobs' keys to their IDs.

    ``reruns`` maps keys of array jobs re-run for their failed children only to the original
    indices: such a job becomes an array of that many children (a standard job for one), told
    its indices through ``PIPELINE_INDEX_MAP``; an N_TO_N dependency between two re-runs with
    the same indices stays N_TO_N, otherwise it waits for the whole job.
    """
    reruns = reruns or {}
    rerun = reruns.get(job.key)
    environment = {
        RunEnv.RUN_ID: config.run_id,
        RunEnv.ARRAY_SIZE: str(config.array_size),
        **targets.resources,
    }
    if rerun is not None:
        environment[INDEX_MAP] = ",".join(str(i) for i in rerun)
    request: dict[str, Any] = {
        "jobName": job.key,
        "jobQueue": targets.queue,
        "jobDefinition": targets.job_definitions[job.key],
    }
    if job.parameters:
        given = {p: config.parameters[p] for p in job.parameters if p in config.parameters}
        if given:
            request["parameters"] = given
    request["containerOverrides"] = {
        "resourceRequirements": job.resource_requirements(),
        "environment": [{"name": k, "value": v} for k, v in environment.items()],
    }
    size = job.array_size if rerun is None else len(rerun)
    is_array = job.array_size is not None and size is not None and size > 1
    if is_array:
        request["arrayProperties"] = {"size": size}
    depends_on = []
    for dependency in job.depends_on:
        if dependency.type is DependencyType.SEQUENTIAL:
            if is_array:
                depends_on.append({"type": "SEQUENTIAL"})
            continue
        assert dependency.on is not None
        entry = {"jobId": job_ids[dependency.on]}
        aligned = rerun == reruns.get(dependency.on) and is_array
        if dependency.type is DependencyType.N_TO_N and aligned:
            entry["type"] = "N_TO_N"
        depends_on.append(entry)
    if depends_on:
        request["dependsOn"] = depends_on
    request["tags"] = {RUN_TAG: config.run_id}
    request["propagateTags"] = True
    return request


def dry_run_requests(targets: Targets, config: RunConfig) -> list[dict[str, Any]]:
    """All five requests with the workflow's placeholders for the IDs not yet known."""
    ids = {job.key: placeholder_id(job.key) for job in config.spec}
    return [build_request(job, targets, config, ids) for job in config.spec]
