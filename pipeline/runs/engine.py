"""The run engine: every command a user runs, as one code path over a backend.

Submitting, the dry run, pre-flight, the cost guard, watching, the failure report, status,
cancel and resume are written once here. A backend differs only in what it hands the engine:

- a :class:`pipeline.document.PipelineDocument` (what is deployed: the stack's document,
  the registered job definitions, or the local backend's own);
- a :class:`Session`: a Batch client with boto3's shapes (:class:`pipeline.runs.api.BatchApi`),
  a log reader, and whether a failure is reported at once or once every job has ended.

The engine imports neither the CLI, the constructs nor the local backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.contract import RETRY_REJECTED, source_bucket_name
from pipeline.document import PipelineDocument
from pipeline.errors import RunStateError, SpecError
from pipeline.runs.api import BatchApi
from pipeline.runs.autosize import InputListing, SizeChoice, input_location, list_input
from pipeline.runs.chain import stop, submit_pipeline
from pipeline.runs.failures import Failure, FailureGroup, failure_report, first_failure
from pipeline.runs.logs import AttemptLog, BusyChild, busy_children
from pipeline.runs.prediction import (
    PerObject,
    Prediction,
    PredictionError,
    on_default_deployment,
    predict,
)
from pipeline.runs.preflight import JobCost, check_cost, check_fit, worst_case
from pipeline.runs.progress import (
    JobProgress,
    RunSummary,
    SubmittedJob,
    SubmittedRun,
    find_jobs_by_name,
    find_run,
    find_run_history,
)
from pipeline.runs.progress import list_runs as progress_list_runs
from pipeline.runs.requests import RunConfig, RunInputs, dry_run_requests, resolve_run
from pipeline.runs.resume import ResumePlan, plan_resume
from pipeline.runs.retry import plan_rejected, retry_token
from pipeline.runs.sizing import Capacity, JobSizing, sizing
from pipeline.runs.watch import watch
from pipeline.spec import OBJECTS_PER_CHILD, RUN_TAG, SOURCE_BUCKET, PipelineSpec
from pipeline.steps import describe_steps

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "DryRun",
    "Resume",
    "RunInputs",
    "RunOutcome",
    "Session",
    "busy",
    "cancel",
    "dry_run",
    "expect",
    "follow",
    "list_runs",
    "plan_resume_run",
    "plan_run",
    "preflight",
    "sized_to_input",
    "start",
    "status",
    "submit",
    "submitted",
]


class Session(Protocol):
    """An open backend."""

    @property
    def batch(self) -> BatchApi: ...

    @property
    def settle(self) -> bool:
        """Report a failure once every job has ended (a local run, which then stops its
        services) rather than at once (AWS, where the rest goes on without us)."""
        ...

    def read_log(self, job_id: str, log_stream: str | None) -> list[str]: ...

    def read_attempt(
        self, attempt: AttemptLog, *, cursor: Any = None, tail: int | None = None
    ) -> tuple[list[str], Any]:
        """An attempt's log (see :class:`pipeline.runs.logs.AttemptReader`)."""
        ...

    def input_lister(self) -> S3Client | None:
        """The S3 client that lists BucketA to size a new run to its input (None: a run
        given no size gets the deployed one)."""
        ...


@dataclass(frozen=True)
class DryRun:
    requests: list[Any]
    """The five SubmitJob requests, with the workflow's ``JobA_job_ID`` placeholders."""
    costs: list[JobCost]
    capacity: Capacity
    sizing: list[JobSizing]
    steps: str
    """The steps the run runs, in one phrase."""
    size: SizeChoice | None = None
    """The array size chosen, and why."""
    prediction: Prediction | None = None
    """The expected time and cost (when a time per object was given or measured)."""
    no_prediction: str | None = None
    """Why there is no prediction though one was asked for."""


