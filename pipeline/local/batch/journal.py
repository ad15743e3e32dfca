"""The local AWS Batch endpoint's state on disk: a journal appended as things happen, read
back when the endpoint starts again on the same state folder.

Each line is one JSON record: a registry call (a compute environment, queue or job
definition created or changed), a job as submitted, or a job's (or array child's) state at an
attempt's start and end. Nothing is ever rewritten: a record is appended and flushed, so a
kill at any moment loses at most the line being written, which reading skips. Jobs that had
not ended when the journal stops (the services were killed) are ended when it is read: a
started one as a lost host, the others as never started, as when the services stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.local.batch.exceptions import BatchClientError
from pipeline.local.batch.models import LocalBatch

REGISTRY_CALLS = (
    "CreateComputeEnvironment",
    "UpdateComputeEnvironment",
    "DeleteComputeEnvironment",
    "CreateJobQueue",
    "UpdateJobQueue",
    "DeleteJobQueue",
    "RegisterJobDefinition",
    "DeregisterJobDefinition",
    "TagResource",
    "UntagResource",
)
"""The operations whose requests are journaled as they are, and replayed as calls."""


class JournalError(Exception):
    """A journal that cannot be read; the message names the file and the line."""


class StateWriteError(OSError):
    """A run's state could not be written (a full disk); the message names the file."""


class AppendOnlyFile:
    """A file that only grows by whole records, each handed to the operating system as it is
    appended (no buffer of this process holds one: a kill of the process loses none). A
    record that cannot be written whole (a full disk) is cut back off, nothing is written
    after it, and ``on_broken(message)`` is told once: the file is then what it was before
    that record, so what is appended after the next start follows whole records only. The
    file is the user's alone (0600). What the operating system holds reaches the disk by
    :meth:`close`, and within the system's own write-back otherwise: a power cut may lose the
    last seconds, never break a record that was whole."""

    def __init__(self, path: Path, on_broken: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.on_broken = on_broken or (lambda _message: None)
        self.broken: str | None = None
        self._lock = threading.Lock()
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        os.fchmod(self._fd, 0o600)

    def append(self, data: bytes) -> None:
        with self._lock:
            if self.broken is not None or self._fd is None:
                raise StateWriteError(self.broken or f"{self.path} is closed")
            start = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:  # a write may take part of the record: the rest follows
                    view = view[os.write(self._fd, view) :]
            except OSError as error:
                self.broken = f"the run's state cannot be written to {self.path}: {error.strerror}"
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
                self.on_broken(self.broken)
                raise StateWriteError(self.broken) from error

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class Journal(AppendOnlyFile):
    """AWS Batch's records, one JSON line each (see the module's docstring)."""

    def append_record(self, kind: str, record: dict[str, Any]) -> None:
        self.append(json.dumps({"kind": kind, **record}, separators=(",", ":")).encode() + b"\n")


def records(path: Path) -> Iterator[dict[str, Any]]:
    """The journal's records. A last line without its end (the writer was killed while
    writing it) is skipped; any other line that is not a record is a :class:`JournalError`."""
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "kind" not in record:
                raise ValueError("not a record")
        except ValueError:
            raise JournalError(
                f"{path} line {number} is damaged; remove the run or that line"
            ) from None
        yield record


def replay(backend: LocalBatch, path: Path, call: Any) -> None:
    """Rebuild ``backend``'s registry and jobs from the journal at ``path``; ``call(operation,
    request)`` applies a registry call. Jobs come back as they were, without running. Every
    line is read before any is applied, so a damaged journal changes nothing."""
    every = list(records(path))
    with backend.lock:
        for record in every:
            kind = record["kind"]
            if kind == "call":
                try:
                    call(record["operation"], record["request"])
                except BatchClientError as error:
                    # A call an earlier version took that this one refuses as AWS Batch does
                    # (a MANAGED EC2 environment without instanceRole, say).
                    raise JournalError(
                        f"{path} holds a {record['operation']} call these services now refuse "
                        f"({error.message}); start them on a new state folder"
                    ) from None
            elif kind == "job":
                try:
                    backend.restore_job(record)
                except BatchClientError as error:
                    raise JournalError(
                        f"{path} holds a job whose queue or job definition these services do "
                        f"not have ({error.message}); start them as they were started for it "
                        "(for a run of the pipeline: with --with-pipeline)"
                    ) from None
            elif kind == "leaf":
                backend.restore_leaf(record)
        backend.settle_restored()
