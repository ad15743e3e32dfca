"""The pipeline on this machine: the local services (``python -m pipeline.local serve``)
started for a run, and then exactly the AWS path against their endpoint, with the same boto3
clients, discovery and engine.

Each local run has a folder of its own (``runs/<run-id>`` under the state folder), where the
services keep its state as it changes: its buckets, table and jobs, and every attempt's log.
``status``, ``report``, ``cancel``, ``diagnose`` and ``resume`` start the services again on
that folder (or reach the run's own services while it is still running). What only a local
run has besides (its inputs, ``--inject``, the trigger flags, the summary and the copies of
its outputs) is here, and named in the docs' list of what differs by backend.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pipeline.backends import Mode
from pipeline.backends.aws import AwsSession, batch_config, other_config
from pipeline.backends.local_input import LocalInputs
from pipeline.backends.local_trigger import LocalTrigger, fire_trigger, local_trigger
from pipeline.document import PipelineDocument
from pipeline.errors import EXIT_LOCAL, ConfigurationError, LocalError, RunStateError, SpecError
from pipeline.local.run_folder import (
    PRIVATE_FOLDER,
    RunFolder,
    private_folder,
    run_folders,
    runs_dir,
)
from pipeline.local.services_process import ServicesProcess
from pipeline.runs import engine
from pipeline.runs.progress import SubmittedJob, SubmittedRun
from pipeline.runs.requests import RunConfig, RunInputs, new_run_id
from pipeline.runs.resume import ResumePlan
from pipeline.runs.sizing import Capacity
from pipeline.spec import QUEUE_NAME
from pipeline.steps import DEFAULT_STEPS, PipelineSteps

if TYPE_CHECKING:
    from pipeline.runs.logs import AttemptLog


@dataclass(frozen=True)
class LocalOptions:
    """What only a local run has."""

    input_dir: Path | None = None
    """The run's inputs (default: the generated sample)."""
    output_dir: Path | None = None
    """Where the run's outputs, report and summary are copied when it succeeds."""
    inject: tuple[str, ...] = ()
    """``JOB[:INDEX]=FAULT`` failures for the services to inject."""
    on_upload: str | None = None
    """Fire the upload trigger: write ``<prefix>_READY`` and hand its event to the starter."""
    on_schedule: bool = False
    """Fire the schedule trigger."""
    trigger_max_vcpu_hours: float | None = None
    """The cost guard a trigger applies (and publishes a refusal of)."""
    steps: PipelineSteps | None = None
    """A new run's steps (default: the library's); a saved run keeps its own."""

    @property
    def trigger(self) -> str | None:
        if self.on_upload is not None:
            return "upload"
        return "schedule" if self.on_schedule else None


def trigger_of(options: LocalOptions) -> dict[str, Any]:
    """:func:`local_trigger`'s arguments for a run with ``options``."""
    return {"on_upload": options.on_upload, "seed": f"{options}"}


def endpoint_clients(endpoint: str, region: str, credentials: Mapping[str, str]) -> dict[str, Any]:
    """The clients of the AWS path, pointed at the local services and signing with their
    credentials."""
    import boto3

    session = boto3.Session(
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        region_name=region,
    )
    clients: dict[str, Any] = {
        "batch": session.client("batch", endpoint_url=endpoint, config=batch_config())
    }
    for name in ("logs", "s3", "sqs", "sns", "dynamodb"):
        clients[name] = session.client(name, endpoint_url=endpoint, config=other_config())
    return clients