@dataclass(frozen=True)
class RunOutcome:
    """A run as the engine last saw it; :meth:`as_json` is the ``--json`` shape of ``run``,
    ``status`` and ``resume`` on every backend (documented in the README)."""

    run_id: str
    status: str
    """SUBMITTED (not watched), RUNNING, SUCCEEDED or FAILED."""
    jobs: tuple[SubmittedJob, ...] = ()
    progress: tuple[JobProgress, ...] = ()
    failure: Failure | None = None
    failures: tuple[FailureGroup, ...] = ()
    local: Mapping[str, Any] | None = None
    """What only a local run has (summary, notifications, attempts, where files are); None on
    AWS."""
    busy: tuple[BusyChild, ...] = ()
    """Children of a running run that have been on one object a minute or more."""

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def as_json(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "status": self.status,
            "jobs": [{"job": j.key, "jobId": j.job_id, "reused": j.reused} for j in self.jobs],
            "progress": [progress_json(p) for p in self.progress],
            "failure": self.failure.as_json() if self.failure else None,
            "failures": [g.as_json() for g in self.failures],
            "local": dict(self.local) if self.local is not None else None,
            "busy": [b.as_json() for b in self.busy],
        }


def progress_json(p: JobProgress) -> dict[str, Any]:
    return {
        "job": p.key,
        "jobId": p.job_id,
        "status": p.status,
        "statusReason": p.status_reason,
        "arraySize": p.array_size,
        "children": dict(p.children),
    }


# --- before anything is submitted -------------------------------------------------------------


def plan_run(
    document: PipelineDocument,
    inputs: RunInputs,
    *,
    max_vcpu_hours: float | None = None,
    previous_size: int | None = None,
    previous_parameters: Mapping[str, str] | None = None,
    previous_environment: Mapping[str, str] | None = None,
) -> RunConfig:
    """The run's configuration from the deployed pipeline and the user's inputs, refused by
    the cost guard if its worst case exceeds ``max_vcpu_hours``. No backend call."""
    config = resolve_run(
        document,
        inputs,
        previous_size=previous_size,
        previous_parameters=previous_parameters,
        previous_environment=previous_environment,
    )
    check_cost(config.spec, max_vcpu_hours)
    return config


def dry_run(
    document: PipelineDocument,
    config: RunConfig,
    capacity: Capacity | None = None,
    *,
    per_object: PerObject | None = None,
    objects: int | None = None,
) -> DryRun:
    """The run's requests, its worst case, and how its array jobs fit ``capacity`` (the
    queue's compute environments, or this machine; none given: no sizing); with
    ``per_object`` (seconds per object, given or measured) and the input's ``objects``, the
    expected time and cost on ``capacity`` (see :mod:`pipeline.runs.prediction`)."""
    capacity = capacity or Capacity("no queue given")
    prediction, why_not = None, None
    if per_object is not None:
        per_child = config.size.per_child if config.size is not None else None
        prediction, why_not = expect(
            config.spec, capacity, objects, per_object, per_child=per_child
        )
    return DryRun(
        dry_run_requests(document, config),
        worst_case(config.spec),
        capacity,
        sizing(config.spec, capacity),
        describe_steps(config.spec.steps),
        config.size,
        prediction,
        why_not,
    )


def expect(
    spec: PipelineSpec,
    capacity: Capacity,
    objects: int | None,
    per_object: PerObject,
    *,
    per_child: int | None = None,
) -> tuple[Prediction | None, str | None]:
    """(the prediction, None), or (None, why there is none). A prediction is of a run on
    AWS: on this machine's capacity (``--local``), it is of the same input on a pipeline
    deployed with the construct's defaults, sized to it (``per_child``: its target)."""
    if objects is None:
        return None, (
            "the input was not listed, so its objects are not known: give --stack (the "
            "deployed BucketA is listed) or --local (the run's files are counted)"
        )
    try:
        if capacity.cores is not None:
            prediction = on_default_deployment(
                spec,
                objects=objects,
                per_object=per_object,
                per_child=per_child or OBJECTS_PER_CHILD,
            )
            return prediction, None
        return predict(spec, capacity, objects=objects, per_object=per_object), None
    except PredictionError as error:
        return None, str(error)


