"""AWS Batch for the tests: this library's engine (:mod:`pipeline.local.batch`), in this
process, behind boto3 Batch clients. It is the one model of Batch the tests use: nothing here
restates a rule of Batch (dependencies, array parents, retries, stops, ListJobs pages); the
helpers only decide when jobs are placed and how their attempts end, as a compute environment
would, through the engine's :class:`~pipeline.local.batch.placements.CallerPlacement`.

- :func:`engine_batch` is a deployed pipeline with no processes: ProdQueue and the five job
  definitions on the engine, and a stack publishing the pipeline's document (moto's
  CloudFormation). Jobs succeed the moment they become RUNNABLE until a test holds them
  (:meth:`EngineBatch.hold_new_jobs`) and places them itself. Timestamps come from a clock the
  test moves.
- :func:`engine_with_processes` is the engine with its scheduler: jobs run as processes on
  this machine, as the local services run them.

Faults of the AWS path (throttling, lost answers, a listing that lags) are botocore event
hooks on top: :meth:`EngineBatch.intercept`, :func:`error_answer`, :func:`lag_listings`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.config import Config
from moto import mock_aws

from pipeline.batch_facts import DESCRIBE_JOBS_LIMIT, STARTED, STATUSES, TERMINAL
from pipeline.document import (
    DOCUMENT_OUTPUT,
    QUEUE_NAME_OUTPUT,
    QUEUE_OUTPUT,
    PipelineDocument,
)
from pipeline.local.batch.definitions import Place
from pipeline.local.batch.faults import Fault, FaultKey, InjectedFault
from pipeline.local.batch.in_process import (
    IN_PROCESS,
    client_session,
    in_process_clients,
    sender,
)
from pipeline.local.batch.models import LocalBatch
from pipeline.local.batch.placements import CallerPlacement
from pipeline.local.batch.responses import BatchService
from pipeline.local.batch.scheduler import LogShipper, Scheduler
from pipeline.spec import (
    DEFAULT_SPEC,
    JOB_USER_ID,
    RESOURCES,
    RUN_TAG,
    JobSpec,
    PipelineSpec,
    job_role_path,
)

REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK = "ArrayJobPipeline"
QUEUE = "ProdQueue"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
FAST_RETRIES = Config(retries={"mode": "standard", "max_attempts": 4})
PYTHON = sys.executable
EPOCH = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp()
"""Where a test's clock starts."""


