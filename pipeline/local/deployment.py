"""The pipeline as the local services deploy it (``serve --with-pipeline``): the workflow's
queue and five job definitions on AWS Batch, and the buckets, table, topic and failure rule
the stack would create, with the local names.

:func:`local_document` is the same deployment as data, for what needs no services (a dry
run); a run with the services reads the registered job definitions instead, as a run on
AWS does without ``--stack``. Importing this module loads neither moto nor boto3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import contract
from pipeline.document import PipelineDocument
from pipeline.errors import LocalError
from pipeline.failure_events import (
    INPUT_PATHS,
    LOCAL_DETAILS,
    failure_event_pattern,
    message_template,
)
from pipeline.local.run_folder import RunFolder, write_json
from pipeline.spec import (
    DEFAULT_SPEC,
    JOB_USER_ID,
    QUEUE_NAME,
    RECIPIENT,
    RESOURCES,
    RETRY_RULES,
    SCRATCH,
    SCRATCH_MOUNT_OPTIONS,
    SOURCE_BUCKET,
    JobSpec,
    scratch_size_mib,
)
from pipeline.steps import DEFAULT_STEPS, PipelineSteps

REGION = "us-east-1"
"""The local deployment's region unless its services are started for another one."""
ACCOUNT = "123456789012"
"""moto's default account: every local ARN carries it."""
STACK = "arrayjobpipeline"
LOCAL_ARRAY_SIZE = 8
"""The local deployment's array size (JobB and JobC children), where a stack's is 10,000."""
LOCAL_MAX_OBJECT_BYTES = 1024 * 1024
"""The local size limit: the services keep objects in memory (deployed: 5 GiB)."""
LOCAL_IMAGE = "array-job-pipeline:local"
"""The image the local job definitions name: recorded, never pulled (jobs run here)."""
COMPUTE_ENVIRONMENT = "local"
LOG_GROUP = "/array-job-pipeline/jobs"
NOTIFICATIONS_QUEUE = "notifications"
"""What the topic sends (an email subscriber would get it), captured by this queue."""
FAILURES_QUEUE = "failure-notifications"
"""What the failure rule sends, captured by this queue."""
FAILURE_RULE = "array-job-pipeline-job-failed"


def resource_names(stack: str = STACK, region: str = REGION) -> dict[str, str]:
    """Names (and the topic's ARN) of the local buckets, table and topic, derived from the
    stack name as CloudFormation derives the deployed ones (without its random suffix)."""
    names = {r.key: f"{stack}-{r.key.replace('_', '-')}-local" for r in RESOURCES}
    names["notification_topic"] = f"arn:aws:sns:{region}:{ACCOUNT}:{names['notification_topic']}"
    return names


def arn(resource: str, region: str = REGION) -> str:
    return f"arn:aws:batch:{region}:{ACCOUNT}:{resource}"


def local_document(
    array_size: int = LOCAL_ARRAY_SIZE,
    steps: PipelineSteps = DEFAULT_STEPS,
    region: str = REGION,
) -> PipelineDocument:
    """The local deployment as a document: the spec's jobs (running ``steps``) and resources,
    the workflow's names, the local buckets, table and topic, in ``region``. Pure; no
    services needed."""
    names = resource_names(region=region)
    spec = DEFAULT_SPEC.with_array_size(array_size).with_steps(steps)
    return PipelineDocument(
        queue=arn(f"job-queue/{QUEUE_NAME}", region),
        queue_name=QUEUE_NAME,
        job_definitions={j.key: arn(f"job-definition/{j.definition_name}:1", region) for j in spec},
        definition_names={j.key: j.definition_name for j in spec},
        spec=spec,
        parameters={"JobE": {SOURCE_BUCKET: f"s3://{names['output_bucket']}", RECIPIENT: ""}},
        resources=names,
        log_group=LOG_GROUP,
        source="the local services",
    )


def job_definition_request(job: JobSpec, document: PipelineDocument) -> dict[str, Any]:
    """RegisterJobDefinition for ``job`` as the stack registers it, with the local image,
    resources and size limit."""
    environment = {
        **document.resource_env,
        contract.ARRAY_SIZE: str(document.spec.array_size),
        contract.MAX_OBJECT_BYTES: str(LOCAL_MAX_OBJECT_BYTES),
        "TMPDIR": SCRATCH,
        **document.spec.environment_of(job),
    }
    return {
        "jobDefinitionName": job.definition_name,
        "type": "container",
        "parameters": document.parameter_defaults(job.key),
        "containerProperties": {
            "image": LOCAL_IMAGE,
            "command": list(job.command),
            "resourceRequirements": job.resource_requirements(),
            "environment": [{"name": k, "value": v} for k, v in environment.items()],
            "user": str(JOB_USER_ID),
            # As the stack registers them; recorded here, since a local job runs as a process
            # whose TMPDIR is a scratch folder of its own.
            "readonlyRootFilesystem": True,
            "linuxParameters": {
                "tmpfs": [
                    {
                        "containerPath": SCRATCH,
                        "size": scratch_size_mib(job.memory_mib),
                        "mountOptions": list(SCRATCH_MOUNT_OPTIONS),
                    }
                ]
            },
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": LOG_GROUP, "awslogs-stream-prefix": job.key},
            },
        },
        "retryStrategy": {
            "attempts": job.retry_attempts,
            "evaluateOnExit": [rule.as_evaluate_on_exit() for rule in RETRY_RULES],
        },
        "timeout": {"attemptDurationSeconds": job.timeout_seconds},
        "propagateTags": True,
    }


