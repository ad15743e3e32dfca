"""A moto-backed AWS Batch for the submitter's tests.

moto's Batch API (``use_docker: False``) does what it does honestly: it registers definitions,
accepts the five jobs, records arrays, dependencies, parameters and tags, and gives job IDs.
It also marks every job and array child SUCCEEDED the moment it is submitted. The harness
creates what a deployed PipelineStack would have (service role, compute environment,
ProdQueue, the five job definitions from the spec, a stack with the pipeline's outputs).

What a test needs beyond that (jobs held in a state, a child that fails, CancelJob and
TerminateJob taking effect, real times) is a test-owned overlay: job ID -> status, status
reason, exit code, times, per standard job or array child. The harness applies it to what the
client sees and to nothing else, through botocore's events on its own clients:
``before-parameter-build`` and ``after-call`` of SubmitJob (what was submitted: array size,
dependencies), CancelJob and TerminateJob (the stop), ListJobs (filter and page by the
overlaid status) and DescribeJobs (the overlaid details). moto's own objects are never touched.

The responses keep the shapes of the Batch API reference (DescribeJobs ``JobDetail``, ListJobs
``JobSummary``), and the overlay follows the semantics documented there and in the AWS Batch
User Guide ("Array jobs", "Job dependencies", "Job states"):

* A job is PENDING while a job it depends on has not succeeded, and FAILED with the status
  reason ``Dependent Job failed`` (``pipeline.spec.DEPENDENCY_FAILED``) once one has failed;
  it never starts. An ``N_TO_N`` dependency makes child *i* wait for child *i* of the other
  array, a ``SEQUENTIAL`` one for child *i - 1* of its own array; any other dependency on an
  array waits for the whole array.
* An array parent is never run itself: it is SUBMITTED until a child moves on, PENDING while
  any child has not finished ("Array job parents are updated to PENDING when any child job is
  updated to RUNNABLE and remain in PENDING status while child jobs are running", ListJobs
  ``jobStatus``), then SUCCEEDED if every child succeeded, else FAILED. Its
  ``arrayProperties.statusSummary`` counts the children by status. The API reference does not
  name the failed parent's status reason; the harness gives the one the library's local
  endpoint gives (``Array Child Job failed``, or ``Dependent Job failed`` when no child ran).
  Its ``startedAt`` is its first child's, its ``stoppedAt`` (once it has finished) its last
  child's.
* ``startedAt`` is when a job went from STARTING to RUNNING and ``stoppedAt`` when it went from
  RUNNING to SUCCEEDED or FAILED: a job that never ran (held, cancelled while queued, failed on
  a dependency) has neither, no log stream and no attempts. A job that ran to its end has one
  attempt, whose ``container`` carries the exit code and log stream as ``container`` does.
  (botocore's model marks ``startedAt`` required in ``JobDetail``; the service leaves it out
  until the job starts, as its own description of the field says.)
* CancelJob ends a SUBMITTED, PENDING or RUNNABLE job FAILED with the given reason; a PENDING
  job only once the jobs it depends on have ended; STARTING and RUNNING jobs are left running.
  TerminateJob also ends STARTING and RUNNING jobs FAILED with the reason. On an array parent
  both act on every child. (These take effect once :meth:`MotoBatch.apply_stops` is called;
  otherwise the jobs stay as they were, and moto only records the reason.)
* ListJobs without ``filters`` lists one status, RUNNING unless ``jobStatus`` names another;
  with ``filters`` it lists every status. Pages hold ``maxResults`` jobs, at most 100 with
  ``filters`` and 1,000 without. Children listed by ``arrayJobId`` carry
  ``arrayProperties.index``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.config import Config
from moto import mock_aws
from moto.core.models import botocore_stubber

from pipeline.batch_facts import ARRAY_CHILD_FAILED, DEPENDENCY_FAILED, TERMINAL
from pipeline.document import (
    DOCUMENT_OUTPUT,
    QUEUE_NAME_OUTPUT,
    QUEUE_OUTPUT,
    PipelineDocument,
)
from pipeline.spec import DEFAULT_SPEC, RESOURCES, RUN_TAG, JobSpec, PipelineSpec

REGION = "us-east-1"
STACK = "ArrayJobPipeline"
FAST_RETRIES = Config(retries={"mode": "standard", "max_attempts": 4})

STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
MOTO_STATUS = "SUCCEEDED"
"""Where moto's Batch without Docker puts every job and child at once."""
DESCRIBE_LIMIT = 100
LIST_LIMIT_FILTERED = 100
LIST_LIMIT = 1000

