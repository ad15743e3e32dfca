"""The command line: ``python -m pipeline.submit``.

    python -m pipeline.submit --stack ArrayJobPipeline --array-size 100 --watch
    python -m pipeline.submit --dry-run --json
    python -m pipeline.submit status RUN_ID --stack ArrayJobPipeline
    python -m pipeline.submit cancel RUN_ID --stack ArrayJobPipeline
    python -m pipeline.submit resume RUN_ID --stack ArrayJobPipeline --watch
    python -m pipeline.submit --local

Only the command line lives here: parsing, picking a backend (AWS, or the local one with
``--local``), calling the run engine (:mod:`pipeline.runs.engine`) and printing. Every flag
means the same with either backend, and ``--json`` has the same shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pipeline.document import PipelineDocument
from pipeline.errors import (
    EXIT_BAD_INPUT,
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_SERVICE,
    ConfigurationError,
    JobFailedError,
    PipelineError,
)
from pipeline.spec import check_name_prefix
from pipeline.errors import SpecError

if TYPE_CHECKING:
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_logs import CloudWatchLogsClient

    from pipeline.local.backend import LocalSession
    from pipeline.runs.engine import DryRun, RunOutcome, Session
    from pipeline.runs.progress import JobProgress, RunSummary, SubmittedJob, SubmittedRun
    from pipeline.runs.requests import RunConfig, RunInputs
    from pipeline.runs.resume import ResumePlan

COMMANDS = ("run", "status", "cancel", "resume", "report", "diagnose")
DEFAULT_POLL_INTERVAL = 10.0
LOCAL_POLL_INTERVAL = 0.2

EPILOG = """\
exit codes (as the AWS CLI's): 0 success; 1 a job of the run failed; 130 interrupted;
252 invalid input; 253 AWS configuration or credentials missing; 254 AWS returned an error.
"""


# --- output --------------------------------------------------------------------------------


@dataclass
class Output:
    """Where the CLI writes: results to stdout (JSON with --json), progress to stderr."""

    as_json: bool
    out: IO[str]
    err: IO[str]

    def progress(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def result(self, text: str, data: Any) -> None:
        if self.as_json:
            json.dump(data, self.out, indent=2, default=str)
            self.out.write("\n")
        else:
            print(text, file=self.out)


def format_progress(progress: Sequence[Any]) -> str:
    """``JobA SUCCEEDED | JobB RUNNING 9,412/10,000 done, 3 failed | JobC PENDING | ...``"""
    parts = []
    for job in progress:
        text = f"{job.key} {job.status}"
        if job.array_size:
            done = job.children.get("SUCCEEDED", 0) + job.children.get("FAILED", 0)
            text += f" {done:,}/{job.array_size:,} done"
            if job.children.get("FAILED"):
                text += f", {job.children['FAILED']:,} failed"
        parts.append(text)
    return " | ".join(parts)


def progress_printer(output: Output, *, every: float = 1.0) -> Callable[[Sequence[Any]], None]:
    """A watch callback that prints a progress line, with elapsed time, when a job's status
    changes, and when only children counts changed at most once every ``every`` seconds (a
    10,000-child run does not print 20,000 lines)."""
    started = time.monotonic()
    last_line = ""
    last_statuses: tuple[str, ...] = ()
    last_time = 0.0

    def on_poll(progress: Sequence[Any]) -> None:
        nonlocal last_line, last_statuses, last_time
        line = format_progress(progress)
        statuses = tuple(p.status for p in progress)
        now = time.monotonic()
        if line == last_line or (statuses == last_statuses and now - last_time < every):
            return
        output.progress(f"[{now - started:5.0f}s] {line}")
        last_line, last_statuses, last_time = line, statuses, now

    return on_poll


def format_report(groups: Sequence[Any]) -> list[str]:
    """The failure report: one block per group of children that failed the same way, then
    one line for the jobs that never ran because of it."""
    lines = []
    for group in groups:
        if group.not_run:
            continue
        lines.append(f"  {group.describe()}")
        if group.log_stream:
            lines.append(f"    log {group.log_stream}, last lines:")
        lines += [f"    | {line}" for line in group.log_tail]
    not_run = [group.where() for group in groups if group.not_run]
    if not_run:
        lines.append(f"  not run, as a job they depend on failed: {', '.join(not_run)}")
    return lines


def print_outcome(output: Output, outcome: RunOutcome, extra: Sequence[str] = ()) -> None:
    """A watched run's end, a run's status: JSON, or text on stdout."""
    if output.as_json:
        output.result("", outcome.as_json())
        return
    lines = [f"run {outcome.run_id} {outcome.status}"]
    if outcome.failure is not None:
        lines[0] += f": {outcome.failure.describe()}"
    for p in outcome.progress:
        lines.append(f"  {p.key:<5} {p.job_id}  {format_progress([p]).split(' ', 1)[1]}")
    if extra:
        lines += ["", *extra]
    if outcome.failures:
        lines += ["", "failure report:", *format_report(outcome.failures)]
    output.result("\n".join(lines), None)


# --- arguments -----------------------------------------------------------------------------


class UsageError(Exception):
    """A command line argparse cannot parse; reported in one line with exit code 252."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    where = common.add_argument_group("where the pipeline is")
    where.add_argument(
        "--stack", help="PipelineStack name: the pipeline as deployed, from its document"
    )
    where.add_argument("--queue", help="job queue name or ARN (default: ProdQueue)")
    where.add_argument(
        "--job-definition-prefix",
        default="",
        metavar="PREFIX",
        help="the pipeline's name_prefix: job definitions are PREFIX-JobA-list-and-validate, ...",
    )
    where.add_argument("--profile", help="AWS profile (as the AWS CLI's --profile)")
    where.add_argument("--region", help="AWS region (as the AWS CLI's --region)")
    where.add_argument(
        "--local",
        action="store_true",
        help="this machine, with no AWS account: S3, DynamoDB and SNS from an embedded moto "
        "server, the jobs under LocalBatch",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    parser = _Parser(
        prog="python -m pipeline.submit",
        description="Submit, watch, cancel, resume, report on and diagnose runs of the array-job "
        "pipeline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", metavar="{run,status,cancel,resume,report,diagnose}", parser_class=_Parser
    )

    run = commands.add_parser(
        "run",
        parents=[common],
        help="submit a run (the default command)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(run)
    run.add_argument(
        "--dry-run", action="store_true", help="print the five requests; submit nothing"
    )
    run.add_argument("--run-id", help="run id to use (default: a new timestamped one)")
    run.add_argument("--input", metavar="DIR", help="--local: your files as BucketA's objects")
    run.add_argument("--output", metavar="DIR", help="--local: copy the run's outputs here")
    run.add_argument(
        "--on-upload",
        nargs="?",
        const="",
        metavar="PREFIX",
        help="--local: fire the upload trigger as the deployed rule would: write "
        "PREFIX_READY (a folder prefix ending in '/', or nothing for the whole bucket) to "
        "BucketA and hand its S3 event to the starter's code",
    )
    run.add_argument(
        "--on-schedule",
        action="store_true",
        help="--local: fire the schedule trigger as the deployed schedule would",
    )
    run.add_argument(
        "--inject",
        action="append",
        metavar="JOB[:INDEX]=FAULT",
        help="--local: make one attempt fail: exit:CODE, host-terminated or timeout "
        "(e.g. JobB:3=exit:2); repeatable",
    )
    run.set_defaults(handler=command_run)

    status = commands.add_parser(
        "status",
        parents=[common],
        help="show a run's jobs; without RUN_ID, list the runs in the queue (newest first)",
    )
    status.add_argument("run_id", metavar="RUN_ID", nargs="?")
    status.add_argument(
        "--limit", type=_int, default=20, metavar="N", help="runs to list (default: 20)"
    )
    status.set_defaults(handler=command_status)

    cancel = commands.add_parser(
        "cancel", parents=[common], help="cancel queued and terminate running jobs of a run"
    )
    cancel.add_argument("run_id", metavar="RUN_ID")
    cancel.set_defaults(handler=command_cancel)

    resume = commands.add_parser(
        "resume",
        parents=[common],
        help="re-submit a run from its first job that did not succeed",
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "--failed-only",
        action="store_true",
        help="re-run only the failed children of JobB/JobC (their successful outputs are kept), "
        "then JobD and JobE",
    )
    resume.add_argument("--output", metavar="DIR", help="--local: copy the run's outputs here")
    _add_run_options(resume, sizes=False)
    resume.set_defaults(handler=command_resume)

    report = commands.add_parser(
        "report",
        parents=[common],
        help="what a run did: timeline, child durations, failures, usage, estimated cost",
    )
    report.add_argument("run_id", metavar="RUN_ID")
    report.add_argument(
        "--html", metavar="FILE", help="also write the report as one self-contained HTML page"
    )
    report.set_defaults(handler=command_report)

    diagnose = commands.add_parser(
        "diagnose",
        parents=[common],
        help="why a run's jobs wait in RUNNABLE: one line per likely reason, with what to do",
    )
    diagnose.add_argument("run_id", metavar="RUN_ID")
    diagnose.set_defaults(handler=command_diagnose)
    return parser


def _add_run_options(parser: argparse.ArgumentParser, *, sizes: bool = True) -> None:
    if sizes:
        parser.add_argument(
            "--array-size",
            type=_int,
            help="children of JobB and JobC, 2..10,000 (default: the deployed pipeline's: "
            "the stack's, or 8 with --local)",
        )
    parser.add_argument("--source-bucket", metavar="S3_URL", help="JobE's SourceBucket parameter")
    if sizes:
        parser.add_argument(
            "--max-object-bytes",
            type=_int,
            metavar="N",
            help="JobA rejects input objects larger than N bytes (default: the job "
            "definition's: 5 GiB deployed; 1 MiB with --local, whose services keep objects "
            "in memory)",
        )
    parser.add_argument("--recipient", metavar="EMAIL", help="JobE's Recipient parameter")
    if sizes:
        parser.add_argument(
            "--input-prefix",
            metavar="PREFIX",
            help="only BucketA's objects under this S3 prefix are the run's inputs (default: "
            "the whole bucket)",
        )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="show progress until the run ends (always on with --local, whose services live "
        "as long as the command)",
    )
    parser.add_argument(
        "--max-vcpu-hours",
        type=_positive,
        metavar="N",
        help="refuse to submit if the run's worst case (children x vCPUs x timeout x attempts) "
        "exceeds N vCPU-hours",
    )
    parser.add_argument(
        "--diagnose-after",
        type=_positive,
        default=600.0,
        metavar="SECONDS",
        help="with --watch: when a job has waited this long to be placed, say how to see why "
        "(default: 600)",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help=f"default: {DEFAULT_POLL_INTERVAL:g} ({LOCAL_POLL_INTERVAL:g} with --local)",
    )


def _int(value: str) -> int:
    try:
        return int(value.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number above 0")
    return number


# --- the AWS backend -------------------------------------------------------------------------


@dataclass
class Aws:
    batch: BatchClient
    cloudformation: CloudFormationClient
    logs: CloudWatchLogsClient | None = None


def connect(profile: str | None, region: str | None) -> Aws:
    """boto3 clients for the CLI (see :mod:`pipeline.aws` for their retry settings).
    ``AWS_ENDPOINT_URL`` is honoured by boto3 itself."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    from pipeline.aws import batch_config, other_config

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
        batch=session.client("batch", config=batch_config()),
        cloudformation=session.client("cloudformation", config=other_config()),
        logs=session.client("logs", config=other_config()),
    )


Connector = Callable[[str | None, str | None], Aws]


class AwsBackend:
    """The pipeline deployed to AWS: named by ``--stack``, or by ``--queue`` and
    ``--job-definition-prefix`` (its job definitions are described)."""

    def __init__(self, args: argparse.Namespace, connector: Connector) -> None:
        self.args = args
        self._connector = connector
        self._aws: Aws | None = None

    @property
    def aws(self) -> Aws:
        if self._aws is None:
            self._aws = self._connector(self.args.profile, self.args.region)
        return self._aws

    def where(self) -> str:
        if self.args.stack:
            return f"--stack {self.args.stack}"
        return f"--queue {self.args.queue or self.document_by_name().queue}"

    def document_by_name(self) -> PipelineDocument:
        return PipelineDocument.by_name(
            queue=self.args.queue, prefix=self.args.job_definition_prefix
        )

    def document(self, *, offline: bool = False) -> PipelineDocument:
        """The deployed pipeline; with ``offline`` and no stack (a dry run), the library's
        defaults under the given names, with no AWS call."""
        from pipeline.runs.discovery import document_from_job_definitions, document_from_stack

        args = self.args
        if args.stack:
            document = document_from_stack(self.aws.cloudformation, args.stack)
            return replace(document, queue=args.queue) if args.queue else document
        check_name_prefix(args.job_definition_prefix)
        if offline:
            return self.document_by_name()
        return document_from_job_definitions(
            self.aws.batch, queue=args.queue, prefix=args.job_definition_prefix
        )

    @contextmanager
    def session(self, document: PipelineDocument) -> Iterator[Session]:
        from pipeline.aws import AwsSession

        yield AwsSession(self.aws.batch, self.aws.logs, document.log_group)


# --- commands ------------------------------------------------------------------------------


def _inputs(args: argparse.Namespace) -> RunInputs:
    from pipeline.runs.requests import RunInputs

    return RunInputs(
        array_size=getattr(args, "array_size", None),
        run_id=getattr(args, "run_id", None),
        source_bucket=args.source_bucket,
        recipient=args.recipient,
        max_object_bytes=getattr(args, "max_object_bytes", None),
        input_prefix=getattr(args, "input_prefix", None),
    )


def _need_local_services() -> None:
    """The local services need moto and its server's Flask, from the ``[local]`` extra."""
    import importlib.util

    if any(importlib.util.find_spec(name) is None for name in ("moto", "flask")):
        raise ConfigurationError(
            "--local needs the embedded AWS services, which are not installed: "
            "pip install 'array-job-pipeline[local]'"
        )


def _check_backend_flags(args: argparse.Namespace) -> None:
    if args.local:
        given = [f for f in ("stack", "queue", "profile", "region") if getattr(args, f)]
        if given or args.job_definition_prefix:
            flags = ", ".join(f"--{f}" for f in given) or "--job-definition-prefix"
            raise SpecError(f"--local runs on this machine; drop {flags}")
    else:
        if getattr(args, "on_upload", None) is not None:
            raise SpecError(
                "--on-upload works with --local only; on AWS, write PREFIX_READY to BucketA "
                "(aws s3 cp - s3://BUCKET/PREFIX_READY < /dev/null) and the deployed rule "
                "starts the run"
            )
        local_only = [
            f for f in ("input", "output", "inject", "on_schedule") if getattr(args, f, None)
        ]
        if local_only:
            flag = "--" + local_only[0].replace("_", "-")
            raise SpecError(f"{flag} works with --local only; add --local or drop it")
    if getattr(args, "on_upload", None) is not None or getattr(args, "on_schedule", False):
        _check_trigger_flags(args)


def _check_trigger_flags(args: argparse.Namespace) -> None:
    """A triggered run is the deployed pipeline's defaults, as on AWS: only the cost guard
    (the construct's trigger_max_vcpu_hours) and local options apply."""
    if args.on_upload is not None and args.on_schedule:
        raise SpecError("--on-upload and --on-schedule are two triggers; pick one")
    flag = "--on-upload" if args.on_upload is not None else "--on-schedule"
    if args.on_upload and not args.on_upload.endswith("/"):
        raise SpecError(
            f"--on-upload {args.on_upload!r} must be a folder prefix ending in '/' (its "
            "marker is PREFIX_READY), or nothing for the whole bucket"
        )
    given = [
        name
        for name in (
            "array_size",
            "run_id",
            "source_bucket",
            "recipient",
            "max_object_bytes",
            "input_prefix",
        )
        if getattr(args, name, None) is not None
    ]
    if args.dry_run:
        given.append("dry_run")
    if given:
        other = "--" + given[0].replace("_", "-")
        raise SpecError(
            f"{flag} starts a run with the pipeline's defaults, as the deployed trigger does; "
            f"drop {other}"
        )


def command_run(args: argparse.Namespace, output: Output, connector: Connector) -> int:
    from pipeline.runs import engine

    _check_backend_flags(args)
    inputs = _inputs(args)
    if args.local:
        from pipeline.local.backend import LocalBackend, parse_faults
        from pipeline.local.sample import read_input_dir, sample_objects

        document = LocalBackend().document()
        # A trigger applies the cost guard itself, and publishes a refusal as on AWS.
        triggered = args.on_upload is not None or args.on_schedule
        guard = None if triggered else args.max_vcpu_hours
        config = engine.plan_run(document, inputs, max_vcpu_hours=guard)
        local = LocalBackend(faults=parse_faults(args.inject, config.spec))
        if args.dry_run:
            _print_dry_run(output, engine.dry_run(document, config))
            return EXIT_OK
        _need_local_services()
        if args.run_id:
            from pipeline.local.saved import refuse_saved_run_id

            refuse_saved_run_id(args.run_id)
        objects, not_seeded = (
            read_input_dir(Path(args.input)) if args.input else (sample_objects(), {})
        )
        output_dir = _output_dir(args)
        with local.session(document, inputs=objects, not_seeded=not_seeded) as session:
            endpoint = session.aws.endpoint if session.aws else "none"
            what = (
                f"local {'upload' if args.on_upload is not None else 'schedule'} trigger"
                if triggered
                else f"local run {config.run_id}"
            )
            output.progress(
                f"{what}: moto server at {endpoint}; BucketA seeded with "
                f"{len(objects):,} objects, {sum(len(b) for b in objects.values()):,} bytes; "
                f"{session.batch.vcpu_budget} vCPUs"
            )
            for name, reason in not_seeded.items():
                output.progress(f"  not seeded: {name}: {reason}")
            if triggered:
                run = _fire_local_trigger(args, output, session, document)
            else:
                run = _start(output, session, document, config, run_id_given=bool(args.run_id))
            return _follow_local(args, output, session, run, output_dir)
    backend = AwsBackend(args, connector)
    # Every input is checked before any AWS call.
    engine.plan_run(backend.document_by_name(), inputs)
    document = backend.document(offline=args.dry_run)
    config = engine.plan_run(document, inputs, max_vcpu_hours=args.max_vcpu_hours)
    if args.dry_run:
        if not args.stack:
            output.progress(
                "note: resources are the library's defaults; pass --stack NAME to see the "
                "deployed pipeline's"
            )
        _print_dry_run(output, engine.dry_run(document, config))
        return EXIT_OK
    with backend.session(document) as session:
        run = _start(output, session, document, config, run_id_given=bool(args.run_id))
        return _after_submit(args, output, session, run, backend.where())


def _start(
    output: Output,
    session: Session,
    document: PipelineDocument,
    config: RunConfig,
    plan: ResumePlan | None = None,
    *,
    run_id_given: bool = False,
) -> SubmittedRun:
    from pipeline.runs import engine

    engine.preflight(session, document, config, run_id_given=run_id_given)
    output.progress(
        f"run {config.run_id}: submitting {len(config.spec.jobs)} jobs to {document.queue}"
    )

    def submitted(job: SubmittedJob) -> None:
        output.progress(f"  {job.key:<5} submitted {job.job_id}")

    return engine.submit(session, document, config, plan=plan, on_submitted=submitted)


def _fire_local_trigger(
    args: argparse.Namespace, output: Output, session: LocalSession, document: PipelineDocument
) -> SubmittedRun:
    """What the deployed trigger does, on the local services: the event (a ready marker
    written to BucketA, or the schedule's input) goes to the starter's engine code, which
    starts, skips or refuses the run and publishes why to the topic."""
    import uuid
    from datetime import UTC, datetime

    from pipeline.runs.progress import SubmittedRun
    from pipeline.runs.triggers import STARTED, start_triggered, trigger_from_event
    from pipeline.contract import READY_MARKER
    from pipeline.trigger_events import schedule_event, upload_event

    assert session.aws is not None
    aws = session.aws
    bucket = aws.names["input_bucket"]
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if args.on_upload is not None:
        marker = f"{args.on_upload}{READY_MARKER}"
        aws.clients["s3"].put_object(Bucket=bucket, Key=marker, Body=b"")
        event = upload_event(bucket, marker, str(uuid.uuid4()), now)
    else:
        event = schedule_event("local", str(uuid.uuid4()), now)
    trigger = trigger_from_event(event, input_bucket=bucket)

    def notify(subject: str, message: str) -> None:
        aws.clients["sns"].publish(
            TopicArn=aws.names["notification_topic"], Subject=subject, Message=message
        )
        output.progress(f"notification published: {subject}: {message.strip()}")

    outcome = start_triggered(
        session, document, trigger, notify=notify, max_vcpu_hours=args.max_vcpu_hours
    )
    listing = (
        f", listing {trigger.input_prefix or 'the whole bucket'}"
        if args.on_upload is not None
        else ""
    )
    output.progress(
        f"{trigger.kind} trigger ({trigger.origin}): {outcome.action.lower()} run "
        f"{outcome.run_id}{listing}"
    )
    if outcome.action != STARTED:
        raise SpecError(f"the {trigger.kind} trigger started no run: {outcome.reason}")
    for job in outcome.jobs:
        output.progress(f"  {job.key:<5} submitted {job.job_id}")
    return SubmittedRun(outcome.run_id, outcome.jobs)


def _follow_local(
    args: argparse.Namespace,
    output: Output,
    session: LocalSession,
    run: SubmittedRun,
    output_dir: Path | None,
) -> int:
    from pipeline.runs import engine

    interval = args.poll_interval or LOCAL_POLL_INTERVAL
    outcome = engine.follow(session, run, interval=interval, on_poll=progress_printer(output))
    outcome, extra = session.finish(run, outcome, output_dir)
    return _end(output, outcome, extra, "--local")


def _after_submit(
    args: argparse.Namespace,
    output: Output,
    session: Session,
    run: SubmittedRun,
    where: str,
) -> int:
    from pipeline.runs import engine

    if not args.watch:
        outcome = engine.submitted(run)
        if output.as_json:
            output.result("", outcome.as_json())
        else:
            output.result(
                f"submitted run {run.run_id}\nfollow it with: python -m pipeline.submit status "
                f"{run.run_id} {where}",
                None,
            )
        return EXIT_OK
    interval = args.poll_interval or DEFAULT_POLL_INTERVAL
    printer = progress_printer(output)
    hint = runnable_hint(output, run.run_id, where, args.diagnose_after)

    def on_poll(progress: list[JobProgress]) -> None:
        printer(progress)
        hint(progress)

    outcome = engine.follow(session, run, interval=interval, on_poll=on_poll)
    return _end(output, outcome, (), where)


def runnable_hint(
    output: Output, run_id: str, where: str, after_seconds: float
) -> Callable[[Sequence[JobProgress]], None]:
    """A watch callback that says, once per job, how to see why it has waited more than
    ``after_seconds`` to be placed (RUNNABLE, or an array with RUNNABLE children)."""
    since: dict[str, float] = {}
    told: set[str] = set()

    def check(progress: Sequence[JobProgress]) -> None:
        now = time.monotonic()
        for job in progress:
            waiting = job.status == "RUNNABLE" or bool(job.children.get("RUNNABLE"))
            if not waiting:
                since.pop(job.key, None)
                continue
            start = since.setdefault(job.key, now)
            if now - start >= after_seconds and job.key not in told:
                told.add(job.key)
                output.progress(
                    f"{job.key} has waited {_minutes(now - start)} to be placed; see why with "
                    f"`python -m pipeline.submit diagnose {run_id} {where}`"
                )

    return check


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _end(output: Output, outcome: RunOutcome, extra: Sequence[str], where: str) -> int:
    print_outcome(output, outcome, extra)
    if outcome.succeeded:
        return EXIT_OK
    assert outcome.failure is not None
    hints = [
        f"re-run what failed with `python -m pipeline.submit resume {outcome.run_id} "
        f"--failed-only {where}`"
    ]
    if where != "--local":
        hints.insert(
            0, f"stop what is left with `python -m pipeline.submit cancel {outcome.run_id} {where}`"
        )
    raise JobFailedError(
        f"run {outcome.run_id} failed: {outcome.failure.describe()}; {'; '.join(hints)}"
    )


def _print_dry_run(output: Output, dry_run: DryRun) -> None:
    from pipeline.runs.preflight import format_costs

    output.progress("\n".join(format_costs(dry_run.costs)))
    if output.as_json:
        output.result("", dry_run.requests)
        return
    for request in dry_run.requests:
        print(json.dumps(request, indent=2), file=output.out)


def _output_dir(args: argparse.Namespace) -> Path | None:
    """``--output``, checked before the run: a folder that exists or can be made, writable."""
    import tempfile

    output_dir = Path(args.output) if getattr(args, "output", None) else None
    if output_dir is None:
        return None
    if output_dir.exists() and not output_dir.is_dir():
        raise SpecError(f"--output {str(output_dir)!r} exists and is not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise SpecError(
            f"--output {str(output_dir)!r} cannot be written ({error.strerror}); pick a folder "
            "you can write to"
        ) from None
    return output_dir


def command_status(args: argparse.Namespace, output: Output, connector: Connector) -> int:
    from pipeline.runs import engine

    _check_backend_flags(args)
    if args.limit < 1:
        raise SpecError(f"--limit must be at least 1; got {args.limit}")
    if args.local:
        from pipeline.local.backend import LocalBackend

        local = LocalBackend()
        document = local.document()
        if args.run_id is None:
            print_runs(output, local.saved_runs(document, limit=args.limit), "--local")
            return EXIT_OK
        with local.session(document, saved_run=args.run_id, services=False) as session:
            print_outcome(output, engine.status(session, document, args.run_id))
        return EXIT_OK
    backend = AwsBackend(args, connector)
    document = backend.document()
    with backend.session(document) as session:
        if args.run_id is None:
            runs = engine.list_runs(session, document, limit=args.limit)
            print_runs(output, runs, backend.where())
            return EXIT_OK
        print_outcome(output, engine.status(session, document, args.run_id))
    return EXIT_OK


def print_runs(output: Output, runs: Sequence[RunSummary], where: str) -> None:
    """``status`` without a run id: a table like the AWS CLI's ``--output table``, newest
    first, or ``{"runs": [...]}`` with --json."""
    from datetime import UTC, datetime

    if output.as_json:
        output.result("", {"runs": [r.as_json() for r in runs]})
        return
    if not runs:
        output.result(f"no runs ({where}; Batch keeps ended jobs for about 7 days)", None)
        return
    lines = [f"{'RUN ID':<24} {'STATUS':<10} {'SUBMITTED (UTC)':<19}  {'STARTED BY':<12}  INPUT"]
    for run in runs:
        when = datetime.fromtimestamp(run.created_at / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        prefix = "(whole bucket)" if not run.input_prefix else run.input_prefix
        lines.append(
            f"{run.run_id:<24} {run.status:<10} {when:<19}  {run.started_by:<12}  {prefix}"
        )
    output.result("\n".join(lines), None)


def command_cancel(args: argparse.Namespace, output: Output, connector: Connector) -> int:
    from pipeline.runs import engine

    _check_backend_flags(args)
    if args.local:
        from pipeline.local.backend import refuse_cancel

        raise refuse_cancel(args.run_id)
    backend = AwsBackend(args, connector)
    document = backend.document()
    with backend.session(document) as session:
        actions = engine.cancel(session, document, args.run_id)
    text = (
        "\n".join(f"{key}: {action}" for key, action in actions)
        if actions
        else f"run {args.run_id} has no active jobs"
    )
    output.result(text, {"runId": args.run_id, "actions": dict(actions)})
    return EXIT_OK


def command_resume(args: argparse.Namespace, output: Output, connector: Connector) -> int:

    _check_backend_flags(args)
    inputs = _inputs(args)
    if args.local:
        from pipeline.local.backend import LocalBackend

        _need_local_services()
        local = LocalBackend()
        document = local.document()
        output_dir = _output_dir(args)
        with local.session(document, saved_run=args.run_id) as session:
            run = _resubmit(args, output, session, document, inputs)
            return _follow_local(args, output, session, run, output_dir)
    backend = AwsBackend(args, connector)
    document = backend.document()
    with backend.session(document) as session:
        run = _resubmit(args, output, session, document, inputs)
        return _after_submit(args, output, session, run, backend.where())


def _resubmit(
    args: argparse.Namespace,
    output: Output,
    session: Session,
    document: PipelineDocument,
    inputs: RunInputs,
) -> SubmittedRun:
    """The resume plan of ``args.run_id`` (cost-guarded), then its jobs submitted."""
    from pipeline.runs import engine

    resume = engine.plan_resume_run(
        session,
        document,
        args.run_id,
        inputs,
        failed_only=args.failed_only,
        max_vcpu_hours=args.max_vcpu_hours,
    )
    output.progress(f"run {args.run_id}: {resume.plan.describe()}")
    return _start(output, session, document, resume.config, resume.plan)


def command_report(args: argparse.Namespace, output: Output, connector: Connector) -> int:
    from pipeline.runs.report import collect, progress_reporter

    _check_backend_flags(args)
    html_path = _html_path(args.html) if args.html else None
    if args.local:
        from pipeline.local.backend import LocalBackend

        local = LocalBackend()
        document = local.document()
        with local.session(document, saved_run=args.run_id, services=False) as session:
            report = collect(
                session.batch,
                document,
                args.run_id,
                read_log=session.read_log,
                on_progress=progress_reporter(output.progress),
            )
    else:
        backend = AwsBackend(args, connector)
        document = backend.document()
        with backend.session(document) as session:
            report = collect(
                session.batch,
                document,
                args.run_id,
                read_log=session.read_log,
                on_progress=progress_reporter(output.progress),
            )
    if html_path is not None:
        from pipeline.report_html import render

        html_path.write_text(render(report), encoding="utf-8")
        output.progress(f"wrote {html_path}")
    output.result("\n".join(format_run_report(report)), report.as_json())
    return EXIT_OK


def format_run_report(report: Any) -> list[str]:
    """The report in a few lines for a terminal."""
    lines = [f"run {report.run_id}"]
    for job in report.jobs:
        runs = sorted(c.run_seconds for c in job.children if c.started_at)
        timing = (
            f"run p50 {runs[len(runs) // 2]:.1f} s, max {runs[-1]:.1f} s" if runs else "not run"
        )
        worst = report.worst_case.get(job.key, (0.0, 0.0))
        lines.append(
            f"  {job.key:<5} {len(job.children):>6,} job(s), {timing}, {job.failed:,} failed, "
            f"{job.retries:,} retried, {job.vcpu_hours:,.4f} vCPU-hours "
            f"(worst case {worst[0]:,.1f})"
        )
    if report.cost is not None:
        lines.append(f"estimated cost: ~${report.cost.usd:,.2f} ({report.cost.basis})")
    return lines


def _html_path(value: str) -> Path:
    path = Path(value)
    if path.is_dir():
        raise SpecError(f"--html {value!r} is a folder; name a file, like report.html")
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        raise SpecError(f"--html {value!r} cannot be written ({error.strerror})") from None
    return path


def command_diagnose(args: argparse.Namespace, output: Output, connector: Connector) -> int:
    from pipeline.runs.diagnose import diagnose

    _check_backend_flags(args)
    if args.local:
        raise SpecError(
            "diagnose looks at AWS Batch's compute environments; a local run never waits for "
            "capacity beyond this machine's cores"
        )
    backend = AwsBackend(args, connector)
    document = backend.document()
    with backend.session(document) as session:
        findings = diagnose(session.batch, document, args.run_id)
    text = "\n".join(f"{f.job}: {f.reason}; {f.action}" for f in findings) or (
        f"run {args.run_id} has no job waiting to be placed"
    )
    output.result(text, {"runId": args.run_id, "findings": [f.as_json() for f in findings]})
    return EXIT_OK


# --- entry point ---------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    connector: Connector = connect,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run the CLI; returns the exit code. ``connector`` makes the AWS clients (tests pass
    moto-backed ones)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0] not in COMMANDS and arguments[0] not in ("-h", "--help")):
        arguments.insert(0, "run")
    err = stderr or sys.stderr
    try:
        args = build_parser().parse_args(arguments)
    except UsageError as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK
    output = Output(args.json, stdout or sys.stdout, err)
    try:
        return int(args.handler(args, output, connector))
    except SpecError as error:
        print(f"error: {error}", file=err)
        return EXIT_BAD_INPUT
    except JobFailedError as error:
        print(f"error: {error}", file=err)
        return EXIT_JOB_FAILED
    except PipelineError as error:
        print(f"error: {error}", file=err)
        return error.exit_code
    except NoCredentialsError:
        print(
            "error: no AWS credentials found; run `aws configure`, set AWS_PROFILE, or pass "
            "--profile; to try the pipeline without AWS, use --local",
            file=err,
        )
        return EXIT_CONFIG
    except ClientError as error:
        info = error.response.get("Error", {})
        print(f"error: {error.operation_name}: {info.get('Code')}: {info.get('Message')}", file=err)
        return EXIT_SERVICE
    except BotoCoreError as error:
        print(f"error: {error}", file=err)
        return EXIT_SERVICE
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (`... --json | head`): end quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        import os

        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
