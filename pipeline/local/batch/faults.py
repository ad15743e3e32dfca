"""Failures to inject into job attempts, to see the retry rules and the failure path offline.

``--inject JOB[:INDEX]=FAULT`` names a job by its name (``render``) and, for an array job, one
child; the fault applies to that job's (or child's) first attempt:

- ``exit:CODE``: the attempt exits with CODE, as a program's own error would;
- ``host-terminated``: the host goes away (status reason ``Host EC2 (instance ...)
  terminated.``), which the pipeline's retry rules retry;
- ``timeout``: the attempt runs out of time (Batch never retries a timed-out attempt);
- ``out-of-memory``: the container is killed for its memory (exit code 137, status reason
  ``OutOfMemoryError: ...``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.batch_facts import (
    ESSENTIAL_CONTAINER_EXITED,
    OUT_OF_MEMORY,
    OUT_OF_MEMORY_EXIT_CODE,
    TIMEOUT_REASON,
    host_terminated,
)

LOCAL_INSTANCE = "i-0local"
"""The one instance every local job runs on, as status reasons name it."""
HOST_TERMINATED = host_terminated(LOCAL_INSTANCE)


class FaultError(ValueError):
    """A fault that cannot be parsed; the message says what a good one looks like.
    ``part`` says which part is wrong: ``target`` (``JOB[:INDEX]=``) or ``fault``."""

    def __init__(self, message: str, *, part: str) -> None:
        super().__init__(message)
        self.part = part


@dataclass(frozen=True)
class Fault:
    """A failure of one attempt: ``exit`` (with ``exit_code``), ``host-terminated``,
    ``timeout`` or ``out-of-memory``."""

    kind: str
    exit_code: int | None = None

    def outcome(self) -> tuple[int | None, str, bool]:
        """How the attempt ends: (exit code, status reason, whether Batch may retry it)."""
        if self.kind == "exit":
            return self.exit_code, ESSENTIAL_CONTAINER_EXITED, True
        if self.kind == "out-of-memory":
            return OUT_OF_MEMORY_EXIT_CODE, OUT_OF_MEMORY, True
        if self.kind == "timeout":
            return None, TIMEOUT_REASON, False
        return None, HOST_TERMINATED, True

    @classmethod
    def parse(cls, text: str) -> Fault:
        if text in ("host-terminated", "timeout"):
            return cls(text)
        if text == "out-of-memory":
            return cls(text, OUT_OF_MEMORY_EXIT_CODE)
        if text.startswith("exit:") and text[5:].isdigit() and 0 < int(text[5:]) < 256:
            return cls("exit", int(text[5:]))
        raise FaultError(
            f"fault {text!r} must be exit:CODE (CODE from 1 to 255), host-terminated, timeout "
            "or out-of-memory",
            part="fault",
        )


FaultKey = tuple[str, int | None]
"""(job name, array index or None)."""


@dataclass(frozen=True)
class InjectedFault:
    """One ``JOB[:INDEX]=FAULT`` as written."""

    job: str
    index: int | None
    fault: Fault

    @classmethod
    def parse(cls, text: str) -> InjectedFault:
        target, _, what = text.partition("=")
        job, _, index = target.partition(":")
        if not job or not what or (index and not index.isdigit()):
            raise FaultError(
                f"{text!r} must look like render:3=exit:2 (a job name, an optional child index, "
                "and exit:CODE, host-terminated, timeout or out-of-memory)",
                part="target",
            )
        return cls(job, int(index) if index else None, Fault.parse(what))


def fault_plan(texts: Iterable[str]) -> Mapping[FaultKey, Fault]:
    """The faults of ``--inject`` values, keyed by (job name, index)."""
    plan: dict[FaultKey, Fault] = {}
    for text in texts:
        injected = InjectedFault.parse(text)
        plan[(injected.job, injected.index)] = injected.fault
    return plan
