"""The pre-loaded launcher: one process that has imported the job programs and their libraries
(boto3, botocore, ``batch_jobs``) and forks one child per job attempt.

A fresh interpreter per child pays Python's start-up and boto3's import (about a quarter of a
second) before a few milliseconds of work; a fork of this process pays neither. Each child is
still a process of its own: its own session and process group (so a stop kills it and its own
children), its own environment, CPU affinity, log file and exit code. Clients are made after
the fork, by the job program, as in a fresh process.

Protocol, JSON lines: LocalBatch writes ``{"argv", "env", "log", "cores"}`` to stdin; the
launcher answers each with ``{"pid"}`` once forked, and later ``{"exited": pid, "code"}`` (a
negative code is the signal that ended it, as ``Popen.returncode`` has it). The launcher is
single-threaded, so forking is safe; it ends when its stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import traceback
from typing import Any

PRELOADED = (
    "boto3",
    "botocore.session",
    "batch_jobs.common",
    "batch_jobs.job_a",
    "batch_jobs.job_b",
    "batch_jobs.job_c",
    "batch_jobs.job_d",
    "batch_jobs.job_e",
)


WARM_SERVICES = ("s3", "dynamodb", "sns")
"""The clients the job programs make: their models are parsed once, here, not per child."""


def preload() -> None:
    """Import the programs and their libraries, and warm boto3's default session: a fork
    inherits its loader's parsed service models and endpoint data, so ``boto3.client()`` in a
    child costs milliseconds instead of the ~150 ms of parsing them again. Credentials,
    region and endpoint are still read when the child makes its client, from its own
    environment; no connection is opened here."""
    import importlib

    for module in PRELOADED:
        with contextlib.suppress(ImportError):  # a launcher for other programs still works
            importlib.import_module(module)
    with contextlib.suppress(Exception):
        import boto3

        session = boto3.Session()
        for service in WARM_SERVICES:
            session.client(
                service,  # type: ignore[call-overload]
                region_name="us-east-1",
                aws_access_key_id="warm",
                aws_secret_access_key="warm",
            )
        boto3.DEFAULT_SESSION = session


def run_program(argv: list[str]) -> int:
    """Run ``python -m MODULE ARGS`` or ``python -c CODE ARGS`` in this process, as the
    interpreter would; returns the exit code."""
    import runpy

    try:
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *argv[3:]]
            exec(compile(argv[2], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as stop:
        if stop.code is None:
            return 0
        if isinstance(stop.code, int):
            return stop.code & 0xFF
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # as the interpreter does: the traceback, exit code 1
        traceback.print_exc()
        return 1
    return 0


def child(request: dict[str, Any]) -> None:
    """In the forked child: become the job's process, run it, and never return."""
    code = 1
    try:
        os.setsid()  # a process group of its own: LocalBatch kills the whole group
        if request.get("cores"):
            os.sched_setaffinity(0, set(request["cores"]))
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ.clear()
        os.environ.update(request["env"])
        code = run_program(request["argv"])
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # the process ends next: nowhere to report
                stream.flush()
        os._exit(code)


def serve() -> None:
    preload()
    out = sys.stdout
    buffered = b""
    stdin = sys.stdin.fileno()
    open_input = True
    children = 0
    while open_input or children:
        ready, _, _ = select.select([stdin] if open_input else [], [], [], 0.01)
        if ready:
            data = os.read(stdin, 65536)
            if not data:
                open_input = False
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                request = json.loads(line)
                out.flush()
                pid = os.fork()
                if pid == 0:
                    child(request)
                children += 1
                out.write(json.dumps({"pid": pid}) + "\n")
                out.flush()
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children = 0
                break
            if pid == 0:
                break
            children -= 1
            out.write(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}))
            out.write("\n")
            out.flush()


if __name__ == "__main__":
    serve()
