"""Placements for a caller that drives the engine in its own process, with no job process at
all, as moto's ``batch_simple`` overrides one method of its Batch backend.

:class:`CallerPlacement` decides nothing itself: every job the state machine makes RUNNABLE
waits there until the caller starts and ends it (:meth:`~CallerPlacement.start`,
:meth:`~CallerPlacement.end`), or, with ``run_at_once``, starts and succeeds the moment it
becomes RUNNABLE; a first attempt the engine's fault plan names (``LocalBatch(faults=...)``)
then ends as the fault says. Everything else (dependencies, array parents, retries, cancel and
terminate, ListJobs, timestamps from the engine's clock) is the engine's own, exactly as when
the :class:`.scheduler.Scheduler` places jobs as processes on this machine.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from pipeline.batch_facts import (
    ESSENTIAL_CONTAINER_EXITED,
    STARTED,
    TERMINAL,
)
from pipeline.local.batch.exceptions import BatchClientError
from pipeline.local.batch.job import Job
from pipeline.local.batch.models import LocalBatch


class CallerPlacement:
    """Jobs placed when the caller says so. Attach it with :meth:`attach`; every method takes
    the engine's lock, so a caller may use it from any thread."""

    def __init__(self, batch: LocalBatch, *, run_at_once: bool = False) -> None:
        self.batch = batch
        self.run_at_once = run_at_once
        """Every job that becomes RUNNABLE starts and succeeds at once."""
        self.runnable: list[Job] = []
        """Jobs waiting to be placed, in the order they became RUNNABLE."""
        self._tasks = itertools.count(1)
        self._draining = False
        batch.placement = self

    # --- what the state machine tells it ----------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        self.runnable.append(job)
        if self.run_at_once and not self._draining:
            # A job that succeeds makes others RUNNABLE, which land here again: run them in
            # turn rather than in ever deeper calls.
            self._draining = True
            try:
                while self.run_at_once and self.runnable:
                    waiting = self.runnable.pop(0)
                    if waiting.status == "RUNNABLE":
                        fault = waiting.fault if waiting.attempt == 0 else None
                        self._start(waiting)
                        if fault is None:
                            self.batch.attempt_ended(waiting, 0, None)
                        else:  # the engine's fault plan for the first attempt
                            code, reason, retriable = fault.outcome()
                            self.batch.attempt_ended(waiting, code, reason, retriable=retriable)
            finally:
                self._draining = False

    def stop(self, job: Job, reason: str) -> None:
        """TerminateJob of a started job: its attempt ends at once, as a stopped container."""
        self.batch.attempt_ended(job, None, reason, retriable=False)

    def wake(self) -> None:
        """Nothing to do: the caller places jobs."""

    # --- what the caller does ---------------------------------------------------------------------

    def leaves_of(self, job_id: str) -> list[Job]:
        """The standard job, or every child of the array job, ``job_id`` names."""
        job = self.batch.jobs.get(job_id)
        if job is None:
            raise BatchClientError(f"Job {job_id} does not exist")
        return list(job.leaves)

    def start(self, job_id: str, *, log_stream: str | None = None) -> None:
        """Place the job (every child, for an array job): RUNNABLE -> STARTING -> RUNNING."""
        with self.batch.lock:
            for leaf in self.leaves_of(job_id):
                if leaf.status != "RUNNABLE":
                    raise BatchClientError(
                        f"Job {leaf.job_id} is {leaf.status}, not RUNNABLE: it cannot start"
                    )
                self._start(leaf, log_stream)

    def end(self, job_id: str, exit_code: int | None = 0, reason: str | None = None) -> None:
        """End the running attempt of the job (every child, for an array job) with
        ``exit_code`` (None: no exit code, as a lost host) and ``reason`` (default: the
        container exited, for a non-zero code). The job's retry strategy applies."""
        if reason is None and exit_code != 0:
            reason = ESSENTIAL_CONTAINER_EXITED
        with self.batch.lock:
            for leaf in self.leaves_of(job_id):
                if leaf.status not in STARTED:
                    raise BatchClientError(
                        f"Job {leaf.job_id} is {leaf.status}, not running: it cannot end"
                    )
                self.batch.attempt_ended(leaf, exit_code, reason)

    def run(self, job_id: str, exit_code: int | None = 0, reason: str | None = None) -> None:
        """Start the job and end it at once (see :meth:`start` and :meth:`end`)."""
        self.start(job_id)
        self.end(job_id, exit_code, reason)

    def fail_unstarted(self, job_id: str, reason: str) -> None:
        """End the job (every child of an array job that has not ended) FAILED without
        running, as a job cancelled while queued."""
        with self.batch.lock:
            for leaf in self.leaves_of(job_id):
                if leaf.status not in TERMINAL:
                    self.batch.finish(leaf, "FAILED", reason)

    def placed_in_order(self) -> Iterator[Job]:
        """The jobs waiting to be placed, oldest first, still RUNNABLE."""
        return (job for job in self.runnable if job.status == "RUNNABLE")

    def _start(self, job: Job, log_stream: str | None = None) -> None:
        task = f"{next(self._tasks):032x}"
        prefix = job.definition.log_place()[1]
        self.batch.attempt_started(job, log_stream or f"{prefix}/default/{task}", task)
        if job in self.runnable:
            self.runnable.remove(job)
