"""The published pipeline: what a deployment offers every run, as one versioned document.

A :class:`PipelineDocument` is the effective pipeline a run submits to: the queue, each job's
definition (name and ARN) with the image, resources, timeout, attempts and array size it was
deployed with, the steps JobB, JobC and JobE run and JobD's checks, JobE's parameter defaults,
and the names of the buckets, table, topic and log group.

- ``PipelineStack`` publishes it as the JSON of one CloudFormation output,
  :data:`DOCUMENT_OUTPUT` (see :meth:`PipelineDocument.as_json`);
- ``python -m pipeline.submit --stack NAME`` reads it back (:meth:`PipelineDocument.from_json`),
  so a pipeline deployed with ``job_overrides`` is submitted, costed and pre-flighted with the
  values it was deployed with, never the library's defaults;
- without a stack, the run engine builds it from DescribeJobDefinitions, and the local backend
  from the spec, as its "deployment".

Plain data: no aws-cdk-lib or boto3 import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import SpecError
from pipeline.spec import DEFAULT_SPEC, QUEUE_NAME, RESOURCES, PipelineSpec, prefixed
from pipeline.steps import PipelineSteps

SCHEMA = "array-job-pipeline/pipeline-document"
VERSION = 2
"""Bumped when a field changes meaning or is removed; readers refuse other versions."""
DOCUMENT_OUTPUT = "PipelineDocument"
"""The CloudFormation output key of PipelineStack that holds the document's JSON."""
QUEUE_OUTPUT = "JobQueueArn"
QUEUE_NAME_OUTPUT = "JobQueueName"
LOG_GROUP_OUTPUT = "LogGroupName"
"""Outputs of PipelineStack for people and scripts; runs read the document instead."""
MAX_DOCUMENT_BYTES = 4096
"""CloudFormation documents no size limit for an output value; the document stays within the
4,096 bytes it documents for a parameter value and a custom resource's response (tested with
the longest names a deployment can produce)."""


class DocumentError(SpecError):
    """A published document this library cannot use; the message says what to do."""


