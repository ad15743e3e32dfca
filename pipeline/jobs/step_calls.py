"""One step on one object, as a step's worker process calls it: a Python function or a
command, what it returned checked, and the worker's memory limit. Light on purpose (no boto3):
every worker is a fresh interpreter that imports this and the step's own module only."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.contract import EXIT_TRANSIENT
from pipeline.steps import Step, TransientStepError, fill_template

FACTS_LIMIT = 64 * 1024
"""Most bytes of JSON a step may return for one object: facts and attributes are records'
and items' fields, not data."""
MIB = 1024 * 1024


class ObjectRejectedError(Exception):
    """The step could not do its work on this object; the message says why."""


def run_command(step: Step, source: Path, target: Path) -> Any:
    """A command step on one object. Only ``{input}`` and ``{output}`` are filled in (quoted
    for the shell in a string template); every other character is passed as written. Its
    standard output is the output when the template has no ``{output}``; otherwise, a JSON
    object it prints is what it returns. Its standard error goes to a file beside the output
    (bounded memory whatever it prints); on a failure its last lines go to this job's log and
    its last line into the reject's reason."""
    paths = {"input": str(source), "output": str(target)}
    writes_output = "{output}" in step.label
    command: str | list[str]
    if isinstance(step.target, str):
        command = fill_template(step.target, {k: shlex.quote(v) for k, v in paths.items()})
    else:
        command = [fill_template(argument, paths) for argument in step.target]
    printed = target.with_name(target.name + ".stdout")
    errors = target.with_name(target.name + ".stderr")
    try:
        with (printed if writes_output else target).open("wb") as out, errors.open("wb") as err:
            finished = subprocess.run(
                command,
                shell=isinstance(command, str),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **dict(step.environment)},
                cwd=source.parent,
                check=False,
            )
        if finished.returncode != 0:
            tail = _tail(errors)
            for line in tail[-20:]:
                print(f"  | {line}", file=sys.stderr)
            said = tail[-1] if tail else ""
            if finished.returncode == EXIT_TRANSIENT:
                raise TransientStepError(said or "the command exited 75")
            raise ObjectRejectedError(
                f"the command exited {finished.returncode}: {said or 'no output'}"
            )
        if not target.exists():
            raise ObjectRejectedError("the command wrote no output")
        return _printed_mapping(printed) if writes_output else None
    finally:
        printed.unlink(missing_ok=True)
        errors.unlink(missing_ok=True)


def _tail(path: Path, size: int = 8192) -> list[str]:
    """The last lines of ``path`` (its last ``size`` bytes), blank ones left out."""
    with path.open("rb") as reader:
        reader.seek(max(0, path.stat().st_size - size))
        text = reader.read().decode(errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _printed_mapping(path: Path) -> Any:
    """A JSON object the command printed, if what it printed is one (and small)."""
    if path.stat().st_size > FACTS_LIMIT:
        return None
    try:
        printed = json.loads(path.read_bytes() or b"null")
    except ValueError:
        return None
    return printed if isinstance(printed, dict) else None


def checked_mapping(returned: Any) -> Mapping[str, Any] | None:
    """What a step returned, if it is a small JSON mapping (or nothing)."""
    if returned is None:
        return None
    if not isinstance(returned, Mapping):
        raise ObjectRejectedError(f"the step returned a {type(returned).__name__}, not a mapping")
    try:
        size = len(json.dumps(returned, sort_keys=True))
    except (TypeError, ValueError) as error:
        raise ObjectRejectedError(f"the step returned what JSON cannot hold: {error}") from None
    if size > FACTS_LIMIT:
        raise ObjectRejectedError(
            f"the step returned {size:,} bytes of JSON; at most {FACTS_LIMIT:,}"
        )
    return dict(returned)


def memory_limit_method() -> str | None:
    """How this system holds a step to its ``memory_mib``: ``RLIMIT_DATA`` (Linux counts every
    private writable mapping of a process against it, the heap and anonymous mmaps alike), or
    None where it cannot (other systems do not enforce it, or have no ``resource`` module)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    return "RLIMIT_DATA" if hasattr(resource, "RLIMIT_DATA") else None


def not_enforced_note(memory_mib: int) -> str:
    """The one line that says a step's memory is not held to ``memory_mib`` here."""
    return (
        f"note: memory_mib={memory_mib} is not enforced on this system ({sys.platform} has no "
        "RLIMIT_DATA a process is held to); a step may use more here than its job gets on AWS"
    )


def limit_memory(memory_mib: int) -> str | None:
    """Hold this process, and every process it starts, to ``memory_mib`` MiB of data
    (``RLIMIT_DATA``, inherited across fork and exec); past it an allocation fails (a Python
    step gets ``MemoryError``). Returns a line to log when this system cannot."""
    if memory_limit_method() is None:
        return not_enforced_note(memory_mib)
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    wanted = memory_mib * MIB
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))
    return None
