"""LocalBatch: AWS Batch's scheduling semantics on this machine, and the ``--local`` run.

:class:`LocalBatch` implements the Batch client methods the submitter uses (``submit_job``,
``describe_jobs``, ``list_jobs``, ``cancel_job``, ``terminate_job``) with boto3's request and
response shapes, so the chaining and watching code that drives AWS drives it unchanged. It runs
each job's real command as a subprocess and honours:

- job states SUBMITTED -> PENDING -> RUNNABLE -> STARTING -> RUNNING -> SUCCEEDED | FAILED;
- array parents with children and ``statusSummary``; whole-job dependencies; N_TO_N (child i
  waits for child i); SEQUENTIAL (child k waits for child k-1); dependents of a failed job fail
  with "Dependent Job failed";
- ``Ref::`` parameter substitution; retry attempts and evaluate-on-exit rules; attempt
  timeouts (never retried, as on AWS);
- ``AWS_BATCH_JOB_ID``, ``AWS_BATCH_JOB_ARRAY_INDEX``, ``AWS_BATCH_JOB_ATTEMPT``,
  ``AWS_BATCH_JQ_NAME``;
- a vCPU budget (default: this machine's cores): children run in parallel within it, each
  pinned to the cores it was given; a job asking more than the budget runs alone with all of it.

Memory is not reserved locally. S3, DynamoDB and SNS for a local run come from moto's server
on a free loopback port (see :mod:`pipeline.local.services`).

Its methods take and return the request and response TypedDicts of the boto3 stubs, and mypy
checks it against :class:`pipeline.runs.api.BatchApi`, the protocol the engine calls.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack, cast

from pipeline.document import PipelineDocument
from pipeline.notifications import DEPENDENCY_FAILED
from pipeline.spec import (
    RETRY_RULES,
    TERMINAL,
    WORKERS,
    RetryRule,
    RunEnv,
    batch_pattern_matches,
)

if TYPE_CHECKING:
    from mypy_boto3_batch.type_defs import (
        CancelJobRequestTypeDef,
        ComputeEnvironmentDetailTypeDef,
        ContainerDetailTypeDef,
        DescribeComputeEnvironmentsRequestTypeDef,
        DescribeComputeEnvironmentsResponseTypeDef,
        DescribeJobDefinitionsRequestTypeDef,
        DescribeJobDefinitionsResponseTypeDef,
        DescribeJobQueuesRequestTypeDef,
        DescribeJobQueuesResponseTypeDef,
        DescribeJobsRequestTypeDef,
        DescribeJobsResponseTypeDef,
        FrontOfQueueJobSummaryTypeDef,
        GetJobQueueSnapshotRequestTypeDef,
        GetJobQueueSnapshotResponseTypeDef,
        JobDefinitionTypeDef,
        JobDetailTypeDef,
        JobQueueDetailTypeDef,
        JobSummaryTypeDef,
        ListJobsRequestTypeDef,
        ListJobsResponseTypeDef,
        ResponseMetadataTypeDef,
        SubmitJobRequestTypeDef,
        SubmitJobResponseTypeDef,
        TerminateJobRequestTypeDef,
    )

ARRAY_CHILD_FAILED = "Array Child Job failed"
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
HOST_TERMINATED = "Host EC2 (instance i-0local) terminated."


@dataclass(frozen=True)
class LocalJobDefinition:
    """What RegisterJobDefinition would hold, for a local job."""

    name: str
    command: tuple[str, ...]
    vcpus: float
    memory_mib: int
    retry_attempts: int = 1
    retry_rules: tuple[RetryRule, ...] = RETRY_RULES
    timeout_seconds: int | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_document(
        cls,
        document: PipelineDocument,
        *,
        python: str = sys.executable,
        environment: Mapping[str, str] | None = None,
    ) -> dict[str, LocalJobDefinition]:
        """The local "deployment": one definition per job of the document, keyed by definition
        name, with the resources, timeouts, attempts, parameter defaults and environment a
        stack registers (``python`` replaces the image's ``python``)."""
        registered = {
            **document.resource_env,
            RunEnv.ARRAY_SIZE: str(document.spec.array_size),
            **(environment or {}),
        }
        return {
            document.job_definitions[job.key]: cls(
                name=document.job_definitions[job.key],
                command=(python, *job.command[1:]),
                vcpus=job.vcpus,
                memory_mib=job.memory_mib,
                retry_attempts=job.retry_attempts,
                timeout_seconds=job.timeout_seconds,
                parameters={
                    p: document.parameter_defaults(job.key).get(p, "") for p in job.parameters
                },
                environment=registered,
            )
            for job in document.spec
        }


@dataclass(frozen=True)
class Fault:
    """A failure to inject into one attempt: ``exit:CODE``, ``host-terminated`` or ``timeout``."""

    kind: str
    exit_code: int | None = None

    @classmethod
    def parse(cls, text: str) -> Fault:
        if text in ("host-terminated", "timeout"):
            return cls(text)
        if text.startswith("exit:") and text[5:].isdigit() and 0 < int(text[5:]) < 256:
            return cls("exit", int(text[5:]))
        raise ValueError(
            f"fault {text!r} must be exit:CODE (CODE from 1 to 255), host-terminated or timeout"
        )


@dataclass
class _Job:
    job_id: str
    name: str
    definition: LocalJobDefinition
    request: SubmitJobRequestTypeDef
    created_at: int
    parent: _Job | None = None
    index: int | None = None
    children: list[_Job] = field(default_factory=list)
    status: str = "SUBMITTED"
    status_reason: str | None = None
    started_at: int | None = None
    stopped_at: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    container_reason: str | None = None
    log_stream: str | None = None
    cancel_requested: str | None = None
    process: subprocess.Popen[bytes] | None = None
    cores: tuple[int, ...] = ()
    deadline: float | None = None
    fault: Fault | None = None

    @property
    def attempt(self) -> int:
        return len(self.attempts)


class LocalBatch:
    """An in-process AWS Batch queue. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        *,
        queue: str,
        definitions: Mapping[str, LocalJobDefinition],
        vcpu_budget: int | None = None,
        environment: Mapping[str, str] | None = None,
        log_dir: Path,
        faults: Mapping[tuple[str, int | None], Fault] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        region: str = "us-east-1",
        tick: float = 0.05,
    ) -> None:
        self.queue = queue
        self.definitions = dict(definitions)
        self.vcpu_budget = vcpu_budget or len(os.sched_getaffinity(0))
        self.environment = dict(os.environ if environment is None else environment)
        self.log_dir = log_dir
        self.faults = dict(faults or {})
        self.on_event = on_event
        self.region = region
        self._jobs: dict[str, _Job] = {}
        self._emitted: dict[str, str] = {}
        self._order: list[_Job] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._tick = tick
        self._free_cores = list(range(self.vcpu_budget))
        self._scheduler = threading.Thread(target=self._run, name="LocalBatch", daemon=True)
        self._scheduler.start()

    # --- the Batch API subset ------------------------------------------------------------------

    def submit_job(self, **request: Unpack[SubmitJobRequestTypeDef]) -> SubmitJobResponseTypeDef:
        definition = self._definition(request["jobDefinition"])
        queue = request["jobQueue"]
        if queue not in (self.queue, _queue_arn(self.queue)):
            raise _client_error("SubmitJob", f"Job queue {queue} does not exist")
        with self._lock:
            for dependency in request.get("dependsOn", []):
                if "jobId" in dependency and dependency["jobId"] not in self._jobs:
                    raise _client_error("SubmitJob", f"Dependency {dependency['jobId']} not found")
            job = _Job(
                job_id=str(uuid.uuid4()),
                name=request["jobName"],
                definition=definition,
                request=request,
                created_at=_now_ms(),
            )
            size = (request.get("arrayProperties") or {}).get("size")
            if size is not None:
                if not 2 <= size <= 10_000:
                    raise _client_error("SubmitJob", "Array size must be between 2 and 10,000")
                job.children = [
                    _Job(
                        job_id=f"{job.job_id}:{i}",
                        name=job.name,
                        definition=definition,
                        request=request,
                        created_at=job.created_at,
                        parent=job,
                        index=i,
                    )
                    for i in range(size)
                ]
            for one in [job, *job.children]:
                self._jobs[one.job_id] = one
                one.fault = self.faults.get((job.name, one.index))
            self._order.append(job)
            self._emit(job)
        return {
            "jobArn": _job_arn(job.job_id),
            "jobName": job.name,
            "jobId": job.job_id,
            "ResponseMetadata": _METADATA,
        }

    def describe_jobs(
        self, **request: Unpack[DescribeJobsRequestTypeDef]
    ) -> DescribeJobsResponseTypeDef:
        jobs = request["jobs"]
        if len(jobs) > 100:
            raise _client_error("DescribeJobs", "A maximum of 100 jobs may be described at once")
        with self._lock:
            described = [self._describe(self._jobs[j]) for j in jobs if j in self._jobs]
            return {"jobs": described, "ResponseMetadata": _METADATA}

    def list_jobs(self, **request: Unpack[ListJobsRequestTypeDef]) -> ListJobsResponseTypeDef:
        arrayJobId = request.get("arrayJobId")  # noqa: N806 - boto3's names
        jobStatus = request.get("jobStatus")  # noqa: N806
        filters = request.get("filters")
        maxResults = request.get("maxResults")  # noqa: N806
        nextToken = request.get("nextToken")  # noqa: N806
        with self._lock:
            if arrayJobId is not None:
                parent = self._jobs.get(arrayJobId)
                candidates = list(parent.children) if parent else []
            else:
                candidates = list(self._order)
            if filters:
                names = [v for f in filters if f["name"] == "JOB_NAME" for v in f["values"]]
                candidates = [
                    j for j in candidates if any(batch_pattern_matches(n, j.name) for n in names)
                ]
            elif jobStatus is not None:
                candidates = [j for j in candidates if self._status(j) == jobStatus]
            start = int(nextToken or 0)
            end = len(candidates) if maxResults is None else start + maxResults
            page = candidates[start:end]
            response: ListJobsResponseTypeDef = {
                "jobSummaryList": [self._summary(j) for j in page],
                "ResponseMetadata": _METADATA,
            }
            if end < len(candidates):
                response["nextToken"] = str(end)
            return response

    def cancel_job(self, **request: Unpack[CancelJobRequestTypeDef]) -> dict[str, Any]:
        self._stop_job(request["jobId"], request["reason"], running_too=False)
        return {}

    def terminate_job(self, **request: Unpack[TerminateJobRequestTypeDef]) -> dict[str, Any]:
        self._stop_job(request["jobId"], request["reason"], running_too=True)
        return {}

    def describe_job_queues(
        self, **request: Unpack[DescribeJobQueuesRequestTypeDef]
    ) -> DescribeJobQueuesResponseTypeDef:
        """The one queue, backed by one UNMANAGED compute environment: this machine."""
        wanted = request.get("jobQueues") or [self.queue]
        queue: JobQueueDetailTypeDef = {
            "jobQueueName": self.queue,
            "jobQueueArn": _queue_arn(self.queue),
            "state": "ENABLED",
            "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": _LOCAL_CE_ARN}],
            "status": "VALID",
        }
        found = [queue] if any(q in (self.queue, _queue_arn(self.queue)) for q in wanted) else []
        return {"jobQueues": found, "ResponseMetadata": _METADATA}

    def describe_compute_environments(
        self, **request: Unpack[DescribeComputeEnvironmentsRequestTypeDef]
    ) -> DescribeComputeEnvironmentsResponseTypeDef:
        """An UNMANAGED environment has no instance types or maxvCpus to judge a job by: a job
        asking more than this machine's cores runs alone with all of them."""
        environment: ComputeEnvironmentDetailTypeDef = {
            "computeEnvironmentName": "local",
            "computeEnvironmentArn": _LOCAL_CE_ARN,
            "type": "UNMANAGED",
            "state": "ENABLED",
            "status": "VALID",
        }
        return {"computeEnvironments": [environment], "ResponseMetadata": _METADATA}

    def get_job_queue_snapshot(
        self, **request: Unpack[GetJobQueueSnapshotRequestTypeDef]
    ) -> GetJobQueueSnapshotResponseTypeDef:
        """The RUNNABLE jobs in the order they would start."""
        with self._lock:
            front: list[FrontOfQueueJobSummaryTypeDef] = []
            for job in self._leaves():
                if job.status == "RUNNABLE" and len(front) < 100:
                    front.append(
                        {"jobArn": _job_arn(job.job_id), "earliestTimeAtPosition": job.created_at}
                    )
        return {
            "frontOfQueue": {"jobs": front, "lastUpdatedAt": _now_ms()},
            "frontOfQuotaShares": {},
            "queueUtilization": {},
            "ResponseMetadata": _METADATA,
        }

    def describe_job_definitions(
        self, **request: Unpack[DescribeJobDefinitionsRequestTypeDef]
    ) -> DescribeJobDefinitionsResponseTypeDef:
        name = request.get("jobDefinitionName")
        found: list[JobDefinitionTypeDef] = [
            {
                "jobDefinitionName": d.name,
                "jobDefinitionArn": _definition_arn(self.region, d.name),
                "revision": 1,
                "type": "container",
                "status": "ACTIVE",
                "parameters": dict(d.parameters),
                "timeout": {"attemptDurationSeconds": d.timeout_seconds or 0},
                "retryStrategy": {"attempts": d.retry_attempts},
                "containerProperties": {
                    "command": list(d.command),
                    "resourceRequirements": [
                        {"type": "VCPU", "value": f"{d.vcpus:g}"},
                        {"type": "MEMORY", "value": str(d.memory_mib)},
                    ],
                    "environment": [{"name": k, "value": v} for k, v in d.environment.items()],
                },
            }
            for d in self.definitions.values()
            if name in (None, d.name)
        ]
        return {"jobDefinitions": found, "ResponseMetadata": _METADATA}

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> LocalBatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop scheduling and end every process still running (whole process groups)."""
        self._stop.set()
        self._scheduler.join(timeout=5)
        with self._lock:
            for job in self._jobs.values():
                if job.process is not None and job.process.poll() is None:
                    _kill(job.process)
            for job in self._jobs.values():
                if job.process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        job.process.wait(timeout=5)

    # --- saving and restoring ended jobs -----------------------------------------------------

    _SAVED_FIELDS = (
        "job_id",
        "name",
        "created_at",
        "status",
        "status_reason",
        "started_at",
        "stopped_at",
        "attempts",
        "exit_code",
        "log_stream",
    )

    def export_jobs(self) -> list[dict[str, Any]]:
        """The queue's jobs as JSON-able records (for a later ``resume`` of a local run)."""
        with self._lock:
            if any(j.status not in TERMINAL for j in self._leaves()):
                raise RuntimeError("only a queue whose jobs have all ended can be saved")
            return [
                {
                    **{name: getattr(job, name) for name in self._SAVED_FIELDS},
                    "definition": job.definition.name,
                    "request": dict(job.request),
                    "children": [
                        {name: getattr(c, name) for name in self._SAVED_FIELDS}
                        for c in job.children
                    ],
                }
                for job in self._order
            ]

    def import_jobs(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Put ended jobs saved by :meth:`export_jobs` back on the queue, as history."""
        with self._lock:
            for record in records:
                definition = self._definition(record["definition"])
                job = _Job(
                    definition=definition,
                    request=record["request"],
                    **{k: record[k] for k in self._SAVED_FIELDS},
                )
                job.children = [
                    _Job(
                        definition=definition,
                        request=record["request"],
                        parent=job,
                        index=i,
                        **{k: child[k] for k in self._SAVED_FIELDS},
                    )
                    for i, child in enumerate(record["children"])
                ]
                for one in [job, *job.children]:
                    self._jobs[one.job_id] = one
                    self._emitted[one.job_id] = self._status(one)
                self._order.append(job)

    def log_path(self, job_id: str, attempt: int | None = None) -> Path:
        job = self._jobs[job_id]
        number = attempt or max(job.attempt, 1)
        where = job.name if job.index is None else f"{job.name}/{job.index:05d}"
        return self.log_dir / where / f"{job.job_id.split(':')[0]}-attempt-{number}.log"

    # --- scheduling ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._reap()
                self._advance()
                self._start_runnable()
            self._stop.wait(self._tick)

    def _leaves(self) -> Iterator[_Job]:
        """Jobs that run: array children and standard jobs, in submission order."""
        for job in self._order:
            yield from job.children or [job]

    def _advance(self) -> None:
        for job in self._leaves():
            if job.status in TERMINAL or job.status in ("STARTING", "RUNNING"):
                continue
            if job.cancel_requested:
                self._finish(job, "FAILED", job.cancel_requested)
                continue
            state = self._dependency_state(job)
            if state == "failed":
                self._finish(job, "FAILED", DEPENDENCY_FAILED)
            elif state == "waiting":
                self._set(job, "PENDING")
            elif job.status in ("SUBMITTED", "PENDING"):
                self._set(job, "RUNNABLE")

    def _dependency_state(self, job: _Job) -> str:
        """'ready', 'waiting' or 'failed'."""
        waits: list[str] = []
        for dependency in job.request.get("dependsOn", []):
            kind = dependency.get("type", "STANDARD")
            if kind == "SEQUENTIAL":
                if job.index:
                    assert job.parent is not None
                    waits.append(job.parent.children[job.index - 1].status)
                continue
            other = self._jobs[dependency["jobId"]]
            if kind == "N_TO_N" and job.index is not None and other.children:
                waits.append(other.children[job.index].status)
            else:
                waits.append(self._status(other))
        if "FAILED" in waits:
            return "failed"
        return "ready" if all(w == "SUCCEEDED" for w in waits) else "waiting"

    def _start_runnable(self) -> None:
        for job in self._leaves():
            if job.status != "RUNNABLE":
                continue
            wanted = max(1, min(math.ceil(job.definition.vcpus), self.vcpu_budget))
            if len(self._free_cores) < wanted:
                if wanted == self.vcpu_budget:
                    break  # a job that needs the whole budget waits for it, in order
                continue
            job.cores = tuple(self._free_cores[:wanted])
            del self._free_cores[:wanted]
            self._launch(job)

    def _launch(self, job: _Job) -> None:
        definition = job.definition
        parameters = {**definition.parameters, **(job.request.get("parameters") or {})}
        command = [_substitute(arg, parameters) for arg in definition.command]
        if job.fault is not None and job.fault.kind == "exit" and job.attempt == 0:
            # An injected application error: the attempt fails as the program would.
            code = job.fault.exit_code
            script = f"import sys; print('injected fault: exit {code}'); sys.exit({code})"
            command = [sys.executable, "-c", script]
        overrides = job.request.get("containerOverrides") or {}
        environment = {
            **self.environment,
            **definition.environment,
            **{e["name"]: e["value"] for e in overrides.get("environment", [])},
            "AWS_BATCH_JOB_ID": job.job_id,
            "AWS_BATCH_JOB_ATTEMPT": str(job.attempt + 1),
            "AWS_BATCH_JQ_NAME": self.queue,
            # The cores this job may use; cpu_allowance() also sees the CPU affinity set below.
            WORKERS: str(len(job.cores)),
        }
        if job.index is not None:
            environment["AWS_BATCH_JOB_ARRAY_INDEX"] = str(job.index)
        log_path = self.log_path(job.job_id, job.attempt + 1)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._set(job, "STARTING")
        job.started_at = job.started_at or _now_ms()
        job.log_stream = f"{job.name}/default/{job.job_id.replace(':', '-')}"
        job.attempts.append(
            {"startedAt": _now_ms(), "container": {"logStreamName": job.log_stream}}
        )
        with log_path.open("wb") as log:
            job.process = subprocess.Popen(
                command,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so a stop ends its children
            )
        with contextlib.suppress(OSError):
            os.sched_setaffinity(job.process.pid, set(job.cores))
        timeout = (job.request.get("timeout") or {}).get("attemptDurationSeconds")
        timeout = timeout or definition.timeout_seconds
        job.deadline = time.monotonic() + timeout if timeout else None
        self._set(job, "RUNNING")

    def _reap(self) -> None:
        now = time.monotonic()
        for job in self._leaves():
            if job.status != "RUNNING" or job.process is None:
                continue
            fault = job.fault if job.attempt == 1 else None
            if fault and fault.kind in ("host-terminated", "timeout"):
                # The host goes away (or the clock runs out) whether or not the program was done.
                if job.process.poll() is None:
                    _kill(job.process)
                job.process.wait()
                timed_out = fault.kind == "timeout"
                reason = TIMEOUT_REASON if timed_out else HOST_TERMINATED
                self._attempt_ended(job, None, reason, timed_out=timed_out)
                continue
            if job.cancel_requested and job.process.poll() is None:
                _kill(job.process)
                job.process.wait()
                self._attempt_ended(job, None, job.cancel_requested, terminated=True)
                continue
            if job.deadline is not None and now > job.deadline and job.process.poll() is None:
                _kill(job.process)
                job.process.wait()
                self._attempt_ended(job, None, TIMEOUT_REASON, timed_out=True)
                continue
            code = job.process.poll()
            if code is None:
                continue
            self._attempt_ended(
                job, code, None if code == 0 else "Essential container in task exited"
            )

    def _attempt_ended(
        self,
        job: _Job,
        exit_code: int | None,
        status_reason: str | None,
        *,
        timed_out: bool = False,
        terminated: bool = False,
    ) -> None:
        self._free_cores.extend(job.cores)
        self._free_cores.sort()
        job.cores = ()
        job.exit_code = exit_code
        attempt = job.attempts[-1]
        attempt["stoppedAt"] = _now_ms()
        attempt["statusReason"] = status_reason
        if exit_code is not None:
            attempt["container"]["exitCode"] = exit_code
        if exit_code == 0:
            self._finish(job, "SUCCEEDED", None)
            return
        retry = (
            not timed_out
            and not terminated
            and job.attempt < job.definition.retry_attempts
            and _action(job.definition.retry_rules, status_reason, None, exit_code) == "RETRY"
        )
        if retry:
            job.status_reason = status_reason
            self._set(job, "RUNNABLE")
        else:
            self._finish(job, "FAILED", status_reason)

    def _finish(self, job: _Job, status: str, reason: str | None) -> None:
        """End a job; a job that ran has given its cores back in _attempt_ended."""
        job.status_reason = reason
        job.stopped_at = _now_ms()
        self._set(job, status)

    def _stop_job(self, job_id: str, reason: str, *, running_too: bool) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise _client_error("TerminateJob", f"Job {job_id} not found")
            for one in job.children or [job]:
                if one.status in TERMINAL:
                    continue
                if one.status in ("STARTING", "RUNNING") and not running_too:
                    continue  # CancelJob leaves started jobs running, as on AWS
                one.cancel_requested = reason
            self._advance()

    def _set(self, job: _Job, status: str) -> None:
        if job.status == status:
            return
        job.status = status
        self._emit(job)
        if job.parent is not None:
            self._emit(job.parent)

    def _emit(self, job: _Job) -> None:
        """An EventBridge "Batch Job State Change" event, when the job's status changed (an
        array parent's status is derived from its children, so it is checked each time)."""
        status = self._status(job)
        if self.on_event is None or self._emitted.get(job.job_id) == status:
            return
        self._emitted[job.job_id] = status
        self.on_event(
            {
                "source": "aws.batch",
                "detail-type": "Batch Job State Change",
                "region": self.region,
                "time": _now_ms(),
                "detail": self._describe(job),
            }
        )

    # --- views ------------------------------------------------------------------------------

    def _status(self, job: _Job) -> str:
        if not job.children:
            return job.status
        statuses = [c.status for c in job.children]
        if all(s in TERMINAL for s in statuses):
            return "FAILED" if "FAILED" in statuses else "SUCCEEDED"
        if any(s in ("STARTING", "RUNNING", *TERMINAL) for s in statuses):
            return "RUNNING"
        if any(s == "RUNNABLE" for s in statuses):
            return "RUNNABLE"
        return "PENDING" if any(s == "PENDING" for s in statuses) else "SUBMITTED"

    def _summary(self, job: _Job) -> JobSummaryTypeDef:
        summary: JobSummaryTypeDef = {
            "jobArn": _job_arn(job.job_id),
            "jobId": job.job_id,
            "jobName": job.name,
            "createdAt": job.created_at,
            "status": cast("Any", self._status(job)),
        }
        if job.index is not None:
            summary["arrayProperties"] = {"index": job.index}
        return summary

    def _describe(self, job: _Job) -> JobDetailTypeDef:
        request = job.request
        described: JobDetailTypeDef = {
            "jobArn": _job_arn(job.job_id),
            "jobId": job.job_id,
            "jobName": job.name,
            "createdAt": job.created_at,
            "status": cast("Any", self._status(job)),
            # The API model marks startedAt required, but Batch omits it until a job starts;
            # it is removed below when the job has not started.
            "startedAt": job.started_at or 0,
            "jobQueue": self.queue,
            "jobDefinition": job.definition.name,
            "dependsOn": list(request.get("dependsOn", [])),
            "parameters": {**job.definition.parameters, **(request.get("parameters") or {})},
            "tags": dict(request.get("tags") or {})
            if job.parent is None or request.get("propagateTags")
            else {},
            "attempts": [cast("Any", dict(a)) for a in job.attempts],
        }
        if job.index is not None:
            described["arrayProperties"] = {"index": job.index}
        if job.children:
            counts = dict.fromkeys(
                ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"),
                0,
            )
            for child in job.children:
                counts[child.status] += 1
            described["arrayProperties"] = {"size": len(job.children), "statusSummary": counts}
            reasons = {c.status_reason for c in job.children if c.status == "FAILED"}
            if described["status"] == "FAILED" and reasons:
                # Children that never ran because of a dependency make the parent's failure a
                # dependency failure too; any other failed child makes it the parent's own.
                described["statusReason"] = (
                    DEPENDENCY_FAILED
                    if reasons == {DEPENDENCY_FAILED}
                    else "Array Child Job failed"
                )
        else:
            container: ContainerDetailTypeDef = {}
            if job.exit_code is not None:
                container["exitCode"] = job.exit_code
            if job.log_stream is not None:
                container["logStreamName"] = job.log_stream
            described["container"] = container
            if job.status_reason:
                described["statusReason"] = job.status_reason
        if job.stopped_at is not None:
            described["stoppedAt"] = job.stopped_at
        if job.started_at is None:
            del cast("dict[str, Any]", described)["startedAt"]
        return described

    def _definition(self, reference: str) -> LocalJobDefinition:
        name = reference.rsplit("/", 1)[-1].split(":")[0]
        if name not in self.definitions:
            raise _client_error("SubmitJob", f"Job definition {reference} does not exist")
        return self.definitions[name]


def _action(
    rules: Sequence[RetryRule], status_reason: str | None, reason: str | None, exit_code: int | None
) -> str:
    for rule in rules:
        if rule.matches(status_reason=status_reason, reason=reason, exit_code=exit_code):
            return rule.action
    return "RETRY"  # Batch retries when no rule matches


def _substitute(argument: str, parameters: Mapping[str, str]) -> str:
    if argument.startswith("Ref::") and argument[5:] in parameters:
        return parameters[argument[5:]]
    return argument


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _now_ms() -> int:
    return int(time.time() * 1000)


_ACCOUNT = "000000000000"
_LOCAL_CE_ARN = f"arn:aws:batch:local:{_ACCOUNT}:compute-environment/local"
_METADATA: ResponseMetadataTypeDef = {
    "RequestId": "local",
    "HTTPStatusCode": 200,
    "HTTPHeaders": {},
    "RetryAttempts": 0,
}


def _job_arn(job_id: str) -> str:
    return f"arn:aws:batch:local:{_ACCOUNT}:job/{job_id}"


def _definition_arn(region: str, name: str) -> str:
    return f"arn:aws:batch:{region}:{_ACCOUNT}:job-definition/{name}:1"


def _queue_arn(queue: str) -> str:
    return f"arn:aws:batch:local:{_ACCOUNT}:job-queue/{queue}"


def _client_error(operation: str, message: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "ClientException", "Message": message}}, operation)


if TYPE_CHECKING:
    from pipeline.runs.api import BatchApi

    def _local_batch_is_a_batch_api(batch: LocalBatch) -> BatchApi:
        """mypy checks this: LocalBatch has the engine's methods with boto3's shapes."""
        return batch
