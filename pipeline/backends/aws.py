"""The pipeline on AWS: boto3 clients and their settings, the deployed pipeline's document,
and the session the run engine works through. The command line and the starter function use
it; so does ``--local``, whose services are an AWS endpoint on this machine."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from pipeline.document import PipelineDocument
from pipeline.errors import EXIT_SERVICE, ConfigurationError

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_s3 import S3Client

    from pipeline.backends import Mode
    from pipeline.runs.api import BatchApi
    from pipeline.runs.autosize import InputListing
    from pipeline.runs.engine import RunOutcome
    from pipeline.runs.logs import AttemptLog
    from pipeline.runs.progress import SubmittedJob, SubmittedRun
    from pipeline.runs.requests import RunConfig, RunInputs
    from pipeline.runs.resume import ResumePlan
    from pipeline.runs.sizing import Capacity

USER_AGENT = "array-job-pipeline"


def batch_config() -> Config:
    """Batch client settings. Adaptive retry mode adds client-side rate limiting to standard
    mode's backoff, so a burst of TooManyRequestsException (SubmitJob allows about 50 TPS per
    account) slows the submitter down instead of failing the run."""
    from botocore.config import Config

    return Config(retries={"mode": "adaptive", "max_attempts": 10}, user_agent_extra=USER_AGENT)


def other_config() -> Config:
    """Every other client: standard retries (throttling and transient errors, with backoff)."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 5}, user_agent_extra=USER_AGENT)


@dataclass
class Aws:
    """The clients a command needs."""

    batch: BatchClient
    cloudformation: CloudFormationClient
    logs: CloudWatchLogsClient | None = None
    s3: S3Client | None = None
    """Lists BucketA, to size a run to its input (None: runs keep the deployed size)."""


Connector = Callable[[str | None, str | None], Aws]
"""(profile, region) -> clients; tests pass one that returns moto-backed clients."""


def connect(profile: str | None, region: str | None, **client_options: Any) -> Aws:
    """boto3 clients for a profile and region, as the AWS CLI resolves them (``AWS_PROFILE``,
    ``AWS_REGION``, ``AWS_ENDPOINT_URL`` and the configuration files included)."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except ProfileNotFound as error:
        raise ConfigurationError(
            f"AWS profile {profile!r} is not configured; run `aws configure --profile {profile}` "
            "or pick one from `aws configure list-profiles`"
        ) from error
    if session.region_name is None:
        raise ConfigurationError(
            "no AWS region; pass --region, set AWS_REGION, or set a region in your profile"
        )
    if session.get_credentials() is None:
        raise ConfigurationError(
            "no AWS credentials found; run `aws configure` (or `aws sso login`), set AWS_PROFILE, "
            "or pass --profile; to try the pipeline without AWS, use --local"
        )
    return Aws(
        batch=session.client("batch", config=batch_config(), **client_options),
        cloudformation=session.client("cloudformation", config=other_config(), **client_options),
        logs=session.client("logs", config=other_config(), **client_options),
        s3=session.client("s3", config=other_config(), **client_options),
    )


@dataclass
class AwsSession:
    """An open session on a deployed pipeline: what the run engine works through (its Batch
    client, a log reader, when failures are reported) and the pipeline's document."""

    batch: BatchApi
    document: PipelineDocument
    logs: CloudWatchLogsClient | None = None
    log_group: str | None = None
    settle: bool = False
    clients: Mapping[str, Any] = field(default_factory=dict)
    """Other clients, by service name: ``s3`` lists BucketA to size a run to its input."""

    def input_lister(self) -> S3Client | None:
        """The S3 client that lists BucketA (None: a run given no size gets the deployed
        one)."""
        return cast("S3Client | None", self.clients.get("s3"))

    def read_log(self, job_id: str, log_stream: str | None) -> list[str]:
        from pipeline.runs.failures import cloudwatch_log_reader

        if self.logs is None or not self.log_group:
            return []
        return cloudwatch_log_reader(self.logs, self.log_group)(job_id, log_stream)

    def interrupted(self, run_id: str) -> bool:
        """On AWS, nothing stops a run but a stop: its jobs go on without this command."""
        return False

    def continues_interrupted(self, run_id: str) -> bool:
        return False

    def outputs_lost(self, run_id: str) -> bool:
        return False

    def notes(self, run_id: str) -> list[str]:
        """Nothing more than Batch says."""
        return []

    def read_attempt(
        self, attempt: AttemptLog, *, cursor: Any = None, tail: int | None = None
    ) -> tuple[list[str], Any]:
        """An attempt's log, from the CloudWatch Logs stream Batch reports for it."""
        from pipeline.runs.logs import cloudwatch_attempt_reader

        if self.logs is None or not self.log_group:
            return [], cursor
        return cloudwatch_attempt_reader(self.logs, self.log_group)(
            attempt, cursor=cursor, tail=tail
        )

    def plan(self, inputs: RunInputs, *, max_vcpu_hours: float | None) -> RunConfig:
        """The run's configuration from the deployed pipeline, cost-guarded."""
        from pipeline.runs import engine

        return engine.plan_run(self.document, inputs, max_vcpu_hours=max_vcpu_hours)

    def start(
        self,
        config: RunConfig,
        *,
        plan: ResumePlan | None = None,
        on_submitted: Callable[[SubmittedJob], None] | None = None,
        run_id_given: bool = False,
    ) -> SubmittedRun:
        """Pre-flight, then the chain (see :func:`pipeline.runs.engine.start`)."""
        from pipeline.runs import engine

        return engine.start(
            self,
            self.document,
            config,
            plan=plan,
            on_submitted=on_submitted,
            run_id_given=run_id_given,
        )

    def finish(self, run: SubmittedRun, outcome: RunOutcome) -> tuple[RunOutcome, list[str]]:
        """What a run's end adds on AWS: nothing; the run goes on without the command."""
        return outcome, []