@dataclass
class LocalSession(AwsSession):
    """A session on the local services: the AWS session, and what only a local run has."""

    clients: Mapping[str, Any] = field(default_factory=dict)
    services: ServicesProcess | None = None
    run_dir: Path | None = None
    options: LocalOptions = field(default_factory=LocalOptions)
    on_progress: Callable[[str], None] = lambda _text: None
    trigger: LocalTrigger | None = None
    """A trigger's event, made once by the backend: its run id names the run's folder."""

    def plan(self, inputs: RunInputs, *, max_vcpu_hours: float | None) -> RunConfig:
        # A trigger applies the cost guard itself, and publishes a refusal, as on AWS.
        guard = None if self.options.trigger else max_vcpu_hours
        return engine.plan_run(self.document, inputs, max_vcpu_hours=guard)

    def start(
        self,
        config: RunConfig,
        *,
        plan: ResumePlan | None = None,
        on_submitted: Callable[[SubmittedJob], None] | None = None,
        run_id_given: bool = False,
    ) -> SubmittedRun:
        if self.options.trigger is None:
            return super().start(
                config, plan=plan, on_submitted=on_submitted, run_id_given=run_id_given
            )
        return fire_trigger(
            self,
            self.trigger or local_trigger(self.document, **trigger_of(self.options)),
            clients=self.clients,
            max_vcpu_hours=self.options.trigger_max_vcpu_hours,
            on_progress=self.on_progress,
            on_submitted=on_submitted,
        )

    revived: bool = False
    """The session's services started on a run whose services had stopped, and go on with
    its unfinished jobs."""

    def interrupted(self, run_id: str) -> bool:
        """A saved run no services run now: its unfinished jobs wait for a resume."""
        folder = RunFolder.of(run_id)
        return folder.holds_a_run() and not folder.in_use()

    def outputs_lost(self, run_id: str) -> bool:
        """The run's jobs are saved but its buckets and table are not (``services.journal``
        is missing or empty): nothing they wrote can be kept."""
        folder = RunFolder.of(run_id)
        journal = folder.services_journal
        return folder.holds_a_run() and (not journal.is_file() or journal.stat().st_size == 0)

    def continues_interrupted(self, run_id: str) -> bool:
        return self.revived and self.run_dir is not None and self.run_dir.name == run_id

    def read_attempt(
        self, attempt: AttemptLog, *, cursor: Any = None, tail: int | None = None
    ) -> tuple[list[str], Any]:
        """An attempt's log from the run's folder, where the services write it as it runs
        (the cursor is a byte offset; a last line not yet ended is left for the next read)."""
        if self.run_dir is None:
            return super().read_attempt(attempt, cursor=cursor, tail=tail)
        return read_log_file(attempt_log_file(self.run_dir, attempt), cursor=cursor, tail=tail)

    @property
    def endpoint(self) -> str:
        return self.services.endpoint if self.services is not None else ""

    @property
    def not_seeded(self) -> Mapping[str, str]:
        """The input files the run left out, and why: as its services said when they seeded
        it, or as its folder keeps them."""
        ready = self.services.ready if self.services is not None else {}
        if ready.get("notSeeded"):
            return dict(ready["notSeeded"])
        return RunFolder(self.run_dir).not_seeded() if self.run_dir is not None else {}

    def notes(self, run_id: str) -> list[str]:
        """What a look at a saved run adds: the input files it left out."""
        left_out = RunFolder.of(run_id).not_seeded()
        return [f"not seeded: {name}: {why}" for name, why in left_out.items()]

    @property
    def output_dir(self) -> Path | None:
        return self.options.output_dir

    def finish(
        self, run: SubmittedRun, outcome: engine.RunOutcome
    ) -> tuple[engine.RunOutcome, list[str]]:
        """What only a local run has: on success its summary, the SNS message and copies of
        its outputs; on failure the notifications the failure rule sent. Every path printed
        is in the run's folder or ``--output``, which outlive the services."""
        from pipeline.backends.local_outputs import finish_local

        return finish_local(self, run, outcome)