_SUBMITTED = "moto_batch.submitted"
_LISTING = "moto_batch.listing"
_STOPPING = "moto_batch.stopping"


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- the overlay --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeafState:
    """One standard job or array child as the client sees it."""

    status: str
    reason: str | None = None
    exit_code: int | None = None
    ran: bool = False
    """It started (it has ``startedAt``, a log stream, and at its end an attempt)."""
    started_at: int | None = None
    stopped_at: int | None = None
    log_stream_name: str | None = None
    stopped_by: str | None = None
    """``CancelJob`` or ``TerminateJob`` when a stop ended it."""


@dataclass(frozen=True)
class Recorded:
    """What SubmitJob asked for, as the overlay needs it."""

    job_id: str
    size: int | None
    depends_on: tuple[Mapping[str, str], ...]
    submitted_at: int
    held: str | None
    """The status its leaves stay in (``hold_new_jobs``), else moto's."""

    def leaf_ids(self) -> list[str]:
        return [f"{self.job_id}:{i}" for i in range(self.size)] if self.size else [self.job_id]


@dataclass(frozen=True)
class Seen:
    """A job as DescribeJobs and ListJobs show it: a leaf's state, or an array parent's,
    derived from its children."""

    status: str
    reason: str | None
    exit_code: int | None
    ran: bool
    started_at: int | None
    stopped_at: int | None
    log_stream_name: str | None = None
    stopped_by: str | None = None
    index: int | None = None
    size: int | None = None
    status_summary: Mapping[str, int] | None = None


def _started(status: str) -> bool:
    return status in ("RUNNING", "SUCCEEDED")


