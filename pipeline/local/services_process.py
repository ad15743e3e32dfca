"""The local services as a process of this command: started, watched, and stopped with it.

``python -m pipeline.local serve --supervised`` runs in a session of its own (Ctrl-C reaches
this command, which stops it) and stops itself when this process dies (it watches its
standard input). This side watches it back: if the services die while the command uses them,
the command ends within a second with one line saying so.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import EXIT_LOCAL, LocalError, RunStateError
from pipeline.local.run_folder import open_private

STARTUP_SECONDS = 120
STOP_SECONDS = 30
STOPPED_SECONDS = 10
"""How long the services may stay stopped by a signal before the command ends them."""


class ServicesError(LocalError):
    """The local services did not start, or stopped while a command used them."""


class ServicesProcess:
    """A ``python -m pipeline.local serve`` process, stopped when this command ends (it also
    stops itself when this process dies: it watches its standard input)."""

    def __init__(self, arguments: Sequence[str], log: Path | None) -> None:
        command = [sys.executable, "-m", "pipeline.local", "serve", "--json", "--supervised"]
        errors = (
            os.fdopen(open_private(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")
            if log is not None
            else subprocess.DEVNULL
        )
        try:
            self.process = subprocess.Popen(
                [*command, *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,  # Ctrl-C reaches this command, which stops them
            )
        finally:
            if log is not None:
                errors.close()  # type: ignore[union-attr]
        self.log = log
        self.stopped_by_signal = False
        self.ready = self._handshake()
        self.endpoint = str(self.ready["endpoint"])
        self.credentials = {str(k): str(v) for k, v in self.ready["credentials"].items()}
        """How to sign requests to them (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``)."""
        self._closing = threading.Event()
        self._watch()

    def _watch(self) -> None:
        """If the services die while this command uses them, say so within a second: a
        SIGUSR1 to this process, whose handler raises :class:`ServicesError` in the main
        thread (wherever it waits, a request in flight included), instead of each request
        spending its retries on a port nobody answers."""
        if threading.current_thread() is not threading.main_thread():
            return

        def stopped(_signum: int, _frame: Any) -> None:
            raise self.stopped_error()

        self._previous = signal.signal(signal.SIGUSR1, stopped)

        def watch() -> None:
            self.process.wait()
            if not self._closing.is_set():
                os.kill(os.getpid(), signal.SIGUSR1)

        def watch_stopped() -> None:
            # A process stopped by a signal (SIGSTOP) answers nothing and never ends: after
            # STOPPED_SECONDS the services are ended, and the command says why.
            stopped_since: float | None = None
            while not self._closing.wait(1) and self.process.poll() is None:
                if not process_stopped(self.process.pid):
                    stopped_since = None
                    continue
                stopped_since = stopped_since or time.monotonic()
                if time.monotonic() - stopped_since >= STOPPED_SECONDS:
                    self.stopped_by_signal = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    return

        threading.Thread(target=watch, name="services-watch", daemon=True).start()
        threading.Thread(target=watch_stopped, name="services-stopped", daemon=True).start()

    def stopped_error(self) -> ServicesError:
        """What to say when the services have stopped under this command."""
        code = self.process.poll()
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if self.stopped_by_signal:
            how = (
                f"they were stopped by a signal (SIGSTOP) for {STOPPED_SECONDS} s, pid "
                f"{self.process.pid}, and this command ended them"
            )
        if self.log is None:
            return ServicesError(f"the local services stopped ({how}: {self.last_words()})")
        run_id = self.log.parent.name  # the run's folder holds the services' log
        return ServicesError(
            f"the local services stopped while this command used them ({how}: "
            f"{self.last_words()}; their log: {self.log}); what ran is saved: "
            f"`status {run_id} --local`, `resume {run_id} --local`"
        )

    def _handshake(self) -> dict[str, Any]:
        """What the services say when they are ready; the progress lines they say before
        (seeding) go to stderr, and each gives them another :data:`STARTUP_SECONDS`."""
        assert self.process.stdout is not None
        while True:
            readable, _, _ = select.select([self.process.stdout], [], [], STARTUP_SECONDS)
            line = self.process.stdout.readline() if readable else b""
            if not line:
                self.close()
                raise ServicesError(f"the local services did not start: {self.last_words()}")
            ready: dict[str, Any] = json.loads(line)
            if "progress" not in ready:
                break
            print(str(ready["progress"]), file=sys.stderr, flush=True)
        if "error" in ready:
            self.close()
            if ready.get("exitCode") == EXIT_LOCAL:
                raise ServicesError(str(ready["error"]))
            raise RunStateError(str(ready["error"]))
        return ready

    def last_words(self) -> str:
        """The error the services said last in their log, else its last line."""
        if self.log is None or not self.log.exists():
            return "no log"
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line]
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        return errors[-1] if errors else lines[-1] if lines else "no output"

    def alive(self) -> bool:
        return self.process.poll() is None

    def ended(self, *, within: float) -> bool:
        """Whether the services have ended, or end within ``within`` seconds."""
        try:
            self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        closing = getattr(self, "_closing", None)
        if closing is not None:
            closing.set()
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait()
        previous = getattr(self, "_previous", None)
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)


def process_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (state ``T`` in ``/proc/PID/stat``, on
    Linux; elsewhere never said)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["T"]
