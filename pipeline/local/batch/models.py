"""The local AWS Batch backend: the API's operations and the jobs' state machine.

States and transitions are AWS Batch's: SUBMITTED -> PENDING (waiting for dependencies) ->
RUNNABLE -> STARTING -> RUNNING -> SUCCEEDED | FAILED. An array parent's status is derived
from its children. A dependency is a whole job (STANDARD), a partner child (N_TO_N: child i
waits for child i) or the previous child of the same array (SEQUENTIAL). When a job a leaf
waits for fails, the leaf fails without running ("Dependent Job failed"). An attempt that
fails is retried while the job has attempts left and the first matching ``evaluateOnExit``
rule (none matching means RETRY) says RETRY; an attempt that timed out or was terminated is
never retried.

Which jobs run when, and the processes, are the scheduler's (:mod:`.scheduler`); this module
only moves states. Every change a caller may need later is handed to ``on_record`` (the
journal), each state change of a standard job or array parent to ``on_event`` (EventBridge).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from pipeline.batch_facts import (
    DEPENDENCY_FAILED,
    DESCRIBE_JOBS_LIMIT,
    LIST_JOBS_FILTERED_LIMIT,
    LIST_JOBS_LIMIT,
    STARTED,
    TERMINAL,
    retry_action,
)
from pipeline.local.batch.checks import check_submit_job, check_tags
from pipeline.local.batch.definitions import JobDefinition, JobQueue, Place, Registry, page_token
from pipeline.local.batch.exceptions import BatchClientError
from pipeline.local.batch.faults import HOST_TERMINATED, Fault, FaultKey
from pipeline.local.batch.job import Job, Resolved
from pipeline.local.batch.listing import filtered

LOST_WITH_THE_SERVICES = HOST_TERMINATED
"""Why an attempt that ran when the services stopped ended: its host went away, as AWS Batch
says of an instance lost under a job, and retry strategies retry it as such."""

Record = Callable[[str, dict[str, Any]], None]
"""(kind, record) -> None: the journal of what happened."""


class Placement(Protocol):
    """What the state machine tells whoever places jobs: the :class:`.scheduler.Scheduler`
    (processes on this machine), or a caller driving the engine in its own process
    (:mod:`.placements`)."""

    def enqueue(self, job: Job) -> None:
        """``job`` became RUNNABLE."""

    def stop(self, job: Job, reason: str) -> None:
        """TerminateJob of a started ``job``."""

    def wake(self) -> None:
        """Something changed that may let a job start."""


class LocalBatch:
    """AWS Batch's API over the jobs this endpoint holds. Thread-safe: every operation holds
    ``lock``, which the scheduler also holds while it starts and reaps jobs."""

    def __init__(
        self,
        place: Place,
        *,
        faults: Mapping[FaultKey, Fault] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_record: Record | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` (seconds since the epoch) stamps ``createdAt``, ``startedAt`` and
        ``stoppedAt``."""
        self.place = place
        self.clock = clock
        self.registry = Registry(place)
        self.faults = dict(faults or {})
        self.on_event = on_event
        self.on_record = on_record
        self.placement: Placement | None = None
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.order: list[Job] = []
        self._waiters: dict[str, list[Job]] = {}
        self._last_created = 0
        self._emitted: dict[str, str] = {}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- jobs ---------------------------------------------------------------------------------

    def submit_job(self, request: dict[str, Any]) -> dict[str, Any]:
        size = check_submit_job(request)
        with self.lock:
            queue = self.registry.queue(str(request.get("jobQueue") or ""))
            if queue.state != "ENABLED":
                raise BatchClientError(
                    f"Job Queue {queue.name} is DISABLED and cannot accept new jobs"
                )
            definition = self.registry.definition(str(request.get("jobDefinition") or ""))
            self._check_dependencies(request, size)
            job = self._new_job(request, queue, definition, size)
            self._add(job)
            self._record_job(job)
            self._emit(job)
            for leaf in job.leaves:
                self._wire(leaf)
        return {"jobArn": job.arn, "jobName": job.name, "jobId": job.job_id}

    def _check_dependencies(self, request: Mapping[str, Any], size: int | None) -> None:
        """The jobs a request depends on exist, and an N_TO_N partner has its size."""
        for dependency in request.get("dependsOn") or []:
            kind = dependency.get("type", "STANDARD")
            if kind == "SEQUENTIAL":
                continue
            other = self.jobs.get(str(dependency.get("jobId")))
            if other is None:
                raise BatchClientError(f"Dependent job {dependency.get('jobId')} does not exist")
            if kind == "N_TO_N" and len(other.children) != int(size or 0):
                raise BatchClientError(
                    f"An N_TO_N dependency needs two array jobs of the same size; "
                    f"{other.job_id} has {len(other.children)} children, this job {size or 0}"
                )

    def _new_job(
        self,
        request: dict[str, Any],
        queue: JobQueue,
        definition: JobDefinition,
        size: int | None,
        *,
        job_id: str | None = None,
        created: int | None = None,
    ) -> Job:
        resolved = Resolved.of(definition, request)
        job_id = job_id or str(uuid.uuid4())
        if created is None:
            # Jobs are created in the order they are submitted, whatever this machine's clock
            # does meanwhile (set back, say): a later job is never older than an earlier one.
            created = max(self.now_ms(), self._last_created + 1)
        self._last_created = max(self._last_created, created)
        job = Job(
            job_id=job_id,
            arn=self.place.arn(f"job/{job_id}"),
            name=str(request["jobName"]),
            queue=queue,
            definition=definition,
            request=request,
            resolved=resolved,
            created_at=created,
            tags=check_tags(request.get("tags")),
        )
        job.children = [
            Job(
                job_id=f"{job_id}:{index}",
                arn=self.place.arn(f"job/{job_id}:{index}"),
                name=job.name,
                queue=queue,
                definition=definition,
                request=request,
                resolved=resolved,
                created_at=created,
                parent=job,
                index=index,
            )
            for index in range(int(size or 0))
        ]
        if job.children:
            job.counts = {"SUBMITTED": len(job.children)}
        for leaf in job.leaves:
            leaf.fault = self.faults.get((job.name, leaf.index))
        return job

    def _add(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        for child in job.children:
            self.jobs[child.job_id] = child
        self.order.append(job)

    def describe_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted = list(request.get("jobs") or [])
        if len(wanted) > DESCRIBE_JOBS_LIMIT:
            raise BatchClientError(f"Maximum number of jobs supported is {DESCRIBE_JOBS_LIMIT}")
        with self.lock:
            return {"jobs": [self.jobs[j].describe() for j in wanted if j in self.jobs]}

    def list_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            candidates = self._listed(request)
            filters = request.get("filters") or []
            limit = LIST_JOBS_LIMIT
            if len(filters) > 1:
                raise BatchClientError("Only one filter can be used at a time")
            if filters and not request.get("arrayJobId"):
                # "The results are sorted by the createdAt field, with the most recent jobs
                # being first" (ListJobs, AWS Batch API Reference); up to 100 a page.
                submitted = {job.job_id: number for number, job in enumerate(self.order)}
                candidates = sorted(
                    filtered(candidates, filters[0]),
                    key=lambda j: (j.created_at, submitted.get(j.job_id, 0)),
                    reverse=True,
                )
                limit = LIST_JOBS_FILTERED_LIMIT
            else:
                # Without a filter, ListJobs lists one status, RUNNING unless another is given.
                status = request.get("jobStatus") or "RUNNING"
                candidates = [j for j in candidates if j.current_status == status]
            size = int(request.get("maxResults") or limit)
            if size < 1:
                raise BatchClientError("maxResults must be at least 1")
            size = min(size, limit)
            start = page_token(request.get("nextToken"))
            page = candidates[start : start + size]
            response: dict[str, Any] = {"jobSummaryList": [j.summary() for j in page]}
            if start + size < len(candidates):
                response["nextToken"] = str(start + size)
            return response

    def _listed(self, request: Mapping[str, Any]) -> list[Job]:
        if request.get("arrayJobId"):
            parent = self.jobs.get(str(request["arrayJobId"]))
            if parent is None or not parent.children:
                raise BatchClientError(f"Array job {request['arrayJobId']} does not exist")
            return list(parent.children)
        if request.get("jobQueue"):
            queue = self.registry.queue(str(request["jobQueue"]))
            return [j for j in self.order if j.queue is queue]
        raise BatchClientError("ListJobs needs a jobQueue or an arrayJobId")

    def cancel_job(self, request: dict[str, Any]) -> dict[str, Any]:
        self._stop(request, running_too=False)
        return {}

    def terminate_job(self, request: dict[str, Any]) -> dict[str, Any]:
        self._stop(request, running_too=True)
        return {}

    def _stop(self, request: Mapping[str, Any], *, running_too: bool) -> None:
        reason = str(request.get("reason") or "")
        if not reason:
            raise BatchClientError("reason is required")
        if not request.get("jobId"):
            raise BatchClientError("jobId is required")
        with self.lock:
            job = self.jobs.get(str(request.get("jobId")))
            if job is None:
                # AWS Batch answers 200 with an empty body for a job ID it does not hold
                # (aws/aws-cli#2551 shows `POST /v1/terminatejob` 200 `{}` for a made-up ID);
                # CancelJob "still succeeds, even if no job is canceled" (CancelJob, AWS Batch
                # API Reference). Cleanup code that stops expired job IDs works here as there.
                return
            if job.children and not job.is_terminal:
                job.stopped_by = "TerminateJob" if running_too else "CancelJob"
                job.status_reason = reason
            for leaf in job.leaves:
                if leaf.status in TERMINAL:
                    continue
                if leaf.status in STARTED:
                    if running_too and self.placement is not None:
                        leaf.stopped_by = "TerminateJob"
                        self.placement.stop(leaf, reason)
                    continue  # CancelJob leaves started jobs running, as AWS does
                if leaf.status == "PENDING" and leaf.unmet:
                    # "A PENDING job is canceled after all dependency jobs are completed"
                    # (CancelJob, AWS Batch API Reference): it fails when they have ended.
                    leaf.cancel_requested = reason
                    self._record_leaf(leaf)
                    continue
                leaf.stopped_by = "CancelJob"
                self.finish(leaf, "FAILED", reason)
        if self.placement is not None:
            self.placement.wake()

    def delete_job_queue(self, request: dict[str, Any]) -> dict[str, Any]:
        """DeleteJobQueue: once DISABLED, the queue goes, and "all jobs in the queue are
        eventually terminated" (AWS Batch API Reference): here at once."""
        with self.lock:
            queue = self.registry.queue(str(request.get("jobQueue") or ""))
            if queue.state == "DISABLED":
                for job in self.order:
                    if job.queue is queue and not job.is_terminal:
                        self._stop(
                            {"jobId": job.job_id, "reason": "the job queue was deleted"},
                            running_too=True,
                        )
            return self.registry.delete_job_queue(request)

    def get_job_queue_snapshot(self, request: dict[str, Any]) -> dict[str, Any]:
        """The RUNNABLE jobs at the front of the queue, in the order they would start."""
        with self.lock:
            queue = self.registry.queue(str(request.get("jobQueue") or ""))
            front = [
                {"jobArn": leaf.arn, "earliestTimeAtPosition": leaf.created_at}
                for job in self.order
                if job.queue is queue
                for leaf in job.leaves
                if leaf.status == "RUNNABLE"
            ][:100]
        return {"frontOfQueue": {"jobs": front, "lastUpdatedAt": self.now_ms()}}

    # --- tags -------------------------------------------------------------------------------

    def _tags(self, arn: str) -> dict[str, str]:
        for job in self.order:
            if job.arn == arn:
                return job.tags
        found = self.registry.tagged(arn)
        if found is None:
            raise BatchClientError(f"Resource {arn} does not exist")
        return found

    def tag_resource(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            tags = self._tags(str(request.get("resourceArn")))
            tags.update(check_tags({**tags, **(request.get("tags") or {})}))
        return {}

    def untag_resource(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            tags = self._tags(str(request.get("resourceArn")))
            for key in request.get("tagKeys") or []:
                tags.pop(key, None)
        return {}

    def list_tags_for_resource(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {"tags": dict(self._tags(str(request.get("resourceArn"))))}

    # --- the state machine ------------------------------------------------------------------

    def _wire(self, leaf: Job) -> None:
        """Register what ``leaf`` waits for, and make it PENDING or RUNNABLE (or fail it at
        once, when a job it depends on has already failed)."""
        failed = False
        for target in self._targets(leaf):
            status = target.current_status
            if status == "SUCCEEDED":
                continue
            if status == "FAILED":
                failed = True
                continue
            leaf.unmet += 1
            self._waiters.setdefault(target.job_id, []).append(leaf)
        if failed:
            self.finish(leaf, "FAILED", DEPENDENCY_FAILED)
        elif leaf.unmet:
            self.set_status(leaf, "PENDING")
        else:
            self.set_status(leaf, "RUNNABLE")

    def _targets(self, leaf: Job) -> list[Job]:
        """The jobs ``leaf`` waits for: a whole job (STANDARD), its partner child (N_TO_N),
        the previous child of its own array (SEQUENTIAL)."""
        targets: list[Job] = []
        for dependency in leaf.request.get("dependsOn", []):
            kind = dependency.get("type", "STANDARD")
            if kind == "SEQUENTIAL":
                if leaf.index:
                    assert leaf.parent is not None
                    targets.append(leaf.parent.children[leaf.index - 1])
                continue
            other = self.jobs[dependency["jobId"]]
            if kind == "N_TO_N" and leaf.index is not None and other.children:
                targets.append(other.children[leaf.index])
            else:
                targets.append(other)
        return targets

    def _resolve(self, target: Job) -> None:
        """``target`` has ended: its waiters move on, or fail without running."""
        status = target.current_status
        for waiter in self._waiters.pop(target.job_id, []):
            if waiter.status in TERMINAL:
                continue
            if status == "SUCCEEDED":
                waiter.unmet -= 1
                if waiter.unmet == 0 and waiter.cancel_requested is None:
                    self.set_status(waiter, "RUNNABLE")
                elif waiter.unmet == 0:
                    waiter.stopped_by = "CancelJob"
                    self.finish(waiter, "FAILED", waiter.cancel_requested)
            elif waiter.cancel_requested is not None:
                waiter.stopped_by = "CancelJob"
                self.finish(waiter, "FAILED", waiter.cancel_requested)
            else:
                self.finish(waiter, "FAILED", DEPENDENCY_FAILED)

    def set_status(self, job: Job, status: str) -> None:
        if job.status == status:
            return
        previous, job.status = job.status, status
        parent = job.parent
        if parent is not None:
            parent.counts[previous] = parent.counts.get(previous, 0) - 1
            parent.counts[status] = parent.counts.get(status, 0) + 1
            if status == "STARTING" and parent.started_at is None:
                parent.started_at = job.started_at
        if status == "RUNNABLE" and self.placement is not None:
            self.placement.enqueue(job)
        self._emit(job if parent is None else parent)
        if status in TERMINAL:
            self._record_leaf(job)
            self._resolve(job)
            if parent is not None and parent.is_terminal:
                parent.stopped_at = self.now_ms()
                self._emit(parent)
                self._resolve(parent)

    def finish(self, job: Job, status: str, reason: str | None) -> None:
        """End a leaf with ``status`` (its cores, if it ran, are the scheduler's to free).
        Only a job that started gets ``stoppedAt``: AWS Batch sets it when a job goes from
        RUNNING to its end, so a job cancelled or failed on a dependency has none."""
        job.status_reason = reason
        if job.started_at is not None:
            job.stopped_at = self.now_ms()
        self.set_status(job, status)

    def attempt_started(self, job: Job, log_stream: str, task_id: str) -> None:
        job.started_at = job.started_at or self.now_ms()
        job.log_stream = log_stream
        job.attempts.append(
            {
                "startedAt": self.now_ms(),
                # AttemptContainerDetail: the attempt's ECS task and container instance
                # (this machine); no network interface of its own, as jobs here share the
                # machine's network.
                "container": {
                    "logStreamName": log_stream,
                    "taskArn": self.place.arn(f"task/{task_id}").replace(":batch:", ":ecs:"),
                    "containerInstanceArn": job.queue.placing_environment.container_instance_arn,
                    "networkInterfaces": [],
                },
            }
        )
        self.set_status(job, "STARTING")
        self.set_status(job, "RUNNING")
        self._record_leaf(job)

    def attempt_ended(
        self,
        job: Job,
        exit_code: int | None,
        status_reason: str | None,
        *,
        retriable: bool = True,
    ) -> None:
        """An attempt ended: the job succeeds, is retried (RUNNABLE again) or fails."""
        job.exit_code = exit_code
        attempt = job.attempts[-1]
        attempt["stoppedAt"] = self.now_ms()
        attempt["statusReason"] = status_reason
        if exit_code is not None:
            attempt["container"]["exitCode"] = exit_code
        if exit_code == 0:
            self.finish(job, "SUCCEEDED", None)
            return
        retry = (
            retriable
            and job.attempt < job.resolved.attempts
            and retry_action(
                job.resolved.retry_rules, status_reason=status_reason, exit_code=exit_code
            )
            == "RETRY"
        )
        if retry:
            job.status_reason = status_reason
            self._record_leaf(job)
            self.set_status(job, "RUNNABLE")
        else:
            self.finish(job, "FAILED", status_reason)

    def _emit(self, job: Job) -> None:
        """A "Batch Job State Change" event when a standard job's or an array parent's status
        changed (array children's changes are not sent: see the docs' known differences)."""
        status = job.current_status
        if self.on_event is None or self._emitted.get(job.job_id) == status:
            return
        self._emitted[job.job_id] = status
        self.on_event(job.describe())

    # --- the journal ------------------------------------------------------------------------

    def _record_job(self, job: Job) -> None:
        if self.on_record is not None:
            self.on_record(
                "job",
                {
                    "jobId": job.job_id,
                    "jobQueue": job.queue.arn,
                    "jobDefinition": job.definition.arn,
                    "request": job.request,
                    "createdAt": job.created_at,
                    "tags": job.tags,
                },
            )

    def _record_leaf(self, leaf: Job) -> None:
        if self.on_record is not None:
            self.on_record("leaf", leaf_record(leaf))

    # --- restoring from the journal -------------------------------------------------------------

    def restore_job(self, record: Mapping[str, Any]) -> None:
        """A job as journaled at submission, with its children, not yet run."""
        queue = self.registry.queue(str(record["jobQueue"]))
        definition = self.registry.definition(str(record["jobDefinition"]), active_only=False)
        request = dict(record["request"])
        size = (request.get("arrayProperties") or {}).get("size")
        job = self._new_job(
            request,
            queue,
            definition,
            size,
            job_id=str(record["jobId"]),
            created=int(record["createdAt"]),
        )
        job.tags = dict(record.get("tags") or {})
        self._add(job)

    def restore_leaf(self, record: Mapping[str, Any]) -> None:
        """A leaf's state as journaled at an attempt's start or end."""
        leaf = self.jobs.get(str(record["jobId"]))
        if leaf is not None:
            for name in LEAF_FIELDS:
                if name in record:
                    setattr(leaf, name, record[name])

    def settle_restored(self) -> None:
        """After restoring: array parents' counts and times from their children, no event for
        what happened before. Jobs stay as they were: a restart continues them with
        :meth:`continue_restored`, a look at them (read only) shows them as they were."""
        self._last_created = max((job.created_at for job in self.order), default=0)
        for job in self.order:
            if job.children:
                job.counts = {}
                for child in job.children:
                    job.counts[child.status] = job.counts.get(child.status, 0) + 1
                starts = [c.started_at for c in job.children if c.started_at is not None]
                job.started_at = min(starts) if starts else None
                stops = [c.stopped_at for c in job.children if c.stopped_at is not None]
                job.stopped_at = max(stops) if stops and job.is_terminal else None
            self._emitted[job.job_id] = job.current_status

    def continue_restored(self) -> None:
        """The services start again where they stopped, as AWS Batch goes on after an
        instance is lost: an attempt that was running when they stopped ended with its host
        (``Host EC2 (instance ...) terminated.``), and is retried if the job's retry strategy
        says so, else fails; jobs that waited for others wait again, and jobs that were
        queued are queued again (the placement takes every RUNNABLE job when it attaches)."""
        with self.lock:
            for leaf in list(self.leaves()):
                if leaf.status in STARTED and leaf.attempts:
                    self.attempt_ended(leaf, None, LOST_WITH_THE_SERVICES)
                elif leaf.status in STARTED:  # placed, no attempt begun: queued again
                    self.set_status(leaf, "RUNNABLE")
            for leaf in list(self.leaves()):
                if leaf.status in ("SUBMITTED", "PENDING"):
                    leaf.unmet = 0
                    self._wire(leaf)

    def leaves(self) -> Iterator[Job]:
        """Jobs that run: array children and standard jobs, in submission order."""
        for job in self.order:
            yield from job.leaves


LEAF_FIELDS = (
    "status",
    "status_reason",
    "started_at",
    "stopped_at",
    "attempts",
    "exit_code",
    "log_stream",
    "stopped_by",
    "cancel_requested",
)
"""A leaf's state as the journal keeps it; a field a record lacks (an older journal) keeps
its default."""


def leaf_record(leaf: Job) -> dict[str, Any]:
    return {"jobId": leaf.job_id, **{name: getattr(leaf, name) for name in LEAF_FIELDS}}
