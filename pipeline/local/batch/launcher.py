"""The fork server: one process that has imported the modules its caller names (the job
programs and their libraries) and forks one child per job attempt.

A fresh interpreter per attempt pays Python's start-up and boto3's import (about a quarter
of a second) before a few milliseconds of work; a fork of this process pays neither. Each
child is still a process of its own: its own session and process group (so a stop reaches
it and whatever it started), its own environment, CPU affinity, log file and exit code.

Protocol, JSON lines: the endpoint writes ``{"argv", "env", "log", "cores", "exec"}`` to stdin
(``exec``: the child execs ``argv`` instead of running it as Python here); the
fork server answers each with ``{"pid"}`` once the child exists, and later ``{"exited": pid,
"code"}`` (a negative code is the signal that ended it, as ``Popen.returncode`` has it). A
child tells its exit code on a pipe as it exits, so its exit is reported before the kernel
has torn its memory down (a few milliseconds for a fork of this process, which add up over
thousands of children that wait for each other); one that ends otherwise (a signal) is
reported when it is reaped. It is single-threaded, so forking is safe. When its stdin closes
it asks its children to stop (SIGTERM), kills what is left after a grace period, and exits:
the endpoint that started it has ended, however it ended.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

STOP_GRACE_SECONDS = 2.0
"""How long a job asked to stop may take before it is killed (AWS Batch gives 30 s)."""


def preload(modules: Sequence[str], warm_up: str | None) -> None:
    """Import ``modules`` (a job program, its libraries) and run ``warm_up`` (``"module:function"``,
    the caller's preparation, in this process's environment, which is the jobs'): whatever they
    build is shared with every child until the child writes to it."""
    import importlib

    for module in modules:
        with contextlib.suppress(ImportError):  # a fork server for other programs still works
            importlib.import_module(module)
    if warm_up:
        module_name, _, function = warm_up.partition(":")
        try:
            getattr(importlib.import_module(module_name), function)()
        except Exception:  # a preparation that fails costs speed, not correctness
            traceback.print_exc()


def run_program(argv: list[str], preloaded: Sequence[str] = ()) -> int:
    """Run ``python -m MODULE ARGS`` or ``python -c CODE ARGS`` in this process, as the
    interpreter would; returns the exit code."""
    import runpy

    try:
        module = sys.modules.get(argv[2]) if argv[1] == "-m" else None
        if module is not None and argv[2] in preloaded and hasattr(module, "main"):
            # A preloaded program: run what its `if __name__ == "__main__"` guard runs,
            # without executing its module body again.
            sys.argv = [argv[2], *argv[3:]]
            raise SystemExit(module.main())
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


def set_affinity(cores: list[int]) -> None:
    """Pin to ``cores`` where the system can (Linux); elsewhere the job shares every core."""
    if cores and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(cores))


def child(
    request: dict[str, Any], inherited: tuple[int, ...], notices: int, preloaded: Sequence[str]
) -> NoReturn:
    """In the forked child: become the job's process, run it, tell its exit code on
    ``notices``, and never return."""
    code = 1
    try:
        os.setsid()  # a process group of its own: a stop kills the whole group
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL)
        for fd in inherited:
            os.close(fd)
        set_affinity(request.get("cores") or [])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        wanted: dict[str, str] = request["env"]
        for name in [name for name in os.environ if name not in wanted]:
            del os.environ[name]
        for name, value in wanted.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
        if request.get("exec"):
            # Any other program: this process becomes it, a child of the fork server still,
            # so it is stopped with the services however they end.
            import shutil

            argv = request["argv"]
            code = 127  # as a shell says a command it cannot find
            os.execve(shutil.which(argv[0], path=wanted.get("PATH")) or argv[0], argv, wanted)
        # As a new interpreter would: the job's PYTHONPATH (where its steps' modules are).
        for entry in reversed(wanted.get("PYTHONPATH", "").split(os.pathsep)):
            if entry and entry not in sys.path:
                sys.path.insert(0, entry)
        code = run_program(request["argv"], preloaded)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with contextlib.suppress(OSError):  # one write of a few bytes: atomic on a pipe
            os.write(notices, f"{os.getpid()} {code & 0xFF}\n".encode())
        os._exit(code)


def stop_all(pids: set[int]) -> None:
    """Ask every child's process group to stop, then kill what is left after the grace."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while pids and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid:
                pids.discard(pid)
                continue
        time.sleep(0.05)
    for pid in pids:
        for kill in (os.kill, os.killpg):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)


def serve(modules: Sequence[str] = (), warm_up: str | None = None) -> None:
    preload(modules, warm_up)
    # Everything loaded so far is shared with every child until someone writes to it; a
    # garbage collection in a child would write to all of it (each object's GC header).
    # Frozen objects are left out of collections.
    gc.freeze()
    out = sys.stdout
    stdin = sys.stdin.fileno()
    # A child's exit wakes the loop at once (SIGCHLD through a self-pipe): jobs that wait
    # for each other start one after another with no idle gap.
    wakeup = os.pipe()
    for fd in wakeup:
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Ctrl-C in a terminal reaches the whole foreground group: the endpoint decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    notices, notice_end = os.pipe()
    os.set_blocking(notices, False)
    noticed = b""
    running: set[int] = set()
    """Jobs whose exit is not reported yet."""
    unreaped: set[int] = set()
    """Jobs whose exit was reported from their notice, still to be reaped."""
    buffered = b""

    def report(message: dict[str, int]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    while True:
        ready, _, _ = select.select([wakeup[0], stdin, notices], [], [], 0.5)
        if notices in ready:
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(notices, 4096):
                    noticed += chunk
            while b"\n" in noticed:
                line, noticed = noticed.split(b"\n", 1)
                pid, code = (int(field) for field in line.split())
                if pid in running:
                    running.discard(pid)
                    unreaped.add(pid)
                    try:
                        report({"exited": pid, "code": code})
                    except BrokenPipeError:
                        stop_all(running | unreaped)
                        return
        if wakeup[0] in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wakeup[0], 4096):
                    pass
        if stdin in ready:
            data = os.read(stdin, 65536)
            if not data:
                stop_all(running | unreaped)
                return
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                request = json.loads(line)
                out.flush()
                pid = os.fork()
                if pid == 0:
                    child(request, (*wakeup, stdin, notices), notice_end, modules)
                running.add(pid)
                try:
                    report({"pid": pid})
                except BrokenPipeError:
                    stop_all(running)
                    return
        while running or unreaped:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                running.clear()
                unreaped.clear()
                break
            if pid == 0:
                break
            unreaped.discard(pid)
            if pid in running:
                running.discard(pid)
                try:
                    report({"exited": pid, "code": os.waitstatus_to_exitcode(status)})
                except BrokenPipeError:  # the endpoint is gone: nobody watches the jobs
                    stop_all(running)
                    return


def main(argv: Sequence[str]) -> None:
    """``python -m pipeline.local.batch.launcher [--preload MODULE]... [--warm-up MOD:FUNC]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.local.batch.launcher")
    parser.add_argument("--preload", action="append", default=[], metavar="MODULE")
    parser.add_argument("--warm-up", metavar="MODULE:FUNCTION")
    args = parser.parse_args(argv)
    serve(tuple(args.preload), args.warm_up)


if __name__ == "__main__":
    main(sys.argv[1:])
