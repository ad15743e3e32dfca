"""The worker processes a job's runner runs its step in (one per object at a time, at most
as many as the child has CPUs for), and what becomes of an object when its worker does not
answer: past the step's ``object_timeout`` the worker and everything it started are stopped
and the object is rejected, "timed out after N s"; a worker that dies (the step called
``os._exit``, a signal killed it, the kernel ran out of memory) rejects the object it was on
with its exit status or signal. Either way the worker is replaced for the next object, so
the child's other objects are processed.

An object a step has been on for a minute is named in the job's log (and again every ten
minutes), so ``status`` and the watch can say which object a long-running child is on.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline import contract
from pipeline.jobs.aws_calls import TransientJobError
from pipeline.jobs.step_calls import ObjectRejectedError
from pipeline.steps import ObjectRef, Step

BOOT = (
    "import sys; from json import loads; sys.path[:0] = loads(sys.argv[1]); "
    "from pipeline.jobs.worker import main; raise SystemExit(main(sys.argv[2:]))"
)
"""How a worker starts: with the runner's import path first (what the job could import, the
worker can), then :func:`pipeline.jobs.worker.main`."""
REPEAT_SLOW_SECONDS = 600
CLOSE_SECONDS = 5.0
"""How long an idle worker gets to end on its own (flushing what its step printed)."""


class WorkerEndedError(Exception):
    """The worker did not answer: it died, or it ran past the object's time."""


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    requests: IO[bytes]
    answers: int
    pending: bytes = b""
    closed: bool = False

    def ask(self, request: Mapping[str, Any]) -> None:
        self.requests.write(json.dumps(request).encode() + b"\n")
        self.requests.flush()

    def answer(self, within: float | None) -> dict[str, Any] | None:
        """The worker's answer, or None if none came ``within`` seconds (None: however long).
        Raises :class:`WorkerEndedError` when the worker ended without answering."""
        deadline = None if within is None else time.monotonic() + within
        while b"\n" not in self.pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self.answers], [], [], left)
            if not readable:
                return None
            chunk = os.read(self.answers, 65536)
            if not chunk:
                raise WorkerEndedError(ended(self.process.wait()))
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return dict(json.loads(line))

    def stop(self) -> None:
        """The worker and every process it started (its process group), now."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        """Once only: a descriptor closed twice could be another thread's new one."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.requests.close()
        with contextlib.suppress(OSError):
            os.close(self.answers)


def ended(code: int) -> str:
    """A worker's end in words: ``exited with status 3``, ``was killed by SIGKILL``."""
    if code >= 0:
        return f"the step's worker exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = " (as the kernel does when memory runs out)" if -code == signal.SIGKILL else ""
    return f"the step's worker was killed by {name}{hint}"


def import_path() -> list[str]:
    """This process's import path, for a worker to import what the job can (the current
    folder spelled out)."""
    return [entry or os.getcwd() for entry in sys.path]