def sized_to_input(
    s3: S3Client | None, document: PipelineDocument, inputs: RunInputs, *, listed: bool = False
) -> tuple[RunInputs, InputListing | None]:
    """``inputs`` with the objects of the run's input (``input_objects``), listed as JobA
    will list them, when the run is to be sized to them (no ``array_size`` given) or
    ``listed`` asks for all of them (a prediction); unchanged when there is no S3 client or
    the document does not name BucketA. One ListObjectsV2 call per 1,000 keys; to size a
    run, the listing stops once the objects are more than the deployed size can take."""
    if s3 is None or (inputs.array_size is not None and not listed):
        return inputs, None
    location = input_location(
        document, input_prefix=inputs.input_prefix, max_object_bytes=inputs.max_object_bytes
    )
    if location is None:
        return inputs, None
    per_child = inputs.objects_per_child or OBJECTS_PER_CHILD
    stop_at = None if listed else (document.spec.array_size + 1) * per_child
    listing = list_input(s3, location, stop_at=stop_at)
    return replace(inputs, input_objects=listing.objects), listing


# --- submit and follow ---------------------------------------------------------------------------


def preflight(
    session: Session, document: PipelineDocument, config: RunConfig, *, run_id_given: bool = False
) -> None:
    """Before the first SubmitJob: JobE's SourceBucket is where JobD writes the run's report
    (the deployed output bucket), a new run whose id the user chose has no jobs yet (a
    generated id is unique, so it costs no call), and every job fits an
    instance type of the queue's compute environments and their maxvCpus (else it would wait
    in RUNNABLE until the queue's time limit cancels it)."""
    source = config.parameters.get(SOURCE_BUCKET)
    if source and document.output_bucket and source_bucket_name(source) != document.output_bucket:
        raise SpecError(
            f"source_bucket {source} is not this pipeline's output bucket, where JobD writes "
            f"the report JobE reads (and the only bucket JobE's role may read): use "
            f"s3://{document.output_bucket}, or leave it out",
            field="source_bucket",
        )
    if run_id_given and find_jobs_by_name(
        session.batch, document.queue, document.spec.jobs[0].key, (RUN_TAG, config.run_id)
    ):
        raise RunStateError(
            f"run {config.run_id} already has jobs in {document.queue}; pick another run_id, "
            f"or continue that run with `resume {config.run_id}`"
        )
    check_fit(config.spec, session.batch, document.queue)


def start(
    session: Session,
    document: PipelineDocument,
    config: RunConfig,
    *,
    plan: ResumePlan | None = None,
    on_submitted: Callable[[SubmittedJob], None] | None = None,
    run_id_given: bool = False,
) -> SubmittedRun:
    """Pre-flight, then the chain (see :func:`submit`). ``run_id_given``: the run id was
    chosen by the user, so pre-flight checks that no run has it yet."""
    preflight(session, document, config, run_id_given=run_id_given and plan is None)
    return submit(session, document, config, plan=plan, on_submitted=on_submitted)


def submit(
    session: Session,
    document: PipelineDocument,
    config: RunConfig,
    *,
    plan: ResumePlan | None = None,
    on_submitted: Callable[[SubmittedJob], None] | None = None,
) -> SubmittedRun:
    """The chain, each job ID feeding the next ``dependsOn``; a resume ``plan`` keeps the
    jobs that succeeded and re-runs failed children only."""
    return submit_pipeline(
        session.batch,
        document,
        config,
        reuse=plan.keep if plan else None,
        reruns=plan.reruns if plan else None,
        on_submitted=on_submitted,
    )


def submitted(run: SubmittedRun) -> RunOutcome:
    return RunOutcome(run.run_id, "SUBMITTED", run.jobs)


def follow(
    session: Session,
    run: SubmittedRun,
    *,
    interval: float,
    on_poll: Callable[[list[JobProgress]], None] | None = None,
) -> RunOutcome:
    """Watch until the run succeeds or fails; a failed run comes with its failure report."""
    result = watch(session.batch, run, interval=interval, on_poll=on_poll, settle=session.settle)
    outcome = RunOutcome(
        run.run_id,
        "SUCCEEDED" if result.succeeded else "FAILED",
        run.jobs,
        tuple(result.progress),
        result.failure,
    )
    if result.succeeded:
        return outcome
    groups = failure_report(session.batch, result.progress, read_log=session.read_log)
    return replace(outcome, failures=tuple(groups))


# --- an existing run -------------------------------------------------------------------------


