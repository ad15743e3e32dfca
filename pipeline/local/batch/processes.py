"""Starting and stopping job processes: forks of the fork server (:mod:`.launcher`) for Python
programs, a plain process for anything else, and for everything if the fork server is gone.

Every job process leads a process group of its own, so a stop reaches it and whatever it
started. A stop asks first (SIGTERM to the group) and kills (SIGKILL) after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pipeline.local.batch.launcher import STOP_GRACE_SECONDS


class Forked:
    """A job process forked by the fork server, with the Popen methods the scheduler uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.lost = False
        """True when the fork server died before it could report this process's exit."""
        self._ended = threading.Event()

    def ended(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired("forked job", timeout or 0)
        assert self.returncode is not None
        return self.returncode


JobProcess = subprocess.Popen[bytes] | Forked


class ForkServer:
    """The client side of :mod:`.launcher`: start it, ask it for a fork per attempt, hear
    about exits on a reader thread (``on_exit`` is called after each)."""

    def __init__(
        self,
        environment: Mapping[str, str],
        log: Path,
        on_exit: Callable[[], None],
        *,
        preload: Sequence[str] = (),
        warm_up: str | None = None,
        on_crash: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        """``preload`` (modules) and ``warm_up`` (``"module:function"``): what the fork server
        imports and runs once, before its first fork (see :mod:`.launcher`)."""
        self._on_exit = on_exit
        log.parent.mkdir(parents=True, exist_ok=True)
        options = [f"--preload={module}" for module in preload]
        if warm_up:
            options.append(f"--warm-up={warm_up}")
        with log.open("wb") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.local.batch.launcher", *options],
                env=dict(environment),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        self._children: dict[int, Forked] = {}
        self._early: dict[int, int] = {}
        self._pids: queue.Queue[int] = queue.Queue()
        self._lock = threading.Lock()

        def read() -> None:
            try:
                self._read()
            except BaseException as error:
                if on_crash is None:
                    raise
                on_crash("fork-server reader", error)

        self._reader = threading.Thread(target=read, name="fork-server", daemon=True)
        self._reader.start()

    def launch(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        cores: Sequence[int],
        *,
        exec_program: bool = False,
    ) -> Forked:
        """A fork running ``argv`` (a Python program run in the fork, or with
        ``exec_program`` any program the fork becomes); OSError when the fork server is
        gone or does not answer."""
        assert self.process.stdin is not None
        if self.process.poll() is not None:
            raise OSError(f"the fork server exited with {self.process.returncode}")
        request = {
            "argv": list(argv),
            "env": dict(env),
            "log": str(log),
            "cores": list(cores),
            "exec": exec_program,
        }
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as error:
            raise OSError("the fork server is gone") from error
        deadline = time.monotonic() + 30
        while True:
            try:
                pid = self._pids.get(timeout=0.2)
                break
            except queue.Empty:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise OSError("the fork server did not answer") from None
        forked = Forked(pid)
        with self._lock:
            self._children[pid] = forked
            if pid in self._early:  # it ended before it was registered
                forked.ended(self._early.pop(pid))
        return forked

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            if "pid" in message:
                self._pids.put(int(message["pid"]))
                continue
            pid, code = int(message["exited"]), int(message["code"])
            with self._lock:
                forked = self._children.pop(pid, None)
                if forked is None:
                    self._early[pid] = code
                else:
                    forked.ended(code)
            self._on_exit()
        # The fork server is gone: nobody will report its children's exits. End them and
        # report each as killed, rather than leave them running unwatched.
        with self._lock:
            orphans, self._children = self._children, {}
        for pid, forked in orphans.items():
            kill_group(pid, signal.SIGKILL)
            forked.lost = True
            forked.ended(-signal.SIGKILL)
        self._on_exit()

    def close(self) -> None:
        """End the fork server (it stops what it still runs) and wait for it."""
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=STOP_GRACE_SECONDS + 5)
        except subprocess.TimeoutExpired:
            kill_group(self.process.pid, signal.SIGKILL)
            self.process.wait()


def forkable(command: Sequence[str]) -> bool:
    """Commands the fork server can run in a fork of itself: this interpreter, -m or -c."""
    return len(command) >= 3 and command[0] == sys.executable and command[1] in ("-m", "-c")


def start_process(
    command: Sequence[str], env: Mapping[str, str], log: Path, cores: Sequence[int]
) -> subprocess.Popen[bytes]:
    """A plain process for ``command``, leading its own process group, pinned to ``cores``
    where the system can pin."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    if cores and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(process.pid, set(cores))
    return process


def kill_group(pid: int, signal_number: int) -> None:
    """Signal a job's process and its process group. The process first: one that has not yet
    made its own group (a fresh fork's first instructions) is not reached by the group."""
    for kill in (os.kill, os.killpg):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal_number)


def available_cores() -> int:
    """The cores this process may use: its CPU affinity where the system has one (Linux),
    else every CPU the system counts."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
