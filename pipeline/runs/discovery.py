"""Finds the deployed pipeline a run submits to, as a :class:`PipelineDocument`.

- ``--stack NAME``: the document PipelineStack publishes in its ``PipelineDocument`` output
  (one DescribeStacks call);
- ``--queue``/``--job-definition-prefix`` without a stack: the newest ACTIVE revision of each
  job definition (one DescribeJobDefinitions call per job), so the resources, timeouts and
  attempts of a run are those registered, not this library's defaults; with ``verify``, a
  revision that is not what this library registers is refused (:func:`check_registered`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pipeline import contract
from pipeline.document import DOCUMENT_OUTPUT, DocumentError, PipelineDocument
from pipeline.errors import TargetError
from pipeline.spec import (
    DEFAULT_SPEC,
    JOB_USER_ID,
    QUEUE_NAME,
    RESOURCES,
    RUN_SETTINGS,
    job_role_path,
    prefixed,
)
from pipeline.steps import PipelineSteps

if TYPE_CHECKING:
    from mypy_boto3_batch.type_defs import JobDefinitionTypeDef
    from mypy_boto3_cloudformation import CloudFormationClient

    from pipeline.runs.api import BatchApi


def document_from_stack(cloudformation: CloudFormationClient, stack_name: str) -> PipelineDocument:
    """The pipeline as the stack deployed it, from its ``PipelineDocument`` output."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            region = cloudformation.meta.region_name
            raise TargetError(
                f"stack {stack_name!r} does not exist in {region}; deploy it with "
                "`npx cdk deploy`, or pass the --region/--profile where it lives"
            ) from error
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if DOCUMENT_OUTPUT not in outputs:
        raise TargetError(
            f"stack {stack_name!r} has no {DOCUMENT_OUTPUT} output: it is not a PipelineStack, "
            "or an older version of array-job-pipeline deployed it; redeploy it with "
            "`npx cdk deploy`, or pass --queue and --job-definition-prefix instead of --stack"
        )
    source = f"stack {stack_name!r}"
    try:
        data = json.loads(outputs[DOCUMENT_OUTPUT])
    except json.JSONDecodeError:
        raise TargetError(
            f"{source}'s {DOCUMENT_OUTPUT} output is not JSON; redeploy it (npx cdk deploy)"
        ) from None
    try:
        return PipelineDocument.from_json(data, source=source)
    except DocumentError as error:
        raise TargetError(str(error)) from None


def document_from_job_definitions(
    batch: BatchApi,
    *,
    queue: str | None = None,
    prefix: str = "",
    arns: Mapping[str, str] | None = None,
    verify: bool = False,
) -> PipelineDocument:
    """The pipeline as its registered job definitions say (newest ACTIVE revision of each,
    or exactly the revisions ``arns`` names, job key -> ARN, in one call): resources,
    timeout, attempts, parameter defaults, and the array size and resource names the stack
    put in their environment.

    ``verify`` (the command line's ``--queue`` path, where no stack says which revisions it
    registered): refuse, with :class:`TargetError` naming the revision and pointing to
    ``--stack``, any newest revision that is not what this library registers (see
    :func:`check_registered`). Not with ``arns``: those are the revisions a stack registered
    (the starter's)."""
    if arns is not None:
        definitions = _definitions_by_arn(batch, arns)
    else:
        revisions = {
            job.key: _active_revisions(batch, prefixed(prefix, job.definition_name))
            for job in DEFAULT_SPEC
        }
        if verify:
            check_registered(revisions, prefixed(prefix, QUEUE_NAME))
        definitions = {key: max(found, key=_revision) for key, found in revisions.items()}
    overrides: dict[str, dict[str, float | int]] = {}
    environment: dict[str, str] = {}
    by_role: dict[str, dict[str, str]] = {}
    log_group: str | None = None
    for key, definition in definitions.items():
        container: Any = definition.get("containerProperties") or {}
        options = (container.get("logConfiguration") or {}).get("options") or {}
        log_group = log_group or options.get("awslogs-group")
        changes = _resources(container)
        timeout = (definition.get("timeout") or {}).get("attemptDurationSeconds")
        if timeout:
            changes["timeout_seconds"] = int(timeout)
        attempts = (definition.get("retryStrategy") or {}).get("attempts")
        if attempts:
            changes["retry_attempts"] = int(attempts)
        overrides[key] = changes
        variables = {e["name"]: e["value"] for e in container.get("environment") or []}
        environment = environment or variables
        role = DEFAULT_SPEC.job(key).step
        if role is not None:
            by_role[role] = variables
    size_text = environment.get(contract.ARRAY_SIZE, "")
    spec = DEFAULT_SPEC
    if size_text.isdigit():
        spec = spec.with_array_size(int(size_text))
    spec = spec.with_steps(PipelineSteps.from_environments(by_role)).with_overrides(overrides)
    queue = queue or prefixed(prefix, QUEUE_NAME)
    return PipelineDocument(
        queue=queue,
        # The pipeline tag (and grant_submit_jobs' condition on it) holds the queue's name,
        # also when the queue is given by ARN (arn:...:job-queue/NAME).
        queue_name=queue.rsplit("/", 1)[-1] if queue.startswith("arn:") else queue,
        job_definitions={key: d["jobDefinitionArn"] for key, d in definitions.items()},
        definition_names={key: d["jobDefinitionName"] for key, d in definitions.items()},
        spec=spec,
        parameters={key: dict(d.get("parameters") or {}) for key, d in definitions.items()},
        resources={r.key: environment[r.env] for r in RESOURCES if r.env in environment},
        definition_settings={k: v for k, v in environment.items() if k in RUN_SETTINGS},
        log_group=log_group,
        images={
            key: str((d.get("containerProperties") or {}).get("image"))
            for key, d in definitions.items()
            if (d.get("containerProperties") or {}).get("image")
        },
        source="the registered job definitions",
    )