def job_environment(
    endpoint: str,
    credentials: Mapping[str, str],
    import_roots: Sequence[str] = (),
    region: str = REGION,
) -> dict[str, str]:
    """What every job process gets besides its job's own environment: this machine's
    environment with AWS pointed at the local services (and their ``credentials``), and this
    library and the steps' modules (found under ``import_roots``) importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    package_parent = str(Path(__file__).resolve().parents[2])
    path = [package_parent, *import_roots, *env.get("PYTHONPATH", "").split(os.pathsep)]
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION=region,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=os.pathsep.join(dict.fromkeys(p for p in path if p)),
        **credentials,
    )
    return env


def saved_steps_json(steps: PipelineSteps) -> dict[str, Any]:
    """``steps`` as a run keeps them: their JSON and the folders their modules were imported
    from (a job process adds those to its path to import them too)."""
    return {"steps": steps.as_json(), "importRoots": import_roots(steps)}


def steps_from_json(saved: Any, where: str) -> tuple[PipelineSteps, list[str]]:
    """The steps and import roots :func:`saved_steps_json` made; ``where`` names their
    source in the error a damaged one raises."""
    try:
        return PipelineSteps.from_json(saved["steps"]), [str(r) for r in saved["importRoots"]]
    except (ValueError, KeyError, TypeError) as error:
        raise LocalError(f"{where} is damaged ({error}); the run's steps are unknown") from None


def save_steps(folder: RunFolder, steps: PipelineSteps, roots: Sequence[str]) -> None:
    """Keep ``steps`` (and where their modules are) as the steps of the run in ``folder``."""
    write_json(folder.steps_file, {"steps": steps.as_json(), "importRoots": list(roots)})


def saved_steps(folder: RunFolder) -> tuple[PipelineSteps, list[str]] | None:
    """The steps kept in ``folder`` and their import roots; None for a run of the defaults."""
    path = folder.steps_file
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LocalError(f"{path} is damaged ({error}); the run's steps are unknown") from None
    return steps_from_json(saved, str(path))


def import_roots(steps: PipelineSteps) -> list[str]:
    """The folders the Python steps' modules were imported from (a ``sys.path`` entry
    each): what a job process adds to its path to import them too."""
    import importlib

    references = [
        str(step.target)
        for step in (steps.cpu, steps.memory, steps.aggregate)
        if step is not None and step.kind == "python"
    ]
    roots: list[str] = []
    for reference in [*references, *steps.checks]:
        name = reference.partition(":")[0]
        module = importlib.import_module(name)
        found = getattr(module, "__file__", None)
        if not found:
            continue
        root = Path(found).resolve().parent
        for _ in range(name.count(".") + (Path(found).name == "__init__.py")):
            root = root.parent
        if str(root) not in roots:
            roots.append(str(root))
    return roots


BatchCall = Callable[[str, dict[str, Any]], Any]


def deploy(batch: BatchCall, clients: Mapping[str, Any], document: PipelineDocument) -> None:
    """Create what the stack would, on the local services: ``batch(operation, request)``
    calls the local AWS Batch, ``clients`` are boto3 clients of the other services."""
    batch(
        "CreateComputeEnvironment",
        {"computeEnvironmentName": COMPUTE_ENVIRONMENT, "type": "UNMANAGED", "state": "ENABLED"},
    )
    batch(
        "CreateJobQueue",
        {
            "jobQueueName": document.queue_name or QUEUE_NAME,
            "state": "ENABLED",
            "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": COMPUTE_ENVIRONMENT}],
        },
    )
    for job in document.spec:
        batch("RegisterJobDefinition", job_definition_request(job, document))
    names = document.resources
    s3, sqs = clients["s3"], clients["sqs"]
    region = s3.meta.region_name
    # S3 takes a location constraint for every region but us-east-1 (CreateBucket).
    where = (
        {}
        if region == "us-east-1"
        else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    for resource in RESOURCES:
        if resource.kind == "bucket":
            s3.create_bucket(Bucket=names[resource.key], **where)
    clients["dynamodb"].create_table(
        TableName=names["metadata_table"],
        BillingMode="PAY_PER_REQUEST",
        **contract.table_keys(),
    )
    topic = clients["sns"].create_topic(Name=names["notification_topic"].rsplit(":", 1)[1])
    notifications = _queue_arn(sqs, NOTIFICATIONS_QUEUE)
    clients["sns"].subscribe(TopicArn=topic["TopicArn"], Protocol="sqs", Endpoint=notifications)
    clients["logs"].create_log_group(logGroupName=LOG_GROUP)
    # The stack's failure rule, on EventBridge; its target is a queue here (the topic on AWS).
    pattern = failure_event_pattern(document.queue)
    clients["events"].put_rule(Name=FAILURE_RULE, EventPattern=json.dumps(pattern))
    clients["events"].put_targets(
        Rule=FAILURE_RULE,
        Targets=[
            {
                "Id": "failures",
                "Arn": _queue_arn(sqs, FAILURES_QUEUE),
                "InputTransformer": {
                    "InputPathsMap": dict(INPUT_PATHS),
                    "InputTemplate": json.dumps(message_template(LOCAL_DETAILS)),
                },
            }
        ],
    )


def _queue_arn(sqs: Any, name: str) -> str:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return str(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    )