@dataclass
class AwsTarget:
    """Which deployed pipeline: a stack's (its published document), or a queue and the
    name prefix of its job definitions (the registered definitions are described)."""

    stack: str | None = None
    queue: str | None = None
    job_definition_prefix: str = ""
    profile: str | None = None
    region: str | None = None


class AwsBackend:
    """Runs of a pipeline deployed to AWS."""

    always_watches = False
    unreachable_exit_code = EXIT_SERVICE
    """An endpoint that cannot be reached is AWS's (or the network's) trouble."""
    default_poll_interval = 10.0

    def __init__(self, target: AwsTarget, connector: Connector = connect) -> None:
        self.target = target
        self._connector = connector
        self._aws: Aws | None = None

    @property
    def aws(self) -> Aws:
        if self._aws is None:
            self._aws = self._connector(self.target.profile, self.target.region)
        return self._aws

    @property
    def where(self) -> str:
        """How the command line names this pipeline, for the hints it prints."""
        if self.target.stack:
            return f"--stack {self.target.stack}"
        return f"--queue {self.offline_document().queue}"

    def offline_document(self) -> PipelineDocument:
        """The pipeline as the given names make it, with the library's defaults: what a dry
        run without ``--stack`` shows, with no AWS call."""
        return PipelineDocument.by_name(
            queue=self.target.queue, prefix=self.target.job_definition_prefix
        )

    def dry_run_document(self) -> tuple[PipelineDocument, str | None]:
        """What a dry run shows, with a note when it is not the deployed pipeline: the
        stack's document, or without a stack the library's defaults (no AWS call)."""
        if self.target.stack:
            return self.document(), None
        return self.offline_document(), (
            "note: resources are the library's defaults; pass --stack NAME to see the "
            "deployed pipeline's"
        )

    def dry_run_listing(self, document: PipelineDocument, inputs: RunInputs) -> InputListing | None:
        """With a stack, the prefix of BucketA the run would process, listed as JobA will
        list it; without one, nothing (the dry run makes no AWS call)."""
        from pipeline.runs.engine import sized_to_input

        if not self.target.stack:
            return None
        return sized_to_input(self.aws.s3, document, inputs, listed=True)[1]

    def dry_run_capacity(self, document: PipelineDocument) -> Capacity:
        """The deployed queue's compute environments (with a stack), else the defaults."""
        from pipeline.runs.sizing import Capacity, default_capacity, queue_environments

        if not self.target.stack:
            return default_capacity()
        environments = queue_environments(self.aws.batch, document.queue)
        queue = document.queue.rsplit("/", 1)[-1]  # a name, or an ARN ending in one
        return Capacity(f"{queue}'s compute environments", tuple(environments))

    def document(self) -> PipelineDocument:
        """The deployed pipeline: the stack's document, or the registered job definitions."""
        from pipeline.runs.discovery import document_from_job_definitions, document_from_stack

        target = self.target
        if target.stack:
            document = document_from_stack(self.aws.cloudformation, target.stack)
            return replace(document, queue=target.queue) if target.queue else document
        # Without the stack's document, refuse revisions this library did not register
        # (another image, role or user): see pipeline.runs.discovery.
        return document_from_job_definitions(
            self.aws.batch,
            queue=target.queue,
            prefix=target.job_definition_prefix,
            verify=True,
        )

    def new_run_id(self, inputs: RunInputs) -> str:
        from pipeline.runs.requests import new_run_id

        return inputs.run_id or new_run_id()

    def check_run(self, inputs: RunInputs, *, max_vcpu_hours: float | None = None) -> None:
        """Nothing to refuse before the deployed pipeline is read."""

    @contextmanager
    def session(self, *, run_id: str | None = None, mode: Mode = "read") -> Iterator[AwsSession]:
        """A session on the deployed pipeline (``run_id`` and ``mode`` matter locally)."""
        document = self.document()
        clients = {"s3": self.aws.s3} if self.aws.s3 is not None else {}
        yield AwsSession(
            self.aws.batch, document, self.aws.logs, document.log_group, clients=clients
        )
