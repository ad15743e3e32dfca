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
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack, cast

from pipeline.document import PipelineDocument
from pipeline.notifications import DEPENDENCY_FAILED
from pipeline.spec import (
    JOB_IMAGES_DIR,
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
        KeyValuePairTypeDef,
        ListJobsRequestTypeDef,
        ListJobsResponseTypeDef,
        ResponseMetadataTypeDef,
        SubmitJobRequestTypeDef,
        SubmitJobResponseTypeDef,
        TerminateJobRequestTypeDef,
    )

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
    process: subprocess.Popen[bytes] | _Forked | None = None
    cores: tuple[int, ...] = ()
    deadline: float | None = None
    fault: Fault | None = None
    counts: dict[str, int] = field(default_factory=dict)
    """An array parent's children by status, kept as they change (never recounted)."""
    unmet: int = 0
    """Dependencies not yet met; the job becomes RUNNABLE when this reaches 0."""

    @property
    def attempt(self) -> int:
        return len(self.attempts)


class _Forked:
    """A job process forked by the launcher, with the Popen methods LocalBatch uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def ended(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired("forked job", timeout or 0)
        assert self.returncode is not None
        return self.returncode


class _Launcher:
    """The client side of :mod:`pipeline.local.launcher`: start the pre-loaded process, ask it
    for a fork per attempt, hear about exits on a reader thread."""

    def __init__(
        self, environment: Mapping[str, str], log_dir: Path, on_exit: Callable[[], None]
    ) -> None:
        self._on_exit = on_exit
        log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(environment)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(JOB_IMAGES_DIR), env.get("PYTHONPATH", "")) if p
        )
        with (log_dir / "launcher.log").open("wb") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.local.launcher"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        self._children: dict[int, _Forked] = {}
        self._early: dict[int, int] = {}
        self._pids: queue.Queue[int] = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="launcher", daemon=True)
        self._reader.start()

    def launch(
        self, argv: Sequence[str], env: Mapping[str, str], log: Path, cores: Sequence[int]
    ) -> _Forked:
        """A fork running ``argv``; OSError when the launcher is gone or does not answer."""
        assert self.process.stdin is not None
        if self.process.poll() is not None:
            raise OSError(f"the launcher exited with {self.process.returncode}")
        request = {"argv": list(argv), "env": dict(env), "log": str(log), "cores": list(cores)}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + 30
        while True:
            try:
                pid = self._pids.get(timeout=0.2)
                break
            except queue.Empty:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise OSError("the launcher did not answer") from None
        forked = _Forked(pid)
        with self._lock:
            self._children[pid] = forked
            if pid in self._early:  # it ended before we registered it
                forked.ended(self._early.pop(pid))
        return forked

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            if "pid" in message:
                self._pids.put(int(message["pid"]))
                continue
            pid, code = int(message["exited"]), int(message["code"])
            with self._lock:
                forked = self._children.pop(pid, None)
                if forked is None:
                    self._early[pid] = code
                else:
                    forked.ended(code)
            self._on_exit()
        # The launcher is gone: nobody will report its children's exits. End them (their whole
        # process groups) and say so, rather than leave them running unwatched.
        with self._lock:
            orphans, self._children = self._children, {}
        for pid, forked in orphans.items():
            _kill_group(pid)
            forked.ended(-signal.SIGKILL)
        self._on_exit()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _launchable(command: Sequence[str]) -> bool:
    """Commands the launcher can run in a fork of itself: this interpreter, -m or -c."""
    return len(command) >= 3 and command[0] == sys.executable and command[1] in ("-m", "-c")


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
        fork: bool = True,
    ) -> None:
        """
        :param fork: run ``python -m``/``python -c`` commands as forks of a pre-loaded launcher
            process (about ten times cheaper than a fresh interpreter each); other commands,
            or ``fork=False``, start a fresh process per attempt.
        """
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
        # Scheduling is event-driven: each change touches only the jobs it concerns.
        self._runnable: deque[_Job] = deque()
        self._running: dict[str, _Job] = {}
        self._waiters: dict[str, list[_Job]] = {}
        self._wake = threading.Event()
        self._launcher = _Launcher(self.environment, log_dir, self._wake.set) if fork else None
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
            job.counts = {"SUBMITTED": len(job.children)} if job.children else {}
            self._order.append(job)
            self._emit(job)
            for leaf in job.children or [job]:
                self._wire(leaf)
        self._wake.set()
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
        if self._launcher is not None:
            self._launcher.close()

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
                for child in job.children:
                    job.counts[child.status] = job.counts.get(child.status, 0) + 1
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
                self._start_runnable()
            # Woken at once by a job's exit, a submission or a stop; the tick bounds the wait
            # for what nothing announces (a fresh process's exit, a deadline).
            self._wake.wait(self._tick)
            self._wake.clear()

    def _leaves(self) -> Iterator[_Job]:
        """Jobs that run: array children and standard jobs, in submission order."""
        for job in self._order:
            yield from job.children or [job]

    def _wire(self, leaf: _Job) -> None:
        """Register what ``leaf`` waits for, and start it PENDING or RUNNABLE (or fail it at
        once, when a job it depends on has already failed)."""
        failed = False
        for target in self._targets(leaf):
            status = self._status(target)
            if status == "SUCCEEDED":
                continue
            if status == "FAILED":
                failed = True
                continue
            leaf.unmet += 1
            self._waiters.setdefault(target.job_id, []).append(leaf)
        if failed:
            self._finish(leaf, "FAILED", DEPENDENCY_FAILED)
        elif leaf.unmet:
            self._set(leaf, "PENDING")
        else:
            self._set(leaf, "RUNNABLE")

    def _targets(self, leaf: _Job) -> list[_Job]:
        """The jobs ``leaf`` waits for: a whole job (STANDARD), its partner child (N_TO_N),
        the previous child of its own array (SEQUENTIAL)."""
        targets: list[_Job] = []
        for dependency in leaf.request.get("dependsOn", []):
            kind = dependency.get("type", "STANDARD")
            if kind == "SEQUENTIAL":
                if leaf.index:
                    assert leaf.parent is not None
                    targets.append(leaf.parent.children[leaf.index - 1])
                continue
            other = self._jobs[dependency["jobId"]]
            if kind == "N_TO_N" and leaf.index is not None and other.children:
                targets.append(other.children[leaf.index])
            else:
                targets.append(other)
        return targets

    def _resolve(self, target: _Job) -> None:
        """``target`` has ended: its waiters move on (RUNNABLE when nothing else is unmet) or,
        if it failed, fail without running."""
        status = self._status(target)
        for waiter in self._waiters.pop(target.job_id, []):
            if waiter.status in TERMINAL:
                continue
            if status == "SUCCEEDED":
                waiter.unmet -= 1
                if waiter.unmet == 0:
                    self._set(waiter, "RUNNABLE")
            else:
                self._finish(waiter, "FAILED", DEPENDENCY_FAILED)

    def _start_runnable(self) -> None:
        """Start RUNNABLE jobs in order while their cores are free (a job that needs more
        than the budget runs alone with all of it)."""
        while self._runnable:
            job = self._runnable[0]
            if job.status != "RUNNABLE":
                self._runnable.popleft()  # stale: cancelled, or already started
                continue
            wanted = max(1, min(math.ceil(job.definition.vcpus), self.vcpu_budget))
            if len(self._free_cores) < wanted:
                break
            self._runnable.popleft()
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
        environment = {
            **self.environment,
            **{e["name"]: e["value"] for e in self._environment_of(job)},
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
        job.process = None
        if self._launcher is not None and _launchable(command):
            # A fork of the pre-loaded launcher: own session (process group), environment,
            # affinity and log, without a fresh interpreter's start-up.
            try:
                job.process = self._launcher.launch(command, environment, log_path, job.cores)
            except OSError:
                # Without its launcher a run still runs: a fresh process per attempt from now
                # on (the launcher's own log says why it stopped).
                self._launcher.close()
                self._launcher = None
        if job.process is None:
            with log_path.open("wb") as log:
                job.process = subprocess.Popen(
                    command,
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: a stop ends its children
                )
            with contextlib.suppress(OSError):
                os.sched_setaffinity(job.process.pid, set(job.cores))
        timeout = (job.request.get("timeout") or {}).get("attemptDurationSeconds")
        timeout = timeout or definition.timeout_seconds
        job.deadline = time.monotonic() + timeout if timeout else None
        self._running[job.job_id] = job
        self._set(job, "RUNNING")

    def _reap(self) -> None:
        now = time.monotonic()
        for job in list(self._running.values()):
            if job.process is None:
                continue
            fault = job.fault if job.attempt == 1 else None
            if fault and fault.kind in ("host-terminated", "timeout"):
                # The host goes away (or the clock runs out) whether or not the program was done.
                if job.process.poll() is None:
                    _kill(job.process)
                _reaped(job.process)
                timed_out = fault.kind == "timeout"
                reason = TIMEOUT_REASON if timed_out else HOST_TERMINATED
                self._attempt_ended(job, None, reason, timed_out=timed_out)
                continue
            if job.cancel_requested and job.process.poll() is None:
                _kill(job.process)
                _reaped(job.process)
                self._attempt_ended(job, None, job.cancel_requested, terminated=True)
                continue
            if job.deadline is not None and now > job.deadline and job.process.poll() is None:
                _kill(job.process)
                _reaped(job.process)
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
        self._running.pop(job.job_id, None)
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
                if one.status in ("STARTING", "RUNNING"):
                    if running_too:
                        one.cancel_requested = reason  # the reaper ends its process group
                    continue  # CancelJob leaves started jobs running, as on AWS
                one.cancel_requested = reason
                self._finish(one, "FAILED", reason)
        self._wake.set()

    def _set(self, job: _Job, status: str) -> None:
        if job.status == status:
            return
        previous, job.status = job.status, status
        parent = job.parent
        if parent is not None:
            parent.counts[previous] = parent.counts.get(previous, 0) - 1
            parent.counts[status] = parent.counts.get(status, 0) + 1
        if status == "RUNNABLE":
            self._runnable.append(job)
        self._emit(job)
        if parent is not None:
            self._emit(parent)
        if status in TERMINAL:
            self._resolve(job)
            if parent is not None and self._status(parent) in TERMINAL:
                self._resolve(parent)

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
        """A leaf's own status; an array parent's from its children's counts (O(1))."""
        if not job.children:
            return job.status
        counts = job.counts
        ended = counts.get("SUCCEEDED", 0) + counts.get("FAILED", 0)
        if ended == len(job.children):
            return "FAILED" if counts.get("FAILED") else "SUCCEEDED"
        if ended or counts.get("STARTING") or counts.get("RUNNING"):
            return "RUNNING"
        if counts.get("RUNNABLE"):
            return "RUNNABLE"
        return "PENDING" if counts.get("PENDING") else "SUBMITTED"

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
            counts = {
                status: job.counts.get(status, 0)
                for status in (
                    "SUBMITTED",
                    "PENDING",
                    "RUNNABLE",
                    "STARTING",
                    "RUNNING",
                    "SUCCEEDED",
                    "FAILED",
                )
            }
            described["arrayProperties"] = {"size": len(job.children), "statusSummary": counts}
            described["container"] = {"environment": self._environment_of(job)}
            reasons = (
                {c.status_reason for c in job.children if c.status == "FAILED"}
                if described["status"] == "FAILED"
                else set()
            )
            if reasons:
                # Children that never ran because of a dependency make the parent's failure a
                # dependency failure too; any other failed child makes it the parent's own.
                described["statusReason"] = (
                    DEPENDENCY_FAILED
                    if reasons == {DEPENDENCY_FAILED}
                    else "Array Child Job failed"
                )
        else:
            container: ContainerDetailTypeDef = {"environment": self._environment_of(job)}
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

    @staticmethod
    def _environment_of(job: _Job) -> list[KeyValuePairTypeDef]:
        """As DescribeJobs shows it: the definition's environment with the request's
        overrides (not this machine's, which only the process gets)."""
        overrides = job.request.get("containerOverrides") or {}
        merged = {
            **job.definition.environment,
            **{e["name"]: e["value"] for e in overrides.get("environment", [])},
        }
        return [{"name": k, "value": v} for k, v in merged.items()]

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


def _reaped(process: subprocess.Popen[bytes] | _Forked) -> None:
    """Wait for a killed process to be reaped, but never hang the scheduler on it."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _kill(process: subprocess.Popen[bytes] | _Forked) -> None:
    _kill_group(process.pid)


def _kill_group(pid: int) -> None:
    """End a job's process and its process group. The process first: one that has not yet
    made its own group (a fresh fork's first instructions) is not reached by killpg, and once
    it is killed it can start nothing more; then the group, for what it has started."""
    for kill in (os.kill, os.killpg):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


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