def _definitions_by_arn(
    batch: BatchApi, arns: Mapping[str, str]
) -> dict[str, JobDefinitionTypeDef]:
    missing = [job.key for job in DEFAULT_SPEC if job.key not in arns]
    if missing:
        raise TargetError(f"no job definition ARN for {', '.join(missing)}")
    wanted = [arns[job.key] for job in DEFAULT_SPEC]
    found = {
        d["jobDefinitionArn"]: d
        for d in batch.describe_job_definitions(jobDefinitions=wanted)["jobDefinitions"]
    }
    absent = [arn for arn in wanted if arn not in found]
    if absent:
        raise TargetError(
            f"job definition {absent[0]} does not exist; redeploy the pipeline (npx cdk deploy)"
        )
    return {job.key: found[arns[job.key]] for job in DEFAULT_SPEC}


def check_registered(
    revisions: Mapping[str, Sequence[JobDefinitionTypeDef]], pipeline: str
) -> None:
    """Refuse (:class:`TargetError`, one line naming the revision and pointing to ``--stack``)
    the newest ACTIVE revision of a job definition unless it is what this library's stack
    registers for the pipeline whose queue is ``pipeline``:

    - the only ACTIVE revision of its name: CloudFormation deregisters the revision a stack
      update replaces, so a second ACTIVE one was registered outside the stack (whatever its
      image), or a deployment is under way;
    - ``user`` 10001, the uid the hosts' firewall keeps from the instance metadata service
      (without it a job runs as the image's user, often root); not ``privileged``; a read-only
      root filesystem;
    - a job role and an execution role on the pipeline's IAM path
      (:func:`pipeline.spec.job_role_path`), which only someone allowed to create roles there
      can make.

    What it cannot tell without the stack: a revision copied field by field, roles included,
    with another image, by someone allowed both to register it and to deregister the stack's
    own. ``--stack`` submits exactly the revisions the stack registered."""
    path = job_role_path(pipeline)
    for job in DEFAULT_SPEC:
        found = revisions[job.key]
        newest = max(found, key=_revision)
        problems = _unlike_the_library(newest, path)
        if len(found) > 1:
            others = sorted(_revision(d) for d in found if d is not newest)
            listed = ", ".join(str(r) for r in others)
            problems.insert(
                0,
                f"{len(found)} revisions are ACTIVE (also {listed}): the stack keeps one, so "
                "one was registered outside it, or a deployment is under way",
            )
        if problems:
            raise TargetError(
                f"job definition {newest['jobDefinitionArn']} is not what array-job-pipeline "
                f"registers: {'; '.join(problems)}; pass --stack with the PipelineStack's name, "
                "which submits exactly the revisions the stack registered"
            )


def _unlike_the_library(definition: JobDefinitionTypeDef, role_path: str) -> list[str]:
    container: Any = definition.get("containerProperties") or {}
    problems = []
    user = str(container.get("user") or "")
    if user != str(JOB_USER_ID):
        runs_as = f"user {user!r}" if user else "the image's user (often root)"
        problems.append(f"it runs as {runs_as}, not {JOB_USER_ID}")
    if container.get("privileged"):
        problems.append("it is privileged")
    if container.get("readonlyRootFilesystem") is not True:
        problems.append("its root filesystem is writable")
    for field, what in (("jobRoleArn", "job role"), ("executionRoleArn", "execution role")):
        arn = str(container.get(field) or "")
        if f":role{role_path}" not in arn:
            named = arn or "none"
            problems.append(f"its {what} ({named}) is not on the pipeline's path {role_path}")
    return problems


def _revision(definition: JobDefinitionTypeDef) -> int:
    return int(definition["revision"])


def _active_revisions(batch: BatchApi, name: str) -> list[JobDefinitionTypeDef]:
    found: list[JobDefinitionTypeDef] = []
    token: str | None = None
    while True:
        page = (
            batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE", nextToken=token)
            if token
            else batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")
        )
        found += page["jobDefinitions"]
        token = page.get("nextToken")
        if not token:
            break
    if not found:
        raise TargetError(
            f"no ACTIVE job definition {name!r}; check --job-definition-prefix and --region, or "
            "pass --stack with the PipelineStack's name"
        )
    return found


def _resources(container: Any) -> dict[str, float | int]:
    """vCPUs and MiB from ``resourceRequirements`` (or the deprecated ``vcpus``/``memory``)."""
    changes: dict[str, float | int] = {}
    for requirement in container.get("resourceRequirements") or []:
        if requirement["type"] == "VCPU":
            changes["vcpus"] = float(requirement["value"])
        elif requirement["type"] == "MEMORY":
            changes["memory_mib"] = int(requirement["value"])
    if "vcpus" not in changes and container.get("vcpus"):
        changes["vcpus"] = float(container["vcpus"])
    if "memory_mib" not in changes and container.get("memory"):
        changes["memory_mib"] = int(container["memory"])
    return changes
