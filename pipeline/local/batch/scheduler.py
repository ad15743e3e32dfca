"""Which RUNNABLE jobs start when, on this machine, and what becomes of their processes.

The machine is one compute environment with a vCPU budget (default: the cores this process
may use). Jobs start in queue priority order, then submission order, while their cores are
free; each is pinned to the cores it was given where the system can pin. A job asking more
vCPUs than the budget runs alone with all of it. Memory is not reserved.

A job's command runs with its definition's environment and SubmitJob's overrides, the
variables AWS Batch sets (``AWS_BATCH_JOB_ID``, ``AWS_BATCH_JOB_ARRAY_INDEX``,
``AWS_BATCH_JOB_ATTEMPT``, ``AWS_BATCH_JQ_NAME``), ``Ref::`` parameters substituted, and a
scratch folder of its own as ``TMPDIR``, removed when the attempt ends however it ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.batch_facts import (
    ARRAY_INDEX_VARIABLE,
    ARRAY_SIZE_VARIABLE,
    CANNOT_START_CONTAINER,
    COMPUTE_ENVIRONMENT_VARIABLE,
    ESSENTIAL_CONTAINER_EXITED,
    JOB_ATTEMPT_VARIABLE,
    JOB_ID_VARIABLE,
    QUEUE_NAME_VARIABLE,
    TIMEOUT_REASON,
)
from pipeline.local.batch.definitions import JobQueue, ceil_vcpus
from pipeline.local.batch.faults import HOST_TERMINATED
from pipeline.local.batch.job import Job
from pipeline.local.batch.launcher import STOP_GRACE_SECONDS
from pipeline.local.batch.models import LocalBatch
from pipeline.local.batch.processes import (
    Forked,
    ForkServer,
    JobProcess,
    available_cores,
    forkable,
    kill_group,
    start_process,
)

Crash = Callable[[str, BaseException], None]
"""(thread, error) -> None: a thread of the engine died of an error it did not expect."""
LogShipper = Callable[[str, str, Path, bool], None]
"""(log group, log stream, log file, whether the attempt failed) -> None: where an attempt's
output goes when it ends."""


LOGS_FOLDER = "logs"
"""Where in its work folder the scheduler keeps every attempt's output."""


def log_path(work: Path, job: Job, attempt: int) -> Path:
    """Where attempt ``attempt`` (from 1) of ``job`` writes its output."""
    where = job.name if job.index is None else f"{job.name}/{job.index:05d}"
    return work / LOGS_FOLDER / where / f"{job.job_id.split(':')[0]}-{attempt}.log"


@dataclass
class _Attempt:
    log: Path
    scratch: Path
    log_group: str
    log_stream: str
    stop_reason: str | None = None
    kill_at: float | None = None
    timed_out: bool = False


