"""A local run's folder: the one module that names its files, used by both processes of a
local run (the command, and the services it starts with ``serve --state-dir``).

``runs/<run-id>/`` under the state root (``$PIPELINE_LOCAL_STATE_DIR``, else
``~/.local/state/array-job-pipeline``) holds:

- ``lock``: held (``flock``) by the services while they run on the folder;
- ``endpoint.json``: where those services listen, while they run;
- ``batch.jsonl`` and ``services.journal``: the journals AWS Batch and S3/DynamoDB replay;
- ``credentials.json``: the services' credentials, while they run;
- ``steps.json``: the run's steps, when they are not the library's;
- ``services.log``: what the services said;
- ``logs/``: every attempt's output, as the engine lays it out (:func:`.batch.scheduler.log_path`);
- ``summary.json``: the run's summary, once it succeeded;
- ``not-seeded.json``: the input files it left out, and why.

The folder and everything in it are the user's alone: folders 0700, files 0600, whatever
the umask (job logs and journals hold inputs, outputs and credentials).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.local.batch.scheduler import LOGS_FOLDER

STATE_DIR_ENV = "PIPELINE_LOCAL_STATE_DIR"
LOCK_FILE = "lock"
ENDPOINT_FILE = "endpoint.json"
BATCH_JOURNAL = "batch.jsonl"
SERVICES_JOURNAL = "services.journal"
CREDENTIALS_FILE = "credentials.json"
STEPS_FILE = "steps.json"
SERVICES_LOG = "services.log"
SUMMARY_FILE = "summary.json"
NOT_SEEDED_FILE = "not-seeded.json"
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def state_root() -> Path:
    """$PIPELINE_LOCAL_STATE_DIR, else ~/.local/state/array-job-pipeline."""
    return Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".local/state/array-job-pipeline")


def runs_dir() -> Path:
    return state_root() / "runs"


def private_folder(path: Path) -> Path:
    """``path`` and its missing parents made, and ``path`` itself readable by its owner only.
    A ``path`` that is a link, or another user's folder (made there first by someone else of
    the machine, to read or plant what the services keep), is refused: PermissionError."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
    status = os.lstat(path)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid():
        raise PermissionError(
            errno.EPERM, "not a folder of this user's own: name another state folder", str(path)
        )
    os.chmod(path, PRIVATE_FOLDER)  # mkdir's mode is masked by the umask; an old one is kept
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of a file only its owner may read, whatever the umask; one that exists is
    made so too. Refuses to follow a symbolic link at ``path``."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)
    return fd


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` as JSON, whole or not at all: a private sibling temporary
    file, then ``os.replace`` (atomic on POSIX), so a kill at any moment leaves the old file
    or the new one, never a part."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(data, indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@dataclass(frozen=True)
class RunFolder:
    """The folder of one local run (or of one ``serve --state-dir``)."""

    path: Path

    @classmethod
    def of(cls, run_id: str) -> RunFolder:
        return cls(runs_dir() / run_id)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def endpoint_file(self) -> Path:
        return self.path / ENDPOINT_FILE

    @property
    def batch_journal(self) -> Path:
        return self.path / BATCH_JOURNAL

    @property
    def services_journal(self) -> Path:
        return self.path / SERVICES_JOURNAL

    @property
    def credentials_file(self) -> Path:
        return self.path / CREDENTIALS_FILE

    @property
    def steps_file(self) -> Path:
        return self.path / STEPS_FILE

    @property
    def services_log(self) -> Path:
        return self.path / SERVICES_LOG

    @property
    def logs(self) -> Path:
        return self.path / LOGS_FOLDER

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def not_seeded_file(self) -> Path:
        """The input files the run left out, with why (a run of ``--input DIR``)."""
        return self.path / NOT_SEEDED_FILE

    def not_seeded(self) -> dict[str, str]:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return {str(k): str(v) for k, v in json.loads(self.not_seeded_file.read_text()).items()}
        return {}

    def holds_a_run(self) -> bool:
        """Whether a job was ever submitted here (the Batch journal has a record)."""
        journal = self.batch_journal
        return journal.is_file() and journal.stat().st_size > 0

    def lost_its_jobs(self) -> bool:
        """Whether the folder kept a run's data but its Batch journal is gone: the services
        always make that journal when they start, so a folder with state and no journal
        lost it."""
        if self.batch_journal.exists():
            return False
        journal = self.services_journal
        return (journal.is_file() and journal.stat().st_size > 0) or self.logs.is_dir()

    def abandoned(self) -> bool:
        """A folder of a run that never submitted a job (its command was killed while it
        started) and that no services hold: it is nobody's run."""
        return not self.holds_a_run() and not self.lost_its_jobs() and not self.in_use()

    # --- the services' side ---------------------------------------------------------------------

    def hold(self) -> IO[bytes] | None:
        """Take the folder for one set of services (made private first); the lock's handle,
        which holds it until closed, or None when other services hold it."""
        private_folder(self.path)
        handle = os.fdopen(open_private(self.lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        return handle

    def announce(self, endpoint: str, pid: int, credentials: dict[str, str], region: str) -> None:
        """Where the services holding the folder listen, for which region, and how to sign
        requests to them."""
        write_json(self.credentials_file, credentials)
        write_json(self.endpoint_file, {"endpoint": endpoint, "pid": pid, "region": region})

    def region(self) -> str | None:
        """The region the services announced, if they did."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return str(json.loads(self.endpoint_file.read_text())["region"])
        return None

    def withdraw(self) -> None:
        """The services are stopping: nobody listens at the announced endpoint any more."""
        for path in (self.endpoint_file, self.credentials_file):
            path.unlink(missing_ok=True)

    # --- the command's side ---------------------------------------------------------------------

    def not_private(self) -> str | None:
        """Why the folder is not this user's alone (another's, a link, open to others), or
        None: what it holds is trusted (run, or printed for a shell) only when it is."""
        try:
            status = os.lstat(self.path)
        except OSError as error:
            return f"{self.path} cannot be read: {error.strerror}"
        if not stat.S_ISDIR(status.st_mode):
            return f"{self.path} is not a folder"
        if status.st_uid != os.geteuid():
            return f"{self.path} belongs to another user (uid {status.st_uid})"
        if status.st_mode & 0o077:
            return f"{self.path} is open to other users (mode {status.st_mode & 0o777:o})"
        return None

    def live_services(self) -> tuple[str, dict[str, str]] | None:
        """(endpoint, credentials) of the services running this folder now, if any: their
        lock is held and they have announced themselves, in a folder that is this user's
        alone, as the services write them (anything else is not theirs)."""
        if self.not_private() is not None or not self.lock.exists():
            return None
        with self.lock.open("ab") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    endpoint = str(json.loads(self.endpoint_file.read_text())["endpoint"])
                    credentials = json.loads(self.credentials_file.read_text())
                    if re.fullmatch(r"http://127\.0\.0\.1:\d{1,5}", endpoint) and set(
                        credentials
                    ) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}:
                        return endpoint, {str(k): str(v) for k, v in credentials.items()}
                return None
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    def in_use(self) -> bool:
        """Whether services hold the folder now (announced or still starting)."""
        if not self.lock.exists():
            return False
        with self.lock.open("ab") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def run_folders() -> list[RunFolder]:
    """Every folder under the runs folder, by name."""
    root = runs_dir()
    if not root.is_dir():
        return []
    return [RunFolder(d) for d in sorted(root.iterdir()) if d.is_dir()]
