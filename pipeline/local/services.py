"""The local services, assembled: moto's services and AWS Batch on one endpoint, their state
kept in a folder, and what AWS Batch tells the other services (job logs to CloudWatch Logs,
job state changes to EventBridge).

With a state folder, everything that changes a bucket, a table or AWS Batch is appended to
journals there as it happens (see :mod:`.server` and :mod:`.batch.journal`); started again on
the same folder, the services replay them and are as they were, jobs included. The folder is
locked while services run on it, so two commands cannot write one run's state. Without one,
the state lives as long as the services.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from pipeline import contract
from pipeline.errors import SpecError
from pipeline.local import deployment
from pipeline.local.batch.definitions import Place
from pipeline.local.batch.faults import Fault, FaultKey
from pipeline.local.batch.in_process import call_app, in_process_clients
from pipeline.local.batch.journal import Journal, JournalError, replay
from pipeline.local.batch.models import LocalBatch
from pipeline.local.batch.responses import BatchService
from pipeline.local.batch.scheduler import Scheduler, log_path, print_crash, supervised
from pipeline.local.guard import Door
from pipeline.local.moto_app import WsgiApp, moto_application
from pipeline.local.objects import put_objects
from pipeline.local.run_folder import RunFolder
from pipeline.local.server import Dispatcher, ServiceJournal, journaled_requests, make_server
from pipeline.local.sigv4 import Credentials
from pipeline.local.warm_up import PRELOADED, WARM_UP
from pipeline.steps import DEFAULT_STEPS, PipelineSteps, describe_steps


class StateInUseError(Exception):
    """Another command's services hold this state folder."""


class LogShipper:
    """Puts each attempt's output into CloudWatch Logs under its log stream. A failed
    attempt's log is shipped at once (the failure report reads it right after); the others
    when someone reads CloudWatch Logs (:meth:`flush`, called by the dispatcher before every
    Logs request), so a run nobody reads the logs of pays nothing for them."""

    def __init__(self, logs: Any) -> None:
        self.logs = logs
        self._pending: list[tuple[str, str, Path]] = []
        self._lock = threading.Lock()
        self._failed = False

    def ship(self, group: str, stream: str, path: Path, *, now: bool = False) -> None:
        if now:
            self._put(group, stream, path)
            return
        with self._lock:
            self._pending.append((group, stream, path))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for item in pending:
            try:
                self._put(*item)
            except Exception as error:  # a log not shipped is still in its file
                self._note(error)

    def _note(self, error: Exception) -> None:
        if not self._failed:
            self._failed = True
            print(
                f"note: a job log could not be put into CloudWatch Logs "
                f"({type(error).__name__}: {error}); every log stays on disk",
                file=sys.stderr,
                flush=True,
            )

    def _put(self, group: str, stream: str, path: Path) -> None:
        try:
            self._put_once(group, stream, path)
        except self.logs.exceptions.ResourceNotFoundException:
            # The group or stream was deleted meanwhile (a client may delete it): once more.
            self._put_once(group, stream, path)

    def _put_once(self, group: str, stream: str, path: Path) -> None:
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_group(logGroupName=group)
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
        stamp = int(path.stat().st_mtime * 1000)
        lines = [line for line in path.read_text(errors="replace").splitlines() if line]
        for start in range(0, len(lines), 10_000):
            chunk = lines[start : start + 10_000]
            events = [{"timestamp": stamp, "message": line} for line in chunk]
            self.logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