@dataclass
class Overlay:
    """The test-owned states, and how they reach a client's parsed responses."""

    recorded: dict[str, Recorded] = field(default_factory=dict)
    leaves: dict[str, LeafState] = field(default_factory=dict)
    parent_stops: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Array parent ID -> (operation, reason) of a stop asked of the parent itself."""
    held: str | None = None
    stops_apply: bool = False

    def install(self, client: Any) -> None:
        events = client.meta.events
        # First, so that a test's own after-call hook finds the job it was given.
        events.register_first("before-parameter-build.batch.SubmitJob", self._submitting)
        events.register_first("after-call.batch.SubmitJob", self._submitted)
        # Last, so that a test's own hook still sees the parameters as the caller gave them.
        events.register_last("before-parameter-build.batch.ListJobs", self._listing)
        # First, so that a test's own after-call hook reads what the client will see.
        events.register_first("after-call.batch.ListJobs", self._listed)
        events.register_first("after-call.batch.DescribeJobs", self._described)
        for operation in ("CancelJob", "TerminateJob"):
            events.register(f"before-parameter-build.batch.{operation}", self._stopping)
            events.register(f"after-call.batch.{operation}", self._stopped)

    # --- what tests set ------------------------------------------------------------------------

    def set_leaves(self, job_id: str, state: LeafState) -> None:
        """``state`` for a standard job or child, or for every child of an array parent."""
        recorded = self.recorded.get(job_id)
        if recorded is None:
            self.set_leaf(job_id, state)
            return
        for leaf_id in recorded.leaf_ids():
            self.leaves[leaf_id] = state

    def set_leaf(self, leaf_id: str, state: LeafState) -> None:
        parent_id, _, index = leaf_id.rpartition(":")
        recorded = self._recorded(parent_id or leaf_id)
        if parent_id:
            is_leaf = index.isdigit() and int(index) < (recorded.size or 0)
        else:
            is_leaf = recorded.size is None
        if not is_leaf:
            raise KeyError(f"{leaf_id} is not a standard job or array child")
        self.leaves[leaf_id] = state

    def _recorded(self, job_id: str) -> Recorded:
        try:
            return self.recorded[job_id]
        except KeyError:
            raise KeyError(f"{job_id} is not a job the harness saw submitted") from None

    # --- the hooks -----------------------------------------------------------------------------

    def _submitting(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[_SUBMITTED] = {
            "size": (params.get("arrayProperties") or {}).get("size"),
            "dependsOn": [dict(d) for d in params.get("dependsOn") or []],
        }

    def _submitted(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        asked = context.get(_SUBMITTED)
        if "jobId" not in parsed or asked is None:
            return
        self.recorded[parsed["jobId"]] = Recorded(
            job_id=parsed["jobId"],
            size=asked["size"],
            depends_on=tuple(asked["dependsOn"]),
            submitted_at=_now_ms(),
            held=self.held,
        )

    def _listing(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        # moto would filter by its own statuses and cannot page: the status, page size and
        # token are kept for the overlaid listing, and moto lists every job it has.
        context[_LISTING] = {
            "filtered": bool(params.get("filters")),
            **{k: params.pop(k) for k in ("jobStatus", "maxResults", "nextToken") if k in params},
        }

    def _listed(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        asked = context.get(_LISTING)
        if "jobSummaryList" not in parsed or asked is None:
            return
        view = _View(self)
        summaries = [view.summary(s) for s in parsed["jobSummaryList"]]
        limit = LIST_LIMIT_FILTERED if asked["filtered"] else LIST_LIMIT
        if not asked["filtered"]:
            wanted = asked.get("jobStatus") or "RUNNING"
            summaries = [s for s in summaries if s["status"] == wanted]
        size = min(int(asked.get("maxResults") or limit), limit)
        start = int(asked.get("nextToken") or 0)
        parsed["jobSummaryList"] = summaries[start : start + size]
        parsed.pop("nextToken", None)
        if start + size < len(summaries):
            parsed["nextToken"] = str(start + size)

    def _described(self, parsed: dict[str, Any], **_: Any) -> None:
        view = _View(self)
        for job in parsed.get("jobs") or []:
            view.detail(job)

    def _stopping(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[_STOPPING] = (params.get("jobId"), params.get("reason"))

    def _stopped(
        self,
        http_response: Any,
        model: Any,
        context: dict[str, Any],
        **_: Any,
    ) -> None:
        job_id, reason = context.get(_STOPPING) or (None, None)
        if not self.stops_apply or http_response.status_code >= 300 or job_id is None:
            return
        recorded = self.recorded.get(job_id)
        if recorded is None:
            return
        operation = model.name
        view = _View(self)
        parent = view.seen(job_id)  # as it was before this stop
        now = _now_ms()
        for leaf_id in recorded.leaf_ids():
            seen = view.seen(leaf_id)
            if seen is None or seen.status in TERMINAL:
                continue
            running = seen.status in ("STARTING", "RUNNING")
            if running and operation == "CancelJob":
                continue  # CancelJob leaves a started job running
            self.leaves[leaf_id] = LeafState(
                "FAILED",
                reason,
                ran=seen.ran,
                started_at=seen.started_at,
                stopped_at=now if seen.ran else None,
                log_stream_name=seen.log_stream_name,
                stopped_by=operation,
            )
        if recorded.size and parent is not None and parent.status not in TERMINAL:
            self.parent_stops[job_id] = (operation, str(reason))


class _View:
    """The overlay resolved for one response: every job it is asked about, each resolved once
    (an array's children in index order, so a SEQUENTIAL child finds the one before it)."""

    def __init__(self, overlay: Overlay) -> None:
        self.overlay = overlay
        self.resolved: dict[str, Seen] = {}

    def seen(self, job_id: str) -> Seen | None:
        """``job_id`` as the client sees it; None for a job the harness did not see submitted."""
        if job_id in self.resolved:
            return self.resolved[job_id]
        recorded = self.overlay.recorded.get(job_id)
        if recorded is not None:
            return self._parent(recorded) if recorded.size else self._leaf(recorded, None)
        parent_id, _, index = job_id.rpartition(":")
        parent = self.overlay.recorded.get(parent_id)
        if parent is None or not parent.size or not index.isdigit():
            return None
        self._parent(parent)
        return self.resolved.get(job_id)

    def _parent(self, recorded: Recorded) -> Seen:
        if recorded.job_id in self.resolved:
            return self.resolved[recorded.job_id]
        assert recorded.size is not None
        children = [self._leaf(recorded, index) for index in range(recorded.size)]
        counts = dict.fromkeys(STATUSES, 0)
        for child in children:
            counts[child.status] += 1
        ended = counts["SUCCEEDED"] + counts["FAILED"]
        reason = None
        if ended == recorded.size:
            status = "FAILED" if counts["FAILED"] else "SUCCEEDED"
        else:
            status = "SUBMITTED" if counts["SUBMITTED"] == recorded.size else "PENDING"
        stop = self.overlay.parent_stops.get(recorded.job_id)
        if status == "FAILED":
            failed = {c.reason for c in children if c.status == "FAILED"}
            reason = stop[1] if stop else None
            reason = reason or (
                DEPENDENCY_FAILED if failed == {DEPENDENCY_FAILED} else ARRAY_CHILD_FAILED
            )
        starts = [c.started_at for c in children if c.started_at is not None]
        stops = [c.stopped_at for c in children if c.stopped_at is not None]
        seen = Seen(
            status=status,
            reason=reason,
            exit_code=None,
            ran=bool(starts),
            started_at=min(starts) if starts else None,
            stopped_at=max(stops) if stops and status in TERMINAL else None,
            stopped_by=stop[0] if stop and status == "FAILED" else None,
            size=recorded.size,
            status_summary=counts,
        )
        self.resolved[recorded.job_id] = seen
        return seen

    def _leaf(self, recorded: Recorded, index: int | None) -> Seen:
        leaf_id = recorded.job_id if index is None else f"{recorded.job_id}:{index}"
        if leaf_id in self.resolved:
            return self.resolved[leaf_id]
        own = self.overlay.leaves.get(leaf_id)
        if own is None:
            status = recorded.held or MOTO_STATUS
            own = LeafState(status, ran=_started(status))
        dependencies = self._dependencies(recorded, index)
        if dependencies == "WAITING" and (own.status != "FAILED" or own.stopped_by):
            # still waiting; a stop of a PENDING job takes effect once its dependencies end
            own = LeafState("PENDING")
        elif dependencies == "FAILED" and own.status != "FAILED":
            own = LeafState("FAILED", DEPENDENCY_FAILED)
        started_at = own.started_at or recorded.submitted_at
        exit_code = own.exit_code
        if exit_code is None and own.status == "SUCCEEDED":
            exit_code = 0  # its container exited 0
        seen = Seen(
            status=own.status,
            reason=own.reason,
            exit_code=exit_code,
            ran=own.ran,
            started_at=started_at if own.ran else None,
            stopped_at=(own.stopped_at or started_at)
            if own.ran and own.status in TERMINAL
            else None,
            log_stream_name=own.log_stream_name,
            stopped_by=own.stopped_by,
            index=index,
        )
        self.resolved[leaf_id] = seen
        return seen

    def _dependencies(self, recorded: Recorded, index: int | None) -> str:
        """FAILED if a job this leaf waits for failed, WAITING if one has not succeeded yet,
        else MET."""
        statuses: list[str] = []
        for dependency in recorded.depends_on:
            kind, job_id = dependency.get("type"), dependency.get("jobId")
            if kind == "SEQUENTIAL":
                if index:
                    statuses.append(self.resolved[f"{recorded.job_id}:{index - 1}"].status)
                continue
            if job_id is None:
                continue
            other = self.overlay.recorded.get(job_id)
            if kind == "N_TO_N" and index is not None and other is not None and other.size:
                seen = self.seen(f"{job_id}:{index}")
            else:
                seen = self.seen(job_id)
            statuses.append(seen.status if seen is not None else MOTO_STATUS)
        if "FAILED" in statuses:
            return "FAILED"
        return "WAITING" if any(s != "SUCCEEDED" for s in statuses) else "MET"

    # --- the two response shapes ---------------------------------------------------------------

    def detail(self, job: dict[str, Any]) -> None:
        """Overlay a DescribeJobs ``JobDetail`` in place."""
        seen = self.seen(job["jobId"])
        if seen is None:
            return
        _set(job, "status", seen.status)
        _set(job, "statusReason", seen.reason)
        _set(job, "startedAt", seen.started_at)
        _set(job, "stoppedAt", seen.stopped_at)
        _set(job, "isCancelled", True if seen.stopped_by == "CancelJob" else None)
        _set(job, "isTerminated", True if seen.stopped_by == "TerminateJob" else None)
        container = job.setdefault("container", {})
        moto_attempt = (job.get("attempts") or [{}])[-1]
        if seen.status_summary is not None:  # an array parent: never run itself
            job["arrayProperties"] = {"size": seen.size, "statusSummary": dict(seen.status_summary)}
            container.pop("logStreamName", None)
            container.pop("exitCode", None)
            job["attempts"] = []
            return
        if seen.index is not None:
            job["arrayProperties"] = {"index": seen.index}
        log_stream = seen.log_stream_name or container.get("logStreamName")
        _set(container, "logStreamName", log_stream if seen.ran else None)
        ended = seen.ran and seen.status in TERMINAL
        _set(container, "exitCode", seen.exit_code if ended else None)
        if not ended:
            job["attempts"] = []
            return
        attempt_container = {
            **(moto_attempt.get("container") or {}),
            "logStreamName": log_stream,
        }
        _set(attempt_container, "exitCode", seen.exit_code)
        attempt: dict[str, Any] = {
            "container": attempt_container,
            "startedAt": seen.started_at,
            "stoppedAt": seen.stopped_at,
        }
        _set(attempt, "statusReason", seen.reason)
        job["attempts"] = [attempt]

    def summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        """A ListJobs ``JobSummary`` with the overlay applied."""
        seen = self.seen(summary["jobId"])
        if seen is None:
            return summary
        summary = dict(summary)
        _set(summary, "status", seen.status)
        _set(summary, "statusReason", seen.reason)
        _set(summary, "startedAt", seen.started_at)
        _set(summary, "stoppedAt", seen.stopped_at)
        _set(summary, "isCancelled", True if seen.stopped_by == "CancelJob" else None)
        _set(summary, "isTerminated", True if seen.stopped_by == "TerminateJob" else None)
        ended = seen.ran and seen.status in TERMINAL and seen.exit_code is not None
        _set(summary, "container", {"exitCode": seen.exit_code} if ended else None)
        if seen.size is not None:
            summary["arrayProperties"] = {"size": seen.size}
        elif seen.index is not None:
            summary["arrayProperties"] = {"index": seen.index}
        return summary


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value


# --- the harness --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedJob:
    """A job as DescribeJobs shows it to the client, the overlay applied."""

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
class MotoBatch:
    batch: Any
    """The client the code under test gets."""
    cloudformation: Any
    queue_arn: str
    definition_arns: dict[str, str]
    reader: Any
    """A client of the harness's own, for :meth:`jobs` and :meth:`parents`: what a test reads
    through it is not counted by :meth:`count_calls` nor seen by a test's hooks on ``batch``."""
    overlay: Overlay
    calls: dict[str, int] = field(default_factory=dict)

    # --- observing ---------------------------------------------------------------------------

    def count_calls(self) -> None:
        """Count API calls by operation name in ``self.calls``."""

        def count(event_name: str, **_: Any) -> None:
            operation = event_name.rsplit(".", 1)[-1]
            self.calls[operation] = self.calls.get(operation, 0) + 1

        self.batch.meta.events.register("before-call.batch", count)

    def parents(self) -> list[ListedJob]:
        """Every job in every queue, array parents but not their children, oldest first:
        ListJobs for each status, then DescribeJobs for each 100."""
        ids: list[str] = []
        queues = self.reader.describe_job_queues()["jobQueues"]
        for queue in queues:
            for status in STATUSES:
                ids += [
                    s["jobId"]
                    for s in self._listed(jobQueue=queue["jobQueueArn"], jobStatus=status)
                    if ":" not in s["jobId"]
                ]
        return sorted(self._described(ids), key=lambda j: j.detail.get("createdAt") or 0)

    def run_jobs(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """Job key -> the jobs of that key tagged with run ``run_id`` (parents), oldest first."""
        found: dict[str, list[dict[str, Any]]] = {job.key: [] for job in DEFAULT_SPEC}
        for job in self.parents():
            if (job.detail.get("tags") or {}).get(RUN_TAG) == run_id:
                found[job.job_name].append(dict(job.detail))
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
        for start in range(0, len(ids), DESCRIBE_LIMIT):
            jobs = self.reader.describe_jobs(jobs=list(ids[start : start + DESCRIBE_LIMIT]))
            found += [ListedJob(j) for j in jobs["jobs"]]
        return found

    # --- steering ----------------------------------------------------------------------------

    def intercept(self, handler: Callable[..., Any]) -> None:
        """Put ``handler(request=...)`` in front of moto for this client: a response it returns
        (or an exception it raises) is what the client sees, and moto never processes that
        request, as when a real service throttles or never answers. moto's own before-send
        handler runs for every request otherwise, whatever an earlier handler returned."""
        events = self.batch.meta.events
        events.unregister("before-send", botocore_stubber)

        def gate(request: Any, event_name: str, **kwargs: Any) -> Any:
            answer = handler(request=request, event_name=event_name, **kwargs)
            if answer is not None:
                return answer
            return botocore_stubber(event_name=event_name, request=request, **kwargs)

        events.register("before-send", gate)

    def set_status(self, job_id: str, status: str, reason: str | None = None) -> None:
        """The job (a child, or every child of an array) is in ``status`` from now on: started
        if RUNNING or SUCCEEDED; a FAILED one never ran (as one cancelled while queued). A job
        whose dependencies have not succeeded still shows PENDING, or FAILED if one failed."""
        self.overlay.set_leaves(job_id, LeafState(status, reason, ran=_started(status)))

    def set_times(self, job_id: str, started: datetime, seconds: float) -> None:
        """The job (or child) ran from ``started`` for ``seconds`` and SUCCEEDED."""
        started_at = int(started.timestamp() * 1000)
        self.overlay.set_leaf(
            job_id,
            LeafState(
                "SUCCEEDED",
                ran=True,
                started_at=started_at,
                stopped_at=started_at + int(seconds * 1000),
            ),
        )

    def hold_new_jobs(self, status: str = "RUNNABLE") -> None:
        """Jobs submitted from now on stay in ``status`` (moto would finish them at once); one
        waiting for another shows PENDING until that one has succeeded."""
        self.overlay.held = status

    def apply_stops(self) -> None:
        """CancelJob and TerminateJob end the jobs they stop FAILED with the reason, as on AWS
        (see the module's description)."""
        self.overlay.stops_apply = True

    def fail_child(
        self,
        parent_id: str,
        index: int,
        reason: str,
        exit_code: int = 1,
        log_stream_name: str | None = None,
    ) -> None:
        """Child ``index`` ran and failed with ``exit_code``; its parent fails once every other
        child has ended, and the jobs waiting for it fail on the dependency."""
        child_id = f"{parent_id}:{index}"
        previous = self.overlay.leaves.get(child_id)
        self.overlay.set_leaf(
            child_id,
            LeafState(
                "FAILED",
                reason,
                exit_code=exit_code,
                ran=True,
                started_at=previous.started_at if previous else None,
                log_stream_name=log_stream_name,
            ),
        )

    def managed_queue(self, instance_type: str, name: str = "Managed", **resources: Any) -> str:
        """A queue on one managed EC2 compute environment of ``instance_type`` (maxvCpus 64),
        with ``resources`` merged into its computeResources; returns the queue ARN."""
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName=name, Description="g", VpcId=vpc)["GroupId"]
        iam = boto3.client("iam", region_name=REGION)
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
        service = iam.get_role(RoleName="BatchServiceRole")["Role"]["Arn"]
        environment = self.batch.create_compute_environment(
            computeEnvironmentName=name,
            type="MANAGED",
            state="ENABLED",
            serviceRole=service,
            computeResources={
                "type": "EC2",
                "minvCpus": 0,
                "maxvCpus": 64,
                "instanceTypes": [instance_type],
                "subnets": [subnet],
                "securityGroupIds": [group],
                "instanceRole": profile,
                **resources,
            },
        )["computeEnvironmentArn"]
        return str(
            self.batch.create_job_queue(
                jobQueueName=name,
                priority=1,
                state="ENABLED",
                computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
            )["jobQueueArn"]
        )


class Sleeps(list[float]):
    """An injected ``sleep``: records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


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


def error_answer(url: str, status: int, code: str, message: str = "injected") -> AWSResponse:
    """The HTTP answer of an AWS JSON-protocol error, for an ``intercept`` handler to
    return: the client parses it as the service's own."""
    body = json.dumps({"__type": code, "message": message}).encode()
    return AWSResponse(url, status, HTTPHeaders.from_dict({"x-amzn-ErrorType": code}), _Body(body))


@contextmanager
def moto_batch(client_config: Config = FAST_RETRIES) -> Iterator[MotoBatch]:
    with mock_aws(config={"batch": {"use_docker": False}}):
        session = boto3.Session(region_name=REGION)
        iam = session.client("iam")
        batch = session.client("batch", config=client_config)
        reader = session.client("batch", config=FAST_RETRIES)
        overlay = Overlay()
        overlay.install(batch)
        overlay.install(reader)
        service_role = iam.create_role(
            RoleName="BatchServiceRole",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        environment = batch.create_compute_environment(
            computeEnvironmentName="Unmanaged", type="UNMANAGED", serviceRole=service_role
        )["computeEnvironmentArn"]
        queue_arn = batch.create_job_queue(
            jobQueueName="ProdQueue",
            priority=1,
            state="ENABLED",
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
        )["jobQueueArn"]
        definitions = {}
        for job in DEFAULT_SPEC:
            definitions[job.key] = batch.register_job_definition(
                jobDefinitionName=job.definition_name,
                type="container",
                parameters={p: "" for p in job.parameters},
                containerProperties={  # type: ignore[misc,arg-type]
                    "image": "job-image:latest",
                    "command": list(job.command),
                    "resourceRequirements": job.resource_requirements(),
                    "environment": step_environment(job),
                },
            )["jobDefinitionArn"]
        cloudformation = session.client("cloudformation")
        cloudformation.create_stack(
            StackName=STACK, TemplateBody=stack_template(queue_arn, definitions)
        )
        yield MotoBatch(batch, cloudformation, queue_arn, definitions, reader, overlay)


def step_environment(job: JobSpec, spec: PipelineSpec = DEFAULT_SPEC) -> list[Any]:
    """What the job's definition sets of the steps, as RegisterJobDefinition takes it."""
    return [{"name": k, "value": v} for k, v in spec.environment_of(job).items()]


def stack_document(
    queue_arn: str, definitions: dict[str, str], spec: PipelineSpec = DEFAULT_SPEC
) -> PipelineDocument:
    """The document a PipelineStack would publish for these resources."""
    return PipelineDocument(
        queue=queue_arn,
        queue_name="ProdQueue",
        job_definitions=definitions,
        spec=spec,
        parameters={"JobE": {"SourceBucket": "s3://pipeline-output-bucket", "Recipient": ""}},
        resources={r.key: f"pipeline-{r.key.replace('_', '-')}" for r in RESOURCES},
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
        QUEUE_NAME_OUTPUT: "ProdQueue",
        **{r.output: f"pipeline-{r.key.replace('_', '-')}" for r in RESOURCES},
    }
    outputs.pop(drop or "", None)
    return json.dumps(
        {
            "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {k: {"Value": v} for k, v in outputs.items()},
        }
    )


def cli_in_process(aws: MotoBatch | None, *argv: str) -> tuple[int, str, str]:
    """``python -m pipeline.submit ARGV`` in process against ``aws``; (exit code, stdout,
    stderr). With ``aws=None`` the command must not reach AWS at all."""
    import io

    from pipeline.backends.aws import Aws
    from pipeline.cli.commands import main

    out, err = io.StringIO(), io.StringIO()

    def connector(_profile: str | None, _region: str | None) -> Aws:
        assert aws is not None, "this invocation must not reach AWS"
        return Aws(aws.batch, aws.cloudformation)

    code = main(list(argv), connector=connector, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()