class Scheduler:
    """Starts and reaps the jobs of a :class:`LocalBatch` on a thread of its own."""

    def __init__(
        self,
        backend: LocalBatch,
        *,
        environment: Mapping[str, str],
        work: Path,
        vcpu_budget: int | None = None,
        fork: bool = True,
        ship_log: LogShipper | None = None,
        tick: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        preload: Sequence[str] = (),
        warm_up: str | None = None,
        cores_variable: str | None = None,
        on_crash: Crash | None = None,
    ) -> None:
        """``clock`` (seconds) measures the attempts' timeouts and the stop grace.
        ``preload`` and ``warm_up``: what the fork server loads and runs before its first
        fork (the programs the caller's jobs run, see :mod:`.launcher`). ``cores_variable``:
        a variable that tells each job how many cores it was given, for programs on systems
        where a process cannot be pinned to them (none by default: AWS Batch sets none).
        ``on_crash(thread, error)``: told when a thread of the scheduler dies of an error it
        did not expect, after which nothing is scheduled (default: the traceback on
        standard error); its caller decides what the services do then."""
        self.on_crash: Crash = on_crash or print_crash
        self.backend = backend
        self.clock = clock
        self.vcpu_budget = vcpu_budget or available_cores()
        self.environment = dict(environment)
        self.work = work
        self.ship_log = ship_log
        self._tick = tick
        self._free = list(range(self.vcpu_budget))
        self._runnable: dict[str, deque[Job]] = {}
        self._queues: dict[str, JobQueue] = {}
        self._running: dict[str, Job] = {}
        self._attempts: dict[str, _Attempt] = {}
        self._zombies: list[subprocess.Popen[bytes]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ship_failed = False
        self.cores_variable = cores_variable
        self.fork_server = (
            ForkServer(
                self.environment,
                work / "fork-server.log",
                self._wake.set,
                preload=preload,
                warm_up=warm_up,
                on_crash=self.on_crash,
            )
            if fork
            else None
        )
        backend.placement = self
        for leaf in backend.leaves():  # jobs queued before it attached (a restart's)
            if leaf.status == "RUNNABLE":
                self.enqueue(leaf)
        self._thread = threading.Thread(
            target=supervised("scheduler", self._run, self.on_crash), name="scheduler", daemon=True
        )
        self._thread.start()

    # --- what the backend tells it --------------------------------------------------------------

    def enqueue(self, job: Job) -> None:
        """``job`` became RUNNABLE (called with the backend's lock held)."""
        self._queues[job.queue.name] = job.queue
        self._runnable.setdefault(job.queue.name, deque()).append(job)
        self._wake.set()

    def stop(self, job: Job, reason: str) -> None:
        """TerminateJob of a started ``job``: ask it to stop, kill it after the grace."""
        attempt = self._attempts.get(job.job_id)
        if attempt is not None and attempt.stop_reason is None:
            self._ask_to_stop(job, attempt, reason)

    def wake(self) -> None:
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.backend.lock:
                self._reap()
                self._start_runnable()
            # Woken at once by an exit, a submission or a stop; the tick bounds the wait for
            # what nothing announces (a plain process's exit, a deadline).
            self._wake.wait(self._tick)
            self._wake.clear()

    def _start_runnable(self) -> None:
        queues = sorted(self._queues.values(), key=lambda q: -q.priority)
        for queue in queues:
            if not queue.places_jobs:
                continue  # a DISABLED compute environment places no job
            waiting = self._runnable.get(queue.name) or deque()
            while waiting:
                job = waiting[0]
                if job.status != "RUNNABLE":
                    waiting.popleft()  # stale: cancelled, or started
                    continue
                wanted = min(ceil_vcpus(job.resolved.vcpus), self.vcpu_budget)
                if len(self._free) < wanted:
                    return  # in order: nothing jumps ahead of a job waiting for cores
                waiting.popleft()
                job.cores = tuple(self._free[:wanted])
                del self._free[:wanted]
                self._launch(job)

    def _launch(self, job: Job) -> None:
        resolved = job.resolved
        command = [_substitute(argument, resolved.parameters) for argument in resolved.command]
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable  # the image's Python is this machine's
        if job.fault is not None and job.fault.exit_code is not None and job.attempt == 0:
            code = job.fault.exit_code
            what = f"exit {code}" if job.fault.kind == "exit" else job.fault.kind
            script = f"import sys; print('injected fault: {what}'); sys.exit({code})"
            command = [sys.executable, "-c", script]
        task_id = uuid.uuid4().hex
        log_group, prefix = job.definition.log_place()
        log = log_path(self.work, job, job.attempt + 1)
        scratch = self.work / "scratch" / task_id
        log.parent.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        environment = {
            **self.environment,
            **resolved.environment,
            JOB_ID_VARIABLE: job.job_id,
            JOB_ATTEMPT_VARIABLE: str(job.attempt + 1),
            QUEUE_NAME_VARIABLE: job.queue.name,
            "TMPDIR": str(scratch),
        }
        if self.cores_variable:
            environment[self.cores_variable] = str(len(job.cores))
        if job.index is not None:
            environment[ARRAY_INDEX_VARIABLE] = str(job.index)
        if job.parent is not None:
            environment[ARRAY_SIZE_VARIABLE] = str(len(job.parent.children))
        environment[COMPUTE_ENVIRONMENT_VARIABLE] = job.queue.placing_environment.name
        attempt = _Attempt(log, scratch, log_group, f"{prefix}/default/{task_id}")
        # The attempt's log exists before the job is RUNNING, as the awslogs driver makes the
        # stream when the container starts: an attempt stopped before its program opened the
        # file still ends with the (empty) stream its logStreamName names ("Each container
        # attempt receives a log stream name when they reach the RUNNING status",
        # AttemptContainerDetail, AWS Batch API Reference). A log that cannot be made fails
        # the start below, which says why.
        with contextlib.suppress(OSError):
            os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        self._attempts[job.job_id] = attempt
        self._running[job.job_id] = job
        self.backend.attempt_started(job, attempt.log_stream, task_id)
        try:
            job.process = self._start(command, environment, log, job.cores)
        except OSError as error:
            self._end(job, None, f"{CANNOT_START_CONTAINER}: {error.strerror or error}")
            return
        timeout = resolved.timeout_seconds
        job.deadline = self.clock() + timeout if timeout else None

    def _start(
        self, command: list[str], environment: dict[str, str], log: Path, cores: tuple[int, ...]
    ) -> JobProcess:
        # Every job process is a child of the fork server, which stops them all when the
        # services end, however they end (its standard input closes).
        if self.fork_server is not None:
            try:
                return self.fork_server.launch(
                    command, environment, log, cores, exec_program=not forkable(command)
                )
            except OSError:
                # Without its fork server a run still runs: a fresh process per attempt from
                # now on (the fork server's own log says why it stopped).
                self.fork_server.close()
                self.fork_server = None
        return start_process(command, environment, log, cores)

    def _reap(self) -> None:
        now = self.clock()
        self._zombies = [z for z in self._zombies if z.poll() is None]
        for job in list(self._running.values()):
            process = job.process
            attempt = self._attempts[job.job_id]
            if process is None:
                continue
            fault = job.fault if job.attempt == 1 else None
            if fault is not None and fault.exit_code is None:
                # The host goes away (or the clock runs out) whether or not the program was done.
                self._kill(process)
                code, reason, retriable = fault.outcome()
                self._end(job, code, reason, retriable=retriable)
                continue
            if attempt.stop_reason is None and job.deadline is not None and now > job.deadline:
                self._ask_to_stop(job, attempt, TIMEOUT_REASON, timed_out=True)
            code = process.poll()
            if attempt.stop_reason is not None:
                if code is None:
                    if attempt.kill_at is not None and now > attempt.kill_at:
                        kill_group(process.pid, signal.SIGKILL)
                        attempt.kill_at = None
                    continue
                self._end(job, None, attempt.stop_reason, retriable=False)
                continue
            if code is None:
                continue
            if isinstance(process, Forked) and process.lost:
                self._end(job, None, HOST_TERMINATED)  # the fork server died: a lost host
                continue
            if fault is not None and code != 0:  # the injected exit
                self._end(job, code, fault.outcome()[1])
                continue
            self._end(job, code, None if code == 0 else ESSENTIAL_CONTAINER_EXITED)

    def _ask_to_stop(
        self, job: Job, attempt: _Attempt, reason: str, *, timed_out: bool = False
    ) -> None:
        attempt.stop_reason = reason
        attempt.timed_out = timed_out
        attempt.kill_at = self.clock() + STOP_GRACE_SECONDS
        if job.process is not None:
            kill_group(job.process.pid, signal.SIGTERM)
        self._wake.set()

    def _kill(self, process: JobProcess) -> None:
        kill_group(process.pid, signal.SIGKILL)
        if isinstance(process, subprocess.Popen):
            self._zombies.append(process)

    def _end(
        self, job: Job, exit_code: int | None, reason: str | None, *, retriable: bool = True
    ) -> None:
        self._free.extend(job.cores)
        self._free.sort()
        job.cores = ()
        job.process = None
        self._running.pop(job.job_id, None)
        attempt = self._attempts.pop(job.job_id)
        shutil.rmtree(attempt.scratch, ignore_errors=True)
        self._ship(attempt, failed=exit_code != 0)
        self.backend.attempt_ended(job, exit_code, reason, retriable=retriable)

    def _ship(self, attempt: _Attempt, *, failed: bool) -> None:
        """Hand an attempt's log to ``ship_log``. A log that cannot be shipped stays on disk,
        and scheduling goes on: the failure is said once on standard error."""
        if self.ship_log is None or not attempt.log.exists():
            return
        try:
            self.ship_log(attempt.log_group, attempt.log_stream, attempt.log, failed)
        except Exception as error:
            if not self._ship_failed:
                self._ship_failed = True
                print(
                    f"note: job logs could not be shipped ({type(error).__name__}: {error}); "
                    f"they stay in {self.work / LOGS_FOLDER}",
                    file=sys.stderr,
                    flush=True,
                )

    # --- the end --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop scheduling, ask every running job to stop and kill what is left after the
        grace. Jobs are left as they were: started on the same state again, the engine goes
        on with them (see :meth:`LocalBatch.continue_restored`)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        with self.backend.lock:
            running = [j for j in self._running.values() if j.process is not None]
            for job in running:
                kill_group(job.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and any(
            j.process is not None and j.process.poll() is None for j in running
        ):
            time.sleep(0.05)
        with self.backend.lock:
            for job in running:
                if job.process is not None and job.process.poll() is None:
                    self._kill(job.process)
            for job in list(self._running.values()):
                attempt = self._attempts.pop(job.job_id, None)
                if attempt is not None:
                    shutil.rmtree(attempt.scratch, ignore_errors=True)
                    self._ship(attempt, failed=True)
            self._running.clear()
            self.backend.placement = None
        if self.fork_server is not None:
            self.fork_server.close()
        for zombie in self._zombies:
            zombie.wait()
        shutil.rmtree(self.work / "scratch", ignore_errors=True)


def _substitute(argument: str, parameters: Mapping[str, str]) -> str:
    if argument.startswith("Ref::") and argument[5:] in parameters:
        return parameters[argument[5:]]
    return argument


def print_crash(thread: str, error: BaseException) -> None:
    """Say on standard error, with the traceback, that ``thread`` died of ``error``."""
    import traceback

    print(
        f"error: the engine's {thread} thread failed: {type(error).__name__}: {error}",
        file=sys.stderr,
        flush=True,
    )
    traceback.print_exception(error, file=sys.stderr)


def supervised(thread: str, target: Callable[[], None], on_crash: Crash) -> Callable[[], None]:
    """``target``, for a thread: an error it does not handle goes to ``on_crash``, never to
    a silent end of the thread."""

    def run() -> None:
        try:
            target()
        except BaseException as error:
            on_crash(thread, error)

    return run