class LocalServices:
    """S3, DynamoDB, SNS, SQS, CloudWatch Logs and EventBridge (moto) and AWS Batch (this
    library's engine) on one loopback port. Use :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        *,
        port: int = 0,
        state_dir: Path | None = None,
        with_pipeline: bool = False,
        inputs: Mapping[str, bytes] | None = None,
        read_only: bool = False,
        hold_jobs: bool = False,
        history: Sequence[Path] = (),
        faults: Mapping[FaultKey, Fault] | None = None,
        vcpus: int | None = None,
        steps: tuple[PipelineSteps, Sequence[str]] | None = None,
        credentials: Credentials | None = None,
        region: str = deployment.REGION,
        array_size: int = deployment.LOCAL_ARRAY_SIZE,
        on_seeding: Callable[[int, int], None] | None = None,
    ) -> None:
        self.port = port
        self.region = region
        """The region the services answer for: AWS Batch's ARNs, the pipeline's resources
        and the job logs are in it."""
        self.array_size = array_size
        """With the pipeline: the array size its job definitions set (JobB and JobC)."""
        self.credentials = credentials or Credentials.random()
        """The one access key the services accept (new random ones unless given)."""
        self.state_dir = state_dir
        self.with_pipeline = with_pipeline
        self.inputs = inputs
        self.read_only = read_only
        self.hold_jobs = hold_jobs
        """Keep the state and answer every request, but place no job (a run is being
        cancelled: what it had queued must not start first)."""
        self.history = list(history)
        self.faults = dict(faults or {})
        self.vcpus = vcpus
        self.on_seeding = on_seeding or (lambda _done, _total: None)
        """Told (objects put, objects to put) as BucketA is seeded."""
        self.steps = steps
        """The steps the pipeline runs and the folders their modules import from (default:
        a state folder's own, else the library's); given with a state folder, they are kept
        there for the next start."""
        self.endpoint = ""
        self.fresh = True
        self.damaged: dict[str, str] = {}
        """Runs of ``history`` left out, by folder name: why their state cannot be read."""
        self.fatal: str | None = None
        """Why the services stopped themselves (their state could not be written)."""
        self._closers: list[Callable[[], None]] = []
        self._lock_file: IO[bytes] | None = None

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        folder = RunFolder(self.state_dir) if self.state_dir is not None else None
        state = self.state_dir
        if folder is not None and not self.read_only:
            self._lock_file = folder.hold()
            if self._lock_file is None:
                raise StateInUseError(f"{state} is in use by another command's local services")
        work = (
            state
            if state is not None and not self.read_only
            else Path(tempfile.mkdtemp(prefix="array-pipeline-local-"))
        )
        if work is not state:
            self._closers.append(lambda: shutil.rmtree(work, ignore_errors=True))
        moto = moto_application()
        # moto keeps its services' state per process: start from none (moto's reset API).
        call_app(moto, {"REQUEST_METHOD": "POST", "PATH_INFO": "/moto-api/reset"}, b"")
        direct = in_process_clients(
            moto,
            ("s3", "dynamodb", "sns", "sqs", "logs", "events"),
            region=self.region,
            credentials=self.credentials.as_environment(),
        )
        self.backend = LocalBatch(
            Place(deployment.ACCOUNT, self.region),
            faults=self.faults,
            on_event=lambda detail: _put_event(direct["events"], detail),
        )
        self.batch = BatchService(self.backend)
        self.dispatcher = Dispatcher(moto, self.batch)
        self.dispatcher.health = self.health
        door = Door(
            self.dispatcher,
            self.credentials,
            lambda: int(self.server.port),
            batch_region=self.region,
            on_refused=_RefusalLog().note,
        )
        self.server = make_server(door, self.port, on_exhausted=self._state_lost)
        self.endpoint = f"http://127.0.0.1:{self.server.port}"
        self._closers.append(self.server.server_close)
        steps, roots = self._steps(folder)
        document = deployment.local_document(self.array_size, steps, self.region)
        if self.with_pipeline:
            deployment.deploy(self.batch.call, direct, document)
        shipper = LogShipper(direct["logs"])
        self.dispatcher.before_logs = shipper.flush
        for other in map(RunFolder, self.history):  # to list: a damaged one is left out, said why
            try:
                self._replay(other, moto, shipper, batch_only=True)
            except (JournalError, KeyError, TypeError, ValueError) as error:
                why = f"{other.batch_journal} holds a record this version cannot read"
                self.damaged[other.name] = (
                    str(error) if isinstance(error, JournalError) else f"{why} ({error!r})"
                )
        if folder is not None:
            self._replay(folder, moto, shipper, batch_only=False)
        if folder is not None and not self.read_only:
            self.dispatcher.journal = ServiceJournal(folder.services_journal, self._state_lost)
            journal = Journal(folder.batch_journal, self._state_lost)
            self.backend.on_record = journal.append_record
            self.batch.journal = journal
            self._closers += [self.dispatcher.journal.close, journal.close]
            self.backend.continue_restored()  # journaled: what the restart did to each job
        if self.with_pipeline and self.fresh and self.inputs is not None:
            # Straight to the application (journaled), not through a client and the network:
            # one request each is most of a small object's cost.
            total = len(self.inputs)
            put_objects(
                self.dispatcher,
                document.resources["input_bucket"],
                self.inputs,
                region=self.region,
                access_key_id=self.credentials.access_key_id,
                progress=lambda done: self.on_seeding(done, total),
            )
        self.scheduler: Scheduler | None = None
        if not self.read_only and not self.hold_jobs:
            self.scheduler = Scheduler(
                self.backend,
                environment=deployment.job_environment(
                    self.endpoint, self.credentials.as_environment(), roots, self.region
                ),
                work=work,
                vcpu_budget=self.vcpus,
                ship_log=lambda group, stream, path, failed: shipper.ship(
                    group, stream, path, now=failed
                ),
                preload=PRELOADED,
                warm_up=WARM_UP,
                cores_variable=contract.WORKERS,
                on_crash=self._crashed,
            )
            self._closers.append(self.scheduler.close)
        thread = threading.Thread(
            target=supervised("server", self.server.serve_forever, self._crashed),
            name="server",
            daemon=True,
        )
        thread.start()
        self._closers.append(self.server.shutdown)
        if folder is not None and not self.read_only:
            folder.announce(
                self.endpoint, os.getpid(), self.credentials.as_environment(), self.region
            )
            self._closers.append(folder.withdraw)

    def _crashed(self, thread: str, error: BaseException) -> None:
        """A thread of the services died of an error nobody expected: say so with the
        traceback, answer health as failing, and stop, rather than freeze while looking well.
        ``serve`` then exits 255 saying why."""
        print_crash(thread, error)
        self._state_lost(
            f"the local services' {thread} thread failed: {type(error).__name__}: {error}"
        )

    def health(self) -> dict[str, Any]:
        """What ``/_pipeline/health`` answers: ``ok``, or ``failing`` and why."""
        if self.fatal is not None:
            return {"status": "failing", "reason": self.fatal}
        return {"status": "ok"}

    def _state_lost(self, message: str) -> None:
        """The run's state cannot be written (a full disk): stop, saying why, rather than run
        on with work that would not be kept. The state folder holds whole records up to
        here, so the run resumes once there is room."""
        if self.fatal is None:
            self.fatal = message
            os.kill(os.getpid(), signal.SIGTERM)  # serve stops the services and says why

    def _steps(self, folder: RunFolder | None) -> tuple[PipelineSteps, list[str]]:
        saved = deployment.saved_steps(folder) if folder is not None else None
        if self.steps is None:
            return saved or (DEFAULT_STEPS, [])
        steps, roots = self.steps
        if saved is not None and saved[0] != steps:
            raise SpecError(
                f"{folder and folder.path} holds a run of other steps "
                f"({describe_steps(saved[0])}); it runs them again: leave out --steps"
            )
        if folder is not None and not self.read_only:
            deployment.save_steps(folder, steps, roots)
        return steps, list(roots)

    def _replay(
        self, folder: RunFolder, moto: WsgiApp, shipper: LogShipper, *, batch_only: bool
    ) -> None:
        batch_journal = folder.batch_journal
        if folder.holds_a_run():
            self.fresh = False
        if not batch_only:
            for environ, body in journaled_requests(folder.services_journal):
                self.fresh = False
                call_app(moto, environ, body)
        replay(self.backend, batch_journal, self.batch.replay)
        for leaf in self.backend.leaves():  # failed attempts' logs, for the failure report
            if leaf.status == "FAILED" and leaf.attempts:
                for number, attempt in enumerate(leaf.attempts, start=1):
                    stream = (attempt.get("container") or {}).get("logStreamName")
                    path = log_path(folder.path, leaf, number)
                    if stream and path.exists():
                        shipper.ship(leaf.definition.log_place()[0], stream, path, now=True)

    def handshake(self) -> dict[str, Any]:
        """What a client needs to use the services, as ``serve --json`` prints it."""
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "credentials": self.credentials.as_environment(),
            "vcpus": self.scheduler.vcpu_budget if self.scheduler is not None else None,
            "stateDir": str(self.state_dir) if self.state_dir else None,
            "fresh": self.fresh,
            "damaged": dict(self.damaged),
        }

    def stop(self) -> None:
        """Stop everything, last started first; the state folder keeps what happened."""
        while self._closers:
            with contextlib.suppress(Exception):
                self._closers.pop()()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


class _RefusalLog:
    """Says in the services' log which requests the door refused: the first ones each, then
    one line per thousand, so a flood of them does not fill the disk."""

    SAID = 20

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def note(self, why: str) -> None:
        with self._lock:
            self.count += 1
            count = self.count
        if count <= self.SAID or count % 1000 == 0:
            print(f"refused request {count}: {why}", file=sys.stderr, flush=True)


def _put_event(events: Any, detail: dict[str, Any]) -> None:
    """A "Batch Job State Change" event to EventBridge, as AWS Batch sends it."""
    with contextlib.suppress(Exception):  # an event not sent is not a job that failed
        events.put_events(
            Entries=[
                {
                    "Source": "aws.batch",
                    "DetailType": "Batch Job State Change",
                    "Detail": json.dumps(detail),
                    "Resources": [detail["jobArn"]],
                    "Time": time.time(),
                }
            ]
        )