def status(session: Session, document: PipelineDocument, run_id: str) -> RunOutcome:
    """The run's newest job of each key, its first failure and the failure report."""
    run = find_run(session.batch, document.queue, run_id, document.spec)
    progress = [run[j.key] for j in document.spec if j.key in run]
    failure = first_failure(session.batch, progress)
    groups = failure_report(session.batch, progress, read_log=session.read_log)
    overall = _overall(progress, len(document.spec.jobs))
    return RunOutcome(
        run_id,
        overall,
        tuple(SubmittedJob(p.key, p.job_id) for p in progress),
        tuple(progress),
        failure,
        tuple(groups),
        busy=tuple(busy(session, document, progress)) if overall == "RUNNING" else (),
    )


def busy(
    session: Session, document: PipelineDocument, progress: Sequence[JobProgress]
) -> list[BusyChild]:
    """Children of the jobs that run steps that have been on one object a minute or more,
    and which object (see :func:`pipeline.runs.logs.busy_children`)."""
    keys = [job.key for job in document.spec if job.step in ("cpu", "memory")]
    return busy_children(session.batch, progress, session.read_attempt, keys=keys)


def _overall(progress: Sequence[JobProgress], jobs: int) -> str:
    if any(p.has_failed for p in progress):
        return "FAILED"
    if len(progress) == jobs and all(p.status == "SUCCEEDED" for p in progress):
        return "SUCCEEDED"
    return "RUNNING"


def unfinished(session: Session, document: PipelineDocument, run_id: str) -> SubmittedRun | None:
    """The run's newest jobs when one of them has not ended, else None."""
    run = find_run(session.batch, document.queue, run_id, document.spec)
    progress = [run[j.key] for j in document.spec if j.key in run]
    if not any(p.is_active for p in progress):
        return None
    return SubmittedRun(run_id, tuple(SubmittedJob(p.key, p.job_id) for p in progress))


def list_runs(
    session: Session, document: PipelineDocument, *, limit: int | None = None
) -> list[RunSummary]:
    """The runs in the pipeline's queue, newest first, whoever started them."""
    return progress_list_runs(session.batch, document.queue, document.spec, limit=limit)


def cancel(session: Session, document: PipelineDocument, run_id: str) -> list[tuple[str, str]]:
    """Cancel the run's queued jobs and terminate its started ones."""
    run = find_run(session.batch, document.queue, run_id, document.spec)
    return stop(session.batch, list(run.values()), f"cancelled by user: run {run_id}")


@dataclass(frozen=True)
class Resume:
    plan: ResumePlan
    config: RunConfig


def plan_resume_run(
    session: Session,
    document: PipelineDocument,
    run_id: str,
    inputs: RunInputs,
    *,
    failed_only: bool,
    max_vcpu_hours: float | None = None,
    from_start: bool = False,
    rejected: bool = False,
) -> Resume:
    """What resuming ``run_id`` keeps and re-submits, with the run's own size and parameters
    unless the user gives others, checked by the cost guard; with ``from_start`` (what its
    jobs wrote is gone), every job is submitted again. ``rejected``: the current steps run
    again on the run's rejected objects only (see :mod:`pipeline.runs.retry`)."""
    if inputs.run_id not in (None, run_id):
        raise RunStateError("resume keeps the run's id; give no other run id")
    # Every submission of the run: a --failed-only resume's JobB re-runs a few children only,
    # and the run's size and children are those of the JobB before it.
    history = find_run_history(session.batch, document.queue, run_id, document.spec)
    run = {key: jobs[-1] for key, jobs in history.items()}
    if rejected:
        plan = plan_rejected(run_id, run, document.spec, history=history)
    else:
        plan = plan_resume(
            session.batch,
            run,
            document.spec,
            failed_only=failed_only,
            from_start=from_start,
            history=history,
        )
    config = plan_run(
        document,
        replace(inputs, run_id=run_id),
        max_vcpu_hours=max_vcpu_hours,
        previous_size=plan.array_size,
        previous_parameters=plan.parameters,
        previous_environment=plan.environment,
    )
    if rejected:
        retry = {RETRY_REJECTED: retry_token()}
        config = replace(config, environment={**config.environment, **retry})
    return Resume(plan, config)
