"""Where a pipeline runs, as the command line sees it: one shape, two backends.

- :mod:`.aws`: a pipeline deployed to AWS (``--stack``, or ``--queue`` and the definitions);
- :mod:`.local`: the pipeline on this machine, through the local services' endpoint and then
  the AWS backend's own session.

A command asks its backend for a session and hands it to the run engine; it never asks which
backend it has. :class:`Backend` and :class:`RunSession` are the shape both have.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from pipeline.document import PipelineDocument
    from pipeline.runs.api import BatchApi
    from pipeline.runs.autosize import InputListing
    from pipeline.runs.engine import RunOutcome
    from pipeline.runs.logs import AttemptLog
    from pipeline.runs.progress import SubmittedJob, SubmittedRun
    from pipeline.runs.requests import RunConfig, RunInputs
    from pipeline.runs.resume import ResumePlan
    from pipeline.runs.sizing import Capacity

Mode = Literal["new", "resume", "read", "stop"]
"""What a session is for: a new run, resuming a run, looking at runs, or stopping one."""


class RunSession(Protocol):
    """An open backend: the run engine's session (a Batch client, a log reader, when
    failures are reported), the deployed pipeline, and the steps of a run that differ."""

    @property
    def batch(self) -> BatchApi: ...

    @property
    def settle(self) -> bool: ...

    @property
    def document(self) -> PipelineDocument: ...

    def read_log(self, job_id: str, log_stream: str | None) -> list[str]: ...

    def input_lister(self) -> S3Client | None:
        """The S3 client that lists BucketA to size a new run to its input (None: none)."""
        ...

    def interrupted(self, run_id: str) -> bool:
        """Whether ``run_id`` was stopped with what ran it (a local run's services), so its
        jobs that have not ended wait for a resume rather than run."""
        ...

    def notes(self, run_id: str) -> list[str]:
        """Lines a look at ``run_id`` adds to what Batch says (a local run's left-out
        inputs)."""
        ...

    def outputs_lost(self, run_id: str) -> bool:
        """Whether what ``run_id``'s jobs wrote is gone while its jobs are kept (a local run
        whose saved buckets and table were lost), so a resume must start it again."""
        ...

    def continues_interrupted(self, run_id: str) -> bool:
        """Whether this session, opened to resume ``run_id``, goes on with its unfinished jobs
        where they stopped (so a resume follows them rather than submitting again)."""
        ...

    def read_attempt(
        self, attempt: AttemptLog, *, cursor: Any = None, tail: int | None = None
    ) -> tuple[list[str], Any]:
        """An attempt's log: lines after ``cursor`` (or its last ``tail``), and the cursor
        to read on from (see :class:`pipeline.runs.logs.AttemptReader`)."""
        ...

    def plan(self, inputs: RunInputs, *, max_vcpu_hours: float | None) -> RunConfig:
        """The run's configuration from the deployed pipeline, cost-guarded."""
        ...

    def start(
        self,
        config: RunConfig,
        *,
        plan: ResumePlan | None = None,
        on_submitted: Callable[[SubmittedJob], None] | None = None,
        run_id_given: bool = False,
    ) -> SubmittedRun:
        """Pre-flight and the chain (``run_id_given``: check that no run has the id yet)."""
        ...

    def finish(self, run: SubmittedRun, outcome: RunOutcome) -> tuple[RunOutcome, list[str]]:
        """What the end of a watched run adds, with lines to print."""
        ...


class Backend(Protocol):
    """A place pipelines run."""

    @property
    def where(self) -> str:
        """How the command line names this place, in the hints it prints (``--stack X``)."""
        ...

    @property
    def always_watches(self) -> bool: ...

    @property
    def unreachable_exit_code(self) -> int:
        """The exit code when its endpoint cannot be reached."""
        ...

    @property
    def default_poll_interval(self) -> float: ...

    def dry_run_document(self) -> tuple[PipelineDocument, str | None]: ...

    def dry_run_capacity(self, document: PipelineDocument) -> Capacity:
        """Where the dry run's children would run, for its sizing."""
        ...

    def dry_run_listing(self, document: PipelineDocument, inputs: RunInputs) -> InputListing | None:
        """The dry run's input, counted as JobA will count it (None: it cannot be counted
        without starting anything, so the run is not sized to it)."""
        ...

    def new_run_id(self, inputs: RunInputs) -> str: ...

    def check_run(self, inputs: RunInputs, *, max_vcpu_hours: float | None = None) -> None:
        """Refuse, before anything starts, what this backend cannot run."""
        ...

    def session(
        self, *, run_id: str | None = None, mode: Mode = "read"
    ) -> AbstractContextManager[RunSession]: ...