class ManualClock:
    """A clock that moves only when told to: a timeout passes, a job runs for a minute, when
    the test says so."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, when: datetime) -> None:
        self.now = when.timestamp()


@cache
def _session() -> Any:
    """One boto3 session for the tests' in-process clients: what botocore loads for a client
    (models, endpoint rules) is loaded once per test process, not once per test."""
    return client_session(REGION, CREDENTIALS)


def batch_clients(engine: LocalBatch, count: int = 1, config: Config = FAST_RETRIES) -> list[Any]:
    """``count`` boto3 Batch clients whose requests the engine answers in this process."""
    service = BatchService(engine)
    return [
        in_process_clients(service, ("batch",), session=_session(), config=config)["batch"]
        for _ in range(count)
    ]


# --- a deployed pipeline, placed by the test ----------------------------------------------------


@dataclass(frozen=True)
class ListedJob:
    """A job as DescribeJobs shows it."""

    detail: Mapping[str, Any]

    @property
    def job_id(self) -> str:
        return str(self.detail["jobId"])

    @property
    def job_name(self) -> str:
        return str(self.detail["jobName"])

    @property
    def status(self) -> str:
        return str(self.detail["status"])


@dataclass
class EngineBatch:
    """The engine as a deployed pipeline's Batch, with the clients a test hands to the code
    under test (``batch``) and reads through itself (``reader``: its calls are not counted and
    a test's hooks on ``batch`` do not see them)."""

    engine: LocalBatch
    placement: CallerPlacement
    clock: ManualClock
    batch: Any
    reader: Any
    cloudformation: Any
    queue_arn: str
    definition_arns: dict[str, str]
    calls: dict[str, int] = field(default_factory=dict)
    interceptors: list[Callable[..., Any]] = field(default_factory=list)
    s3: Any = None
    """moto's S3, for the command line to list BucketA with (see :meth:`with_input`); None:
    the command line is given no S3 client, and a run given no size keeps the deployed one."""

    # --- the input ---------------------------------------------------------------------------

    def with_input(self, objects: Mapping[str, bytes]) -> Any:
        """The stack's BucketA, in moto's S3, holding ``objects``, and the command line
        given an S3 client to list it; returns that client."""
        if self.s3 is None:
            self.s3 = _session().client("s3")
            for resource in RESOURCES:
                if resource.kind == "bucket":
                    self.s3.create_bucket(Bucket=stack_resource_name(resource.key))
        bucket = stack_resource_name("input_bucket")
        for key, body in objects.items():
            self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        return self.s3

    # --- placing jobs -------------------------------------------------------------------------

    def hold_new_jobs(self) -> None:
        """From now on a RUNNABLE job waits to be placed by the test, as on a queue whose
        compute environments are busy (before, every job succeeds as it becomes RUNNABLE)."""
        self.placement.run_at_once = False

    def run_at_once(self) -> None:
        """Every job that is or becomes RUNNABLE starts and succeeds at once."""
        self.placement.run_at_once = True
        with self.engine.lock:
            for job in list(self.placement.placed_in_order()):
                self.placement.enqueue(job)

    def start(self, job_id: str, *, log_stream: str | None = None) -> None:
        """The job (every child, for an array job) is placed and RUNNING."""
        self.placement.start(job_id, log_stream=log_stream)

    def succeed(self, job_id: str, *, seconds: float = 0) -> None:
        """The job (every child of an array, in the order the engine lets them run) runs for
        ``seconds`` each on the test's clock and exits 0; a leaf already running just exits.
        Fails, naming them, if leaves are left waiting for other jobs."""
        with self.engine.lock:
            leaves = self.placement.leaves_of(job_id)
            while True:
                runnable = [leaf for leaf in leaves if leaf.status == "RUNNABLE"]
                running = [leaf for leaf in leaves if leaf.status in STARTED]
                if not runnable and not running:
                    break
                for leaf in runnable:
                    self.placement.start(leaf.job_id)
                self.clock.advance(seconds)
                for leaf in running + runnable:
                    self.placement.end(leaf.job_id, 0)
            waiting = [leaf for leaf in leaves if leaf.status not in TERMINAL]
            assert not waiting, (
                f"{len(waiting)} of {job_id} cannot run yet: {waiting[0].job_id} is "
                f"{waiting[0].status}"
            )

    def fail(
        self,
        job_id: str,
        reason: str = "Essential container in task exited",
        exit_code: int | None = 1,
        *,
        log_stream: str | None = None,
    ) -> None:
        """The job (a child, or every child of an array) runs and its attempt fails with
        ``exit_code`` and ``reason``; the job's retry strategy decides what follows (the
        definitions here have none: the job fails)."""
        with self.engine.lock:
            for leaf in self.placement.leaves_of(job_id):
                if leaf.status == "RUNNABLE":
                    self.placement.start(leaf.job_id, log_stream=log_stream)
            self.placement.end(job_id, exit_code, reason)

    def fail_child(
        self,
        parent_id: str,
        index: int,
        reason: str = "Essential container in task exited",
        exit_code: int | None = 1,
        log_stream_name: str | None = None,
    ) -> None:
        """Child ``index`` of the array ``parent_id`` runs and fails (see :meth:`fail`)."""
        self.fail(f"{parent_id}:{index}", reason, exit_code, log_stream=log_stream_name)

    def fail_unstarted(self, job_id: str, reason: str) -> None:
        """The job (every child not yet ended) fails without running, as a job cancelled
        while queued."""
        self.placement.fail_unstarted(job_id, reason)

    def set_times(self, job_id: str, started: datetime, seconds: float) -> None:
        """The job (or child) starts at ``started`` and succeeds ``seconds`` later."""
        self.clock.set(started)
        self.succeed(job_id, seconds=seconds)

    def inject(self, *faults: str) -> None:
        """Faults for the first attempt of jobs submitted from now on, as ``--inject`` takes
        them (``JobB:3=exit:2``, ``JobA=host-terminated``, ``JobC:1=out-of-memory``): the
        engine's own fault plan, applied as each job is placed."""
        for text in faults:
            injected = InjectedFault.parse(text)
            self.engine.faults[(injected.job, injected.index)] = injected.fault

    def run_job(self, run_id: str, key: str) -> str:
        """The ID of the job named ``key`` (JobA..JobE) of run ``run_id`` (its latest)."""
        jobs = self.run_jobs(run_id)[key]
        assert jobs, f"run {run_id} has no {key}"
        return str(jobs[-1]["jobId"])

    # --- observing ----------------------------------------------------------------------------

    def count_calls(self) -> None:
        """Count the code under test's API calls by operation name in ``self.calls``."""

        def count(event_name: str, **_: Any) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            self.calls[operation] = self.calls.get(operation, 0) + 1

        self.batch.meta.events.register("before-call.batch", count)

    def record_stops(self) -> list[tuple[str, str, str]]:
        """Every CancelJob and TerminateJob the code under test sends from now on, as
        (operation, job ID, reason), in a list that fills as they are sent."""
        stops: list[tuple[str, str, str]] = []

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            stops.append((model.name, str(params.get("jobId")), str(params.get("reason"))))

        for operation in ("CancelJob", "TerminateJob"):
            self.batch.meta.events.register(f"before-parameter-build.batch.{operation}", record)
        return stops

    def parents(self) -> list[ListedJob]:
        """Every job in every queue, array parents but not their children, oldest first:
        ListJobs for each status, then DescribeJobs for each 100."""
        ids: list[str] = []
        for queue in self.reader.describe_job_queues()["jobQueues"]:
            for status in STATUSES:
                ids += [
                    s["jobId"]
                    for s in self._listed(jobQueue=queue["jobQueueArn"], jobStatus=status)
                    if ":" not in s["jobId"]
                ]
        # (the test's clock may stand still: jobs created at one instant, in submission order)
        submitted = {job.job_id: number for number, job in enumerate(self.engine.order)}
        return sorted(
            self._described(ids),
            key=lambda j: (j.detail.get("createdAt") or 0, submitted.get(j.job_id, 0)),
        )

    def run_jobs(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Job key -> the jobs of that key tagged with run ``run_id`` (parents), oldest first."""
        found: dict[str, list[dict[str, Any]]] = {job.key: [] for job in DEFAULT_SPEC}
        for job in self.parents():
            if (job.detail.get("tags") or {}).get(RUN_TAG) == run_id:
                found.setdefault(job.job_name, []).append(dict(job.detail))
        return found

    def jobs(self) -> list[ListedJob]:
        """Every job, each array parent followed by its children (listed by ``arrayJobId``)."""
        found: list[ListedJob] = []
        for parent in self.parents():
            found.append(parent)
            if (parent.detail.get("arrayProperties") or {}).get("size"):
                ids = [
                    s["jobId"]
                    for status in STATUSES
                    for s in self._listed(arrayJobId=parent.job_id, jobStatus=status)
                ]
                found += self._described(ids)
        return found

    def non_terminal(self) -> list[str]:
        return [
            f"{j.job_name} {j.job_id} {j.status}" for j in self.jobs() if j.status not in TERMINAL
        ]

    def describe(self, job_id: str) -> dict[str, Any]:
        (job,) = self.reader.describe_jobs(jobs=[job_id])["jobs"]
        return dict(job)

    def _listed(self, **request: Any) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = []
        token: dict[str, str] = {}
        while True:
            page = self.reader.list_jobs(**request, **token)
            summaries += page["jobSummaryList"]
            if not page.get("nextToken"):
                return summaries
            token = {"nextToken": page["nextToken"]}

    def _described(self, ids: Sequence[str]) -> list[ListedJob]:
        found: list[ListedJob] = []
        for start in range(0, len(ids), DESCRIBE_JOBS_LIMIT):
            jobs = self.reader.describe_jobs(jobs=list(ids[start : start + DESCRIBE_JOBS_LIMIT]))
            found += [ListedJob(j) for j in jobs["jobs"]]
        return found

    # --- steering -----------------------------------------------------------------------------

    def intercept(self, handler: Callable[..., Any]) -> None:
        """Put ``handler(request=..., event_name=...)`` in front of the engine for the code
        under test's client: an answer it returns (or an exception it raises) is what the
        client sees, and the engine never gets that request, as when a real service
        throttles or never answers. Handlers are asked in the order they were put."""
        self.interceptors.append(handler)
        if len(self.interceptors) > 1:
            return
        events = self.batch.meta.events
        events.unregister("before-send", unique_id=IN_PROCESS)
        send = sender(BatchService(self.engine))

        def gate(request: Any, event_name: str, **kwargs: Any) -> Any:
            for intercept in self.interceptors:
                answer = intercept(request=request, event_name=event_name, **kwargs)
                if answer is not None:
                    return answer
            return send(request=request, **kwargs)

        events.register_first("before-send", gate, unique_id=IN_PROCESS)

    def managed_queue(self, instance_type: str, name: str = "Managed", **resources: Any) -> str:
        """A queue on one managed EC2 compute environment of ``instance_type`` (maxvCpus 64),
        with ``resources`` merged into its computeResources; returns the queue ARN."""
        environment = self.reader.create_compute_environment(
            computeEnvironmentName=name,
            type="MANAGED",
            state="ENABLED",
            computeResources={
                "type": "EC2",
                "minvCpus": 0,
                "maxvCpus": 64,
                "instanceTypes": [instance_type],
                "subnets": ["subnet-0local"],
                "securityGroupIds": ["sg-0local"],
                "instanceRole": f"arn:aws:iam::{ACCOUNT}:instance-profile/{name}",
                **resources,
            },
        )["computeEnvironmentArn"]
        return str(
            self.reader.create_job_queue(
                jobQueueName=name,
                priority=1,
                state="ENABLED",
                computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
            )["jobQueueArn"]
        )


def register_pipeline(client: Any, spec: PipelineSpec = DEFAULT_SPEC) -> tuple[str, dict[str, str]]:
    """ProdQueue on an unmanaged compute environment and the spec's five job definitions, as
    a stack registers them (the user, a read-only root, roles on the pipeline's IAM path;
    without a retry strategy: a failed attempt fails its job); (queue ARN, job key ->
    definition ARN)."""

    environment = client.create_compute_environment(
        computeEnvironmentName="Unmanaged", type="UNMANAGED", state="ENABLED"
    )["computeEnvironmentArn"]
    queue_arn = client.create_job_queue(
        jobQueueName=QUEUE,
        priority=1,
        state="ENABLED",
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )["jobQueueArn"]
    definitions = {}
    for job in spec:
        definitions[job.key] = client.register_job_definition(
            jobDefinitionName=job.definition_name,
            type="container",
            parameters={p: "" for p in job.parameters},
            containerProperties=container_as_the_stack_registers(job, spec),
        )["jobDefinitionArn"]
    return str(queue_arn), definitions


def container_as_the_stack_registers(
    job: JobSpec, spec: PipelineSpec = DEFAULT_SPEC, **changes: Any
) -> dict[str, Any]:
    """``containerProperties`` of ``job`` as a PipelineStack registers them (its user, a
    read-only root, roles on the pipeline's IAM path), with ``changes``."""
    roles = f"arn:aws:iam::{ACCOUNT}:role{job_role_path(QUEUE)}"
    return {
        "image": "job-image:latest",
        "command": list(job.command),
        "resourceRequirements": job.resource_requirements(),
        "environment": step_environment(job, spec),
        "user": str(JOB_USER_ID),
        "readonlyRootFilesystem": True,
        "jobRoleArn": f"{roles}{job.key}Role",
        "executionRoleArn": f"{roles}ExecutionRole",
        **changes,
    }


@contextmanager
def engine_batch(
    client_config: Config = FAST_RETRIES, *, spec: PipelineSpec = DEFAULT_SPEC
) -> Iterator[EngineBatch]:
    """A deployed pipeline on the engine (see the module's description), inside moto's
    ``mock_aws`` for CloudFormation and every other service."""
    clock = ManualClock()
    engine = LocalBatch(Place(ACCOUNT, REGION), clock=clock)
    placement = CallerPlacement(engine, run_at_once=True)
    batch, reader = batch_clients(engine, 2, client_config)
    with mock_aws():
        # A Batch client the code under test makes itself (boto3.client("batch")) is served
        # by the engine too.
        boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        boto3.DEFAULT_SESSION.events.register_first(
            "before-send.batch",
            sender(BatchService(engine)),  # type: ignore[arg-type]  # an answer ends the send
            unique_id=IN_PROCESS,
        )
        queue_arn, definitions = register_pipeline(reader, spec)
        cloudformation = _session().client("cloudformation")
        cloudformation.create_stack(
            StackName=STACK, TemplateBody=stack_template(queue_arn, definitions)
        )
        yield EngineBatch(
            engine, placement, clock, batch, reader, cloudformation, queue_arn, definitions
        )


def step_environment(job: JobSpec, spec: PipelineSpec = DEFAULT_SPEC) -> list[Any]:
    """What the job's definition sets of the steps, as RegisterJobDefinition takes it."""
    return [{"name": k, "value": v} for k, v in spec.environment_of(job).items()]


def stack_resource_name(key: str) -> str:
    """The name the stand-in stack gives a resource (``pipeline-input-bucket``)."""
    return f"pipeline-{key.replace('_', '-')}"


def stack_document(
    queue_arn: str, definitions: dict[str, str], spec: PipelineSpec = DEFAULT_SPEC
) -> PipelineDocument:
    """The document a PipelineStack would publish for these resources."""
    return PipelineDocument(
        queue=queue_arn,
        queue_name=QUEUE,
        job_definitions=definitions,
        spec=spec,
        parameters={"JobE": {"SourceBucket": "s3://pipeline-output-bucket", "Recipient": ""}},
        resources={r.key: stack_resource_name(r.key) for r in RESOURCES},
        log_group="pipeline-logs",
        source=f"stack {STACK!r}",
    )


def stack_template(
    queue_arn: str,
    definitions: dict[str, str],
    *,
    document: dict[str, Any] | None = None,
    drop: str | None = None,
) -> str:
    """A stand-in for PipelineStack: the same outputs, literal values (moto's CloudFormation
    cannot create Batch resources)."""
    published = document or stack_document(queue_arn, definitions).as_json()
    outputs = {
        DOCUMENT_OUTPUT: json.dumps(published),
        QUEUE_OUTPUT: queue_arn,
        QUEUE_NAME_OUTPUT: QUEUE,
        **{r.output: f"pipeline-{r.key.replace('_', '-')}" for r in RESOURCES},
    }
    outputs.pop(drop or "", None)
    return json.dumps(
        {
            "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {k: {"Value": v} for k, v in outputs.items()},
        }
    )


def cli_in_process(aws: EngineBatch | None, *argv: str) -> tuple[int, str, str]:
    """``python -m pipeline.submit ARGV`` in process against ``aws``; (exit code, stdout,
    stderr). With ``aws=None`` the command must not reach AWS at all."""
    import io

    from pipeline.backends.aws import Aws
    from pipeline.cli.commands import main

    out, err = io.StringIO(), io.StringIO()

    def connector(_profile: str | None, _region: str | None) -> Aws:
        assert aws is not None, "this invocation must not reach AWS"
        return Aws(aws.batch, aws.cloudformation, s3=aws.s3)

    code = main(list(argv), connector=connector, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# --- faults of the AWS path ---------------------------------------------------------------------


class Sleeps(list[float]):
    """An injected ``sleep``: records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def error_answer(url: str, status: int, code: str, message: str = "injected") -> AWSResponse:
    """The HTTP answer of an AWS JSON-protocol error, for an ``intercept`` handler to return:
    the client parses it as the service's own."""
    body = json.dumps({"__type": code, "message": message}).encode()
    return AWSResponse(url, status, HTTPHeaders.from_dict({"x-amzn-ErrorType": code}), _Body(body))


def lag_listings(client: Any, hidden: int) -> None:
    """ListJobs through ``client`` leaves a job out of the first ``hidden`` listings that would
    show it, as an index that catches up after the job is accepted; it is listed from then on."""
    listed: Counter[str] = Counter()

    def lag(parsed: dict[str, Any], **_: Any) -> None:
        shown = []
        for summary in parsed.get("jobSummaryList", []):
            listed[summary["jobId"]] += 1
            if listed[summary["jobId"]] > hidden:
                shown.append(summary)
        parsed["jobSummaryList"] = shown

    client.meta.events.register("after-call.batch.ListJobs", lag)


def small_pages(client: Any, size: int) -> None:
    """Every ListJobs through ``client`` asks for pages of ``size`` jobs, so paging is
    exercised with a handful of jobs."""

    def ask(params: dict[str, Any], **_: Any) -> None:
        params.setdefault("maxResults", size)

    client.meta.events.register("before-parameter-build.batch.ListJobs", ask)


# --- the engine with its scheduler: jobs as processes -------------------------------------------


@dataclass
class ProcessBatch:
    """The engine placing jobs as processes on this machine, behind a boto3 Batch client."""

    engine: LocalBatch
    scheduler: Scheduler
    client: Any

    def register(
        self,
        name: str,
        command: Sequence[str],
        *,
        vcpus: float = 1,
        attempts: int = 1,
        rules: Sequence[Mapping[str, str]] = (),
        timeout: int | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> str:
        request: dict[str, Any] = {
            "jobDefinitionName": name,
            "type": "container",
            "containerProperties": {
                "image": "local",
                "command": list(command),
                "resourceRequirements": [
                    {"type": "VCPU", "value": f"{vcpus:g}"},
                    {"type": "MEMORY", "value": "128"},
                ],
            },
            "retryStrategy": {"attempts": attempts, "evaluateOnExit": list(rules)},
            "parameters": dict(parameters or {}),
        }
        if timeout:
            request["timeout"] = {"attemptDurationSeconds": timeout}
        return str(self.client.register_job_definition(**request)["jobDefinitionArn"])

    def submit(self, name: str, definition: str, queue: str = "Q", **request: Any) -> str:
        return str(
            self.client.submit_job(
                jobName=name, jobQueue=queue, jobDefinition=definition, **request
            )["jobId"]
        )

    def describe(self, job_id: str) -> dict[str, Any]:
        (job,) = self.client.describe_jobs(jobs=[job_id])["jobs"]
        return dict(job)

    def wait_for(
        self, job_id: str, statuses: Sequence[str] = tuple(TERMINAL), *, seconds: float = 60
    ) -> dict[str, Any]:
        """The job once its status is one of ``statuses``; fails, naming the job and what it
        waited for, after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            job = self.describe(job_id)
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, (
                f"job {job_id} was {job['status']} after {seconds} s, waiting for {statuses}"
            )
            time.sleep(0.02)

    def children(self, parent_id: str) -> list[dict[str, Any]]:
        size = self.describe(parent_id)["arrayProperties"]["size"]
        ids = [f"{parent_id}:{i}" for i in range(size)]
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), DESCRIBE_JOBS_LIMIT):
            found += self.client.describe_jobs(jobs=ids[start : start + DESCRIBE_JOBS_LIMIT])[
                "jobs"
            ]
        return sorted(found, key=lambda c: c["arrayProperties"]["index"])


@contextmanager
def engine_with_processes(
    work: Path,
    *,
    vcpus: int = 2,
    queue: str = "Q",
    faults: Mapping[FaultKey, Fault] | None = None,
    fork: bool = True,
    environment: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    cores_variable: str | None = None,
    ship_log: LogShipper | None = None,
) -> Iterator[ProcessBatch]:
    """An engine with one compute environment and one queue, ``queue``, whose scheduler runs
    jobs as processes within ``vcpus`` and measures timeouts with ``clock`` (and tells each
    job its cores in ``cores_variable``, if given; hands each ended attempt's log to
    ``ship_log``, if given, as the services hand it to CloudWatch Logs)."""
    engine = LocalBatch(Place(ACCOUNT, REGION), faults=faults)
    (client,) = batch_clients(engine)
    client.create_compute_environment(computeEnvironmentName="local", type="UNMANAGED")
    client.create_job_queue(
        jobQueueName=queue,
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "local"}],
    )
    scheduler = Scheduler(
        engine,
        environment=dict(os.environ if environment is None else environment),
        work=work,
        vcpu_budget=vcpus,
        fork=fork,
        clock=clock,
        cores_variable=cores_variable,
        ship_log=ship_log,
    )
    try:
        yield ProcessBatch(engine, scheduler, client)
    finally:
        scheduler.close()