class LocalBackend(LocalInputs):
    """Runs on this machine, each in its own folder, through the local services."""

    always_watches = True
    unreachable_exit_code = EXIT_LOCAL
    """The endpoint is this machine's services: if it cannot be reached, they stopped."""
    default_poll_interval = 0.2
    where = "--local"

    def __init__(
        self,
        options: LocalOptions | None = None,
        *,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options or LocalOptions()
        self.on_progress = on_progress or (lambda _text: None)
        self._trigger: LocalTrigger | None = None

    @property
    def steps(self) -> PipelineSteps:
        return self.options.steps or DEFAULT_STEPS

    def dry_run_document(self) -> tuple[PipelineDocument, str | None]:
        from pipeline.local.deployment import local_document

        return local_document(steps=self.steps), None

    def dry_run_capacity(self, document: PipelineDocument) -> Capacity:
        """This machine's vCPU budget, which the local services place jobs in."""
        from pipeline.local.batch.processes import available_cores

        cores = available_cores()
        return Capacity(f"this machine: {cores} vCPUs", cores=cores)

    def check_run(self, inputs: RunInputs, *, max_vcpu_hours: float | None = None) -> None:
        """Before the services start: the cost guard (on the deployment the services will
        have), ``--output`` can be written, and each ``--inject`` names a job and a child
        that exists in this run."""
        from pipeline.local.batch.faults import FaultError, InjectedFault
        from pipeline.local.deployment import LOCAL_ARRAY_SIZE, local_document

        document = local_document(steps=self.steps)
        if self.options.trigger is None and inputs.array_size is not None:
            engine.plan_run(document, inputs, max_vcpu_hours=max_vcpu_hours)
        elif self.options.trigger is None and max_vcpu_hours is not None:
            # Sized to its input: counted from the files, as the services will seed them.
            counted = self.dry_run_listing(document, inputs).objects
            engine.plan_run(
                document, replace(inputs, input_objects=counted), max_vcpu_hours=max_vcpu_hours
            )
        for note in local_step_notes(self.steps):
            self.on_progress(note)
        if self.options.output_dir is not None:
            writable_folder(self.options.output_dir, "--output")
        spec = local_document(inputs.array_size or LOCAL_ARRAY_SIZE, self.steps).spec
        keys = [j.key for j in spec]
        shape = (
            f"must look like JobB:3=exit:2 (a job of {', '.join(keys)}, an optional child "
            "index, and exit:CODE, host-terminated, timeout or out-of-memory)"
        )
        for text in self.options.inject:
            try:
                injected = InjectedFault.parse(text)
            except FaultError as error:
                if error.part == "target":
                    raise SpecError(f"--inject {text!r} {shape}") from None
                raise SpecError(f"--inject {text!r}: {error}") from None
            if injected.job not in keys:
                raise SpecError(f"--inject {text!r} {shape}")
            size = spec.job(injected.job).array_size
            if injected.index is not None and size is None:
                raise SpecError(
                    f"--inject {text!r}: {injected.job} is not an array job; drop "
                    f"':{injected.index}'"
                )
            if injected.index is not None and size is not None and injected.index >= size:
                raise SpecError(
                    f"--inject {text!r}: {injected.job} has children 0 to {size - 1} in this "
                    "run; pick one of them"
                )

    def new_run_id(self, inputs: RunInputs) -> str:
        """The run id a new run will have: a trigger's (made from its event) or the user's."""
        if self.options.trigger is not None:
            from pipeline.local.deployment import local_document

            document = local_document(steps=self.steps)
            self._trigger = self._trigger or local_trigger(document, **trigger_of(self.options))
            return str(self._trigger.trigger.run_id)
        return inputs.run_id or new_run_id()

    @contextmanager
    def session(self, *, run_id: str | None = None, mode: Mode = "read") -> Iterator[LocalSession]:
        """The services for a run: a new run's (``mode="new"``), a saved run's to resume
        (``"resume"``) or to look at (``"read"``: read only, or the run's own services while
        it runs). Without a run id, every saved run's jobs, to list them."""
        require_local_services()
        if run_id is None:
            folders = [f for f in run_folders() if f.holds_a_run()]
            history = [f"--history={folder.path}" for folder in folders]
            with self._services(["--read-only", "--with-pipeline", *history], None) as session:
                assert session.services is not None
                for name, why in (session.services.ready.get("damaged") or {}).items():
                    self.on_progress(f"note: run {name} is left out: {why}")
                yield session
            return
        folder = RunFolder.of(run_id)
        if mode == "new":
            yield from self._new_run(folder)
            return
        if folder.lost_its_jobs():
            raise LocalError(
                f"the saved run {run_id!r} is damaged: its jobs' journal "
                f"({folder.batch_journal}) is missing; remove the run with "
                f"`prune {run_id} --local`"
            )
        if not folder.holds_a_run():
            raise RunStateError(
                f"no local run {run_id!r} in {folder.path.parent}; `status --local` lists them"
            )
        live = folder.live_services()
        if live is not None:
            if mode == "resume":
                raise RunStateError(
                    f"run {run_id} is still running in another command; wait for it, or stop "
                    f"it with `cancel {run_id} --local`"
                )
            endpoint, credentials = live
            yield self._open(endpoint, credentials, folder, None)
            return
        arguments = ["--with-pipeline", f"--state-dir={folder.path}"]
        if mode == "read":
            arguments.append("--read-only")
        if mode == "stop":  # the run is being stopped: what it had queued must not start
            arguments.append("--hold-jobs")
        log = folder.services_log if mode != "read" else None
        with self._services(arguments, folder, log) as session:
            session.revived = mode == "resume"
            yield session

    def _new_run(self, folder: RunFolder) -> Iterator[LocalSession]:
        private_folder(folder.path.parent)
        if folder.path.is_dir() and folder.abandoned():
            _remove_tree(folder.path)  # killed while it started: the id is free again
        try:
            folder.path.mkdir(mode=PRIVATE_FOLDER)
        except FileExistsError:
            run_id = folder.name
            raise RunStateError(
                f"a local run {run_id!r} exists in {folder.path.parent}; pick another --run-id, "
                f"or continue it with `resume {run_id} --local`"
            ) from None
        arguments = ["--with-pipeline", f"--state-dir={folder.path}"]
        if self.options.steps is not None:
            arguments.append(f"--steps={steps_argument(self.options.steps)}")
        if self.options.input_dir is not None:
            arguments.append(f"--input={self.options.input_dir}")
        arguments += [f"--inject={fault}" for fault in self.options.inject]
        try:
            with self._services(arguments, folder, folder.services_log) as session:
                assert session.services is not None
                ready = session.services.ready
                seeded = ready.get("seeded") or {}
                self.on_progress(
                    f"local run {folder.name}: services at {session.services.endpoint}; "
                    f"BucketA seeded with {seeded.get('objects', 0):,} objects, "
                    f"{seeded.get('bytes', 0):,} bytes; {ready.get('vcpus')} vCPUs"
                )
                for name, reason in (ready.get("notSeeded") or {}).items():
                    self.on_progress(f"  not seeded: {name}: {reason}")
                yield session
        except BaseException:
            if not folder.holds_a_run():
                _remove_tree(folder.path)  # nothing was submitted: the id is free again
            raise

    @contextmanager
    def _services(
        self, arguments: list[str], folder: RunFolder | None, log: Path | None = None
    ) -> Iterator[LocalSession]:
        from botocore.exceptions import EndpointConnectionError

        from pipeline.local.deployment import REGION

        # A local run's region is the local deployment's, whatever this shell's is.
        services = ServicesProcess([*arguments, f"--region={REGION}"], log)
        try:
            yield self._open(services.endpoint, services.credentials, folder, services)
        except EndpointConnectionError as error:
            # A request found nobody at the port: the services are ending (or have ended);
            # say why, as the watcher would a moment later.
            if not services.ended(within=5):
                raise
            raise services.stopped_error() from error
        finally:
            services.close()

    def _open(
        self,
        endpoint: str,
        credentials: Mapping[str, str],
        folder: RunFolder | None,
        services: ServicesProcess | None,
    ) -> LocalSession:
        from pipeline.local.deployment import REGION
        from pipeline.runs.discovery import document_from_job_definitions

        clients = endpoint_clients(endpoint, REGION, credentials)
        document = document_from_job_definitions(clients["batch"], queue=QUEUE_NAME)
        document = replace(document, source="the local services")
        return LocalSession(
            clients["batch"],
            document,
            clients["logs"],
            document.log_group,
            settle=True,
            clients=clients,
            services=services,
            run_dir=folder.path if folder is not None else None,
            options=self.options,
            on_progress=self.on_progress,
            trigger=self._trigger,
        )


@dataclass(frozen=True)
class _AttemptOf:
    """What the engine's log layout reads of a job: its name, index and ID."""

    name: str
    index: int | None
    job_id: str


def attempt_log_file(run_dir: Path, attempt: AttemptLog) -> Path:
    """Where the local services write ``attempt``'s log in the run's folder (the engine's
    layout, :func:`pipeline.local.batch.scheduler.log_path`, under ``RunFolder.logs``)."""
    from pipeline.local.batch.job import Job
    from pipeline.local.batch.scheduler import log_path

    job = _AttemptOf(attempt.job, attempt.index, attempt.job_id)
    # log_path reads only these three fields of the engine's Job.
    return log_path(RunFolder(run_dir).path, cast("Job", job), attempt.attempt)


TAIL_BYTES = 64 * 1024


def read_log_file(
    path: Path, *, cursor: Any = None, tail: int | None = None
) -> tuple[list[str], Any]:
    """Lines of a log file after byte ``cursor`` (None: the start), only whole ones; or its
    last ``tail`` lines. Returns them and the offset to read on from."""
    offset = int(cursor or 0)
    try:
        with path.open("rb") as reader:
            if tail is not None:
                reader.seek(max(0, path.stat().st_size - TAIL_BYTES))
                text = reader.read().decode(errors="replace")
                return text.splitlines()[-tail:], cursor
            reader.seek(offset)
            data = reader.read()
    except FileNotFoundError:
        return [], cursor
    whole = data[: data.rfind(b"\n") + 1]
    return whole.decode(errors="replace").splitlines(), offset + len(whole)


def local_step_notes(steps: PipelineSteps) -> list[str]:
    """What a run on this machine does not show of the steps once deployed, one line each:
    a module their code imports that their image would lack, and a ``memory_mib`` this
    system cannot hold a step to."""
    from pipeline.jobs.step_calls import memory_limit_method, not_enforced_note

    notes = steps.import_notes()
    if memory_limit_method() is None:
        declared = [s.memory_mib for s in (steps.cpu, steps.memory, steps.aggregate) if s]
        notes += [not_enforced_note(mib) for mib in sorted({m for m in declared if m})]
    return notes


def steps_argument(steps: PipelineSteps) -> str:
    """``serve --steps``'s value for steps already loaded here: their JSON, with the folders
    their modules were imported from (the services import nothing to learn them)."""
    from pipeline.local.deployment import saved_steps_json

    return json.dumps(saved_steps_json(steps), separators=(",", ":"))


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def local_services_installed() -> bool:
    from pipeline.local.moto_app import installed

    return installed()


def require_local_services() -> None:
    """The local services need moto and its server's Flask, from the ``[local]`` extra."""
    if not local_services_installed():
        raise ConfigurationError(
            "--local needs the embedded AWS services, which are not installed: "
            "pip install 'array-job-pipeline[local]'"
        )


def prune_runs(run_ids: Sequence[str], *, older_than_days: float | None) -> list[str]:
    """Remove the named saved local runs and those last changed more than
    ``older_than_days`` ago. Every named run is checked before any is removed: an unknown
    one, or one whose services are running, is refused and nothing is removed. A run found
    running among the old ones is left alone. Returns the runs removed."""
    if not run_ids and older_than_days is None:
        raise SpecError("name the runs to remove, or give --older-than DAYS")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    folders = {folder.name: folder for folder in run_folders()}
    unknown = [r for r in run_ids if r not in folders]
    if unknown:
        raise RunStateError(f"no local run {unknown[0]!r} in {runs_dir()}; nothing was removed")
    running = [r for r in run_ids if folders[r].in_use()]
    if running:
        raise RunStateError(
            f"run {running[0]} is running; stop it before removing it (nothing was removed)"
        )
    chosen = [folders[r] for r in run_ids]
    for folder in folders.values():
        journal = folder.batch_journal
        changed = journal.stat().st_mtime if journal.exists() else folder.path.stat().st_mtime
        old = cutoff is not None and changed < cutoff
        if old and folder not in chosen and not folder.in_use():
            chosen.append(folder)
    for folder in chosen:
        _remove_tree(folder.path)
    return sorted(folder.name for folder in chosen)


def writable_folder(folder: Path, flag: str) -> Path:
    """``folder``, checked before the run: one that exists or can be made, and writable."""
    import tempfile

    if folder.exists() and not folder.is_dir():
        raise SpecError(f"{flag} {str(folder)!r} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise SpecError(
            f"{flag} {str(folder)!r} cannot be written ({error.strerror}); pick a folder "
            "you can write to"
        ) from None
    return folder
