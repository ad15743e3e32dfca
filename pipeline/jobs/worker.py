"""A step's worker: the process a job's runner hands one object at a time (see
:mod:`pipeline.jobs.workers`, which starts it).

It reads requests (one JSON line each: the staged input, the output path, the object) from
one pipe and answers each on another, so whatever a step prints goes to the job's log and
never into the answers. It runs in a process group of its own, held to the step's
``memory_mib`` (:func:`pipeline.jobs.step_calls.limit_memory`), so the runner can stop it, and
the commands it started, when an object runs past its ``object_timeout``; and a step that
kills it (``os._exit``, a signal, the kernel out of memory) takes only this process, not the
job. It ends with the runner: on Linux the kernel sends it SIGTERM when the runner dies
(``PR_SET_PDEATHSIG``), elsewhere a thread watches the runner's process id; either way it ends
its whole group.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.jobs.step_calls import (
    ObjectRejectedError,
    checked_mapping,
    limit_memory,
    run_command,
)
from pipeline.steps import ObjectRef, Step, TransientStepError

PR_SET_PDEATHSIG = 1
"""prctl(2): the signal this process gets when its parent dies."""


def end_with(parent: int) -> None:
    """End this worker's process group (itself and the commands it started) when ``parent``,
    the runner, ends."""

    def end_group(_signum: int = 0, _frame: Any = None) -> None:
        os.killpg(0, signal.SIGKILL)

    signal.signal(signal.SIGTERM, end_group)
    watched = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            watched = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) == 0
        except (OSError, AttributeError):  # no libc to ask: watch instead
            watched = False
    if os.getppid() != parent:  # the runner died before the kernel was asked to tell us
        end_group()
    if not watched:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1)
            end_group()

        threading.Thread(target=watch, name="runner-watch", daemon=True).start()


def answer(step: Step, role: str, load: Callable[[], Callable[..., Any]], request: Any) -> Any:
    """The answer to one request: what the step returned, or why the object is rejected, or
    a transient failure to retry the child for."""
    source, target = Path(request["source"]), Path(request["target"])
    try:
        if step.kind == "command":
            returned = run_command(step, source, target)
        else:
            returned = load()(source, target, ObjectRef(**request["obj"]))
        return {"returned": checked_mapping(returned)}
    except TransientStepError as error:
        return {"transient": str(error)}
    except ObjectRejectedError as error:
        return {"rejected": str(error)}
    except MemoryError:
        limit = f" of its memory_mib ({step.memory_mib} MiB)" if step.memory_mib else ""
        return {"rejected": f"MemoryError: the step ran out{limit}"}
    except Exception as error:  # the step's own failure: this object is rejected
        return {"rejected": f"{type(error).__name__}: {error}"}


def main(argv: Sequence[str]) -> int:
    """``STEP_JSON ROLE REQUESTS_FD ANSWERS_FD RUNNER_PID``."""
    step = Step.from_json(json.loads(argv[0]))
    role = argv[1]
    requests = os.fdopen(int(argv[2]), "rb")
    answers = os.fdopen(int(argv[3]), "wb")
    end_with(int(argv[4]))
    if step.memory_mib:
        note = limit_memory(step.memory_mib)
        if note:
            print(note, file=sys.stderr, flush=True)
    function: list[Callable[..., Any]] = []

    def load() -> Callable[..., Any]:
        # Imported at the first object, under the memory limit, and once per worker.
        if not function:
            function.append(step.load(role))
        return function[0]

    for line in requests:
        reply = answer(step, role, load, json.loads(line))
        sys.stdout.flush()  # what the step printed, before the runner's next line
        sys.stderr.flush()
        answers.write(json.dumps(reply).encode() + b"\n")
        answers.flush()
    return 0