@dataclass(frozen=True)
class PipelineDocument:
    """The pipeline a run submits to, as deployed."""

    queue: str
    """Job queue ARN (or name) to submit to."""
    job_definitions: Mapping[str, str]
    """Job key -> job definition ARN, or ``name[:revision]``."""
    spec: PipelineSpec = DEFAULT_SPEC
    """The jobs with the resources, timeouts, attempts and array size deployed."""
    parameters: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Job key -> the job definition's parameter defaults (JobE's SourceBucket, Recipient)."""
    resources: Mapping[str, str] = field(default_factory=dict)
    """Resource key (``input_bucket`` ...) -> name or ARN; empty when not known, in which case
    runs rely on the job definitions' own environment."""
    log_group: str | None = None
    """CloudWatch log group of the jobs, for failure reports."""
    queue_name: str | None = None
    definition_names: Mapping[str, str] = field(default_factory=dict)
    images: Mapping[str, str] = field(default_factory=dict)
    """Job key -> the image its definition runs (empty when not known)."""
    source: str = "the library's defaults"
    """Where this came from, for messages (``stack ArrayJobPipeline``, ``job definitions``)."""
    definition_settings: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Run settings the job definitions themselves set (``PIPELINE_MAX_OBJECT_BYTES``,
    ``PIPELINE_INPUT_PREFIX``), as described; not published, so empty from a stack's
    document (whose definitions set none)."""

    @classmethod
    def by_name(cls, *, queue: str | None = None, prefix: str = "") -> PipelineDocument:
        """The pipeline as a deployment with ``prefix`` names it, with the library's default
        resources: what a dry run without AWS access shows."""
        names = {j.key: prefixed(prefix, j.definition_name) for j in DEFAULT_SPEC}
        return cls(
            queue=queue or prefixed(prefix, QUEUE_NAME),
            job_definitions=names,
            definition_names=names,
            queue_name=queue or prefixed(prefix, QUEUE_NAME),
        )

    @property
    def resource_env(self) -> dict[str, str]:
        """The resources as the jobs' environment variables (``PIPELINE_INPUT_BUCKET`` ...)."""
        return {r.env: self.resources[r.key] for r in RESOURCES if r.key in self.resources}

    @property
    def output_bucket(self) -> str | None:
        return self.resources.get("output_bucket")

    def parameter_defaults(self, job_key: str) -> dict[str, str]:
        return dict(self.parameters.get(job_key, {}))

    # --- the published form -----------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        """The document as published (values may be CDK tokens while synthesizing)."""
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "queue": {"arn": self.queue, "name": self.queue_name or self.queue},
            "arraySize": self.spec.array_size,
            "jobs": {
                job.key: {
                    "definitionName": self.definition_names.get(job.key, job.definition_name),
                    "definitionArn": self.job_definitions[job.key],
                    "vcpus": job.vcpus,
                    "memoryMiB": job.memory_mib,
                    "timeoutSeconds": job.timeout_seconds,
                    "attempts": job.retry_attempts,
                    "arraySize": job.array_size,
                    "parameters": self.parameter_defaults(job.key),
                    **({"image": self.images[job.key]} if job.key in self.images else {}),
                    # a JobOverride's command (the job program's is the library's own)
                    **({"command": list(job.command)} if job.command_override else {}),
                }
                for job in self.spec
            },
            "steps": self.spec.steps.as_json(),
            "resources": dict(self.resources),
            "logGroup": self.log_group,
        }

    @classmethod
    def from_json(cls, data: object, *, source: str) -> PipelineDocument:
        """Read a published document; :class:`DocumentError` says what to do when it is from
        another version of the library or malformed."""
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise DocumentError(
                f"{source} does not hold an array-job-pipeline document; check the stack name"
            )
        version = data.get("version")
        if version != VERSION:
            if isinstance(version, int) and version > VERSION:
                raise DocumentError(
                    f"{source} was deployed by a newer array-job-pipeline (document version "
                    f"{version}; this one reads {VERSION}); upgrade it: "
                    "pip install -U array-job-pipeline"
                )
            raise DocumentError(
                f"{source} was deployed by an older array-job-pipeline (document version "
                f"{version!r}; this one reads {VERSION}); redeploy it with this version "
                "(npx cdk deploy)"
            )
        try:
            return cls._parse(data, source)
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, DocumentError):
                raise
            raise DocumentError(
                f"{source} holds a malformed pipeline document ({type(error).__name__}: "
                f"{error}); redeploy it (npx cdk deploy)"
            ) from None

    @classmethod
    def _parse(cls, data: Mapping[str, Any], source: str) -> PipelineDocument:
        jobs = data["jobs"]
        missing = [j.key for j in DEFAULT_SPEC if j.key not in jobs]
        if missing:
            raise DocumentError(f"{source}'s document has no {', '.join(missing)}; redeploy it")
        overrides = {
            key: {
                "vcpus": _number(jobs[key]["vcpus"], f"{key}.vcpus"),
                "memory_mib": int(_number(jobs[key]["memoryMiB"], f"{key}.memoryMiB")),
                "timeout_seconds": int(_number(jobs[key]["timeoutSeconds"], f"{key}.timeout")),
                "retry_attempts": int(_number(jobs[key]["attempts"], f"{key}.attempts")),
                "command": [str(a) for a in jobs[key].get("command") or []],
            }
            for key in (j.key for j in DEFAULT_SPEC)
        }
        spec = (
            DEFAULT_SPEC.with_array_size(int(data["arraySize"]))
            .with_steps(PipelineSteps.from_json(data["steps"]))
            .with_overrides(overrides)
        )
        for job in spec:
            published = jobs[job.key].get("arraySize")
            if published != job.array_size:
                raise DocumentError(
                    f"{source}'s document gives {job.key} an array size of {published}, where "
                    f"this library's {job.key} has {job.array_size}; use the library version "
                    "that deployed it, or redeploy"
                )
        queue = data["queue"]
        return cls(
            queue=str(queue["arn"]),
            queue_name=str(queue.get("name") or queue["arn"]),
            job_definitions={j.key: str(jobs[j.key]["definitionArn"]) for j in spec},
            definition_names={j.key: str(jobs[j.key]["definitionName"]) for j in spec},
            spec=spec,
            parameters={
                j.key: {str(k): str(v) for k, v in (jobs[j.key].get("parameters") or {}).items()}
                for j in spec
            },
            resources={str(k): str(v) for k, v in (data.get("resources") or {}).items()},
            log_group=data.get("logGroup") or None,
            images={j.key: str(jobs[j.key]["image"]) for j in spec if jobs[j.key].get("image")},
            source=source,
        )


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}, not a number")
    return float(value)