class StepWorkers:
    """Up to ``workers`` worker processes of one step, started as objects need them and
    handed one object at a time; safe to call from several threads at once."""

    def __init__(
        self,
        step: Step,
        *,
        workers: int,
        stage: str,
        log: Callable[[str], None] | None = None,
        slow_after: float = contract.SLOW_OBJECT_AFTER_SECONDS,
    ) -> None:
        self.step = step
        self.size = max(1, workers)
        self.stage = stage
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.slow_after = slow_after
        self._idle: list[_Worker] = []
        self._started = 0
        self._all: set[_Worker] = set()
        self._turn = threading.Condition()

    # --- one object ---------------------------------------------------------------------------

    def call(self, source: Path, target: Path, obj: ObjectRef) -> Mapping[str, Any] | None:
        """The step on one object: what it returned (a small JSON mapping, or None). Raises
        :class:`ObjectRejectedError` (the object is rejected, with why) or
        :class:`TransientJobError` (the child is to be retried)."""
        worker = self._take()
        try:
            worker.ask(
                {
                    "source": str(source),
                    "target": str(target),
                    "obj": {"key": obj.key, "size": obj.size, "etag": obj.etag},
                }
            )
            reply = self._wait(worker, obj.key)
        except WorkerEndedError as error:
            self._discard(worker)
            raise ObjectRejectedError(str(error)) from None
        except BrokenPipeError:  # it died before it read the request
            reason = ended(worker.process.wait())
            self._discard(worker)
            raise ObjectRejectedError(reason) from None
        except BaseException:
            self._discard(worker)
            raise
        self._give_back(worker)
        if "transient" in reply:
            raise TransientJobError(f"{obj.key!r}: {reply['transient']}")
        if "rejected" in reply:
            raise ObjectRejectedError(str(reply["rejected"]))
        returned = reply.get("returned")
        return dict(returned) if returned is not None else None

    def _wait(self, worker: _Worker, key: str) -> dict[str, Any]:
        """The worker's answer; past the step's object timeout, the worker is stopped and
        :class:`WorkerEndedError` says so. An object taking long is named in the log."""
        limit = self.step.object_timeout_seconds
        started, began = time.monotonic(), time.time()
        next_note = self.slow_after
        noted = False
        while True:
            spent = time.monotonic() - started
            waits = [next_note - spent]
            if limit is not None:
                waits.append(limit - spent)
            reply = worker.answer(max(0.0, min(waits)))
            spent = time.monotonic() - started
            if reply is not None:
                if noted:
                    self.log(contract.object_done_line(self.stage, key, spent))
                return reply
            if limit is not None and spent >= limit:
                worker.stop()
                if noted:
                    self.log(contract.object_done_line(self.stage, key, spent))
                raise WorkerEndedError(f"timed out after {limit} s")
            if spent >= next_note:
                self.log(contract.slow_object_line(self.stage, key, began, spent))
                noted = True
                next_note += REPEAT_SLOW_SECONDS

    # --- the workers ----------------------------------------------------------------------------

    def _take(self) -> _Worker:
        with self._turn:
            while not self._idle and self._started >= self.size:
                self._turn.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return self._start()
        except BaseException:
            with self._turn:
                self._started -= 1
                self._turn.notify()
            raise

    def _give_back(self, worker: _Worker) -> None:
        with self._turn:
            self._idle.append(worker)
            self._turn.notify()

    def _discard(self, worker: _Worker) -> None:
        """A worker that will not be used again (stopped, or dead): the next object gets a
        new one."""
        if worker.process.poll() is None:
            worker.stop()
        worker.close_pipes()
        with self._turn:
            self._all.discard(worker)
            self._started -= 1
            self._turn.notify()

    def _start(self) -> _Worker:
        requests_read, requests_write = os.pipe()
        answers_read, answers_write = os.pipe()
        arguments = [
            json.dumps(import_path()),
            json.dumps(self.step.as_json()),
            self.stage,
            str(requests_read),
            str(answers_write),
            str(os.getpid()),
        ]
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", BOOT, *arguments],
                stdin=subprocess.DEVNULL,
                pass_fds=(requests_read, answers_write),
                # A group of its own: stopping it stops the commands it started, and a
                # stop of the job (its group) reaches it through end_with in the worker.
                start_new_session=True,
            )
        finally:
            os.close(requests_read)
            os.close(answers_write)
        worker = _Worker(process, os.fdopen(requests_write, "wb"), answers_read)
        with self._turn:
            self._all.add(worker)
        return worker

    def close(self) -> None:
        """End every worker: an idle one is asked to (its requests end) and given a moment
        to flush what its step printed; one still on an object (the job is being stopped) is
        stopped at once, with what it started."""
        with self._turn:
            idle, busy = list(self._idle), list(self._all - set(self._idle))
            self._all.clear()
            self._idle.clear()
        for worker in busy:
            worker.stop()
        for worker in idle:
            with contextlib.suppress(OSError):
                worker.requests.close()
        deadline = time.monotonic() + CLOSE_SECONDS
        for worker in idle:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            worker.stop()
