"""The command line's words: the argument parser, and :class:`Options`, the typed options a
command works with (made once, at the edge, from argparse's namespace).

Every flag means the same with and without ``--local``; a flag that applies to one backend
only is refused with the other in one line. The engine's messages name fields
(``array_size``); :data:`FLAGS` says which flag each field is.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.backends.aws import AwsTarget
from pipeline.backends.local import LocalOptions
from pipeline.errors import SpecError
from pipeline.limits import check_name_prefix
from pipeline.runs.requests import RunInputs
from pipeline.spec import OBJECTS_PER_CHILD
from pipeline.steps import load_steps

PROG = "python -m pipeline.submit"
SCRIPT = "array-job-pipeline"
"""The same command line, as the console script the package installs."""
COMMANDS = ("run", "status", "cancel", "resume", "report", "diagnose", "prune", "logs")
DEFAULT_DIAGNOSE_AFTER = 600.0

EPILOG = """\
exit codes (as the AWS CLI's): 0 success; 1 a job of the run failed; 130 interrupted;
252 invalid input; 253 AWS configuration or credentials missing; 254 AWS returned an error;
255 a local error (a file that cannot be read or written, damaged saved state, the local
services stopped).
"""

FLAGS = {
    "array_size": "--array-size",
    "run_id": "--run-id",
    "source_bucket": "--source-bucket",
    "recipient": "--recipient",
    "max_object_bytes": "--max-object-bytes",
    "input_prefix": "--input-prefix",
    "max_vcpu_hours": "--max-vcpu-hours",
    "objects_per_child": "--objects-per-child",
    "estimate_from": "--estimate-from",
    "seconds_per_object": "--seconds-per-object",
}
"""The engine's field names, as the command line spells them."""


class UsageError(Exception):
    """A command line argparse cannot parse; reported in one line with exit code 252."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see {self.prog} --help)")


@dataclass(frozen=True)
class Options:
    """A command's options, typed. Fields a command has no flag for keep their defaults."""

    command: str
    json: bool = False
    local: bool = False
    target: AwsTarget = field(default_factory=AwsTarget)
    run_id: str | None = None
    inputs: RunInputs = field(default_factory=RunInputs)
    local_options: LocalOptions = field(default_factory=LocalOptions)
    dry_run: bool = False
    watch: bool = False
    failed_only: bool = False
    max_vcpu_hours: float | None = None
    diagnose_after: float = DEFAULT_DIAGNOSE_AFTER
    poll_interval: float | None = None
    limit: int = 20
    html: Path | None = None
    older_than_days: float | None = None
    prune_ids: tuple[str, ...] = ()
    job: str | None = None
    """``logs``: the job (``JobA``) or array child (``JobB:3``) whose log to print."""
    follow: bool = False
    """``logs``: keep printing the log until the job ends."""
    rejected: bool = False
    """``resume``: run the current steps again on the run's rejected objects only."""
    estimate_from: str | None = None
    """``run``: predict from the times per object this saved local run measured."""
    seconds_per_object: float | None = None
    """``run``: predict from this time per object (in each of JobB and JobC)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        def value(name: str, default: Any = None) -> Any:
            return getattr(args, name, default)

        steps = load_steps(value("steps")) if value("steps") else None
        local = LocalOptions(
            steps=steps,
            input_dir=Path(args.input) if value("input") else None,
            output_dir=Path(args.output) if value("output") else None,
            inject=tuple(value("inject") or ()),
            on_upload=value("on_upload"),
            on_schedule=bool(value("on_schedule", False)),
            trigger_max_vcpu_hours=value("max_vcpu_hours"),
        )
        options = cls(
            command=args.command,
            json=bool(value("json", False)),
            local=bool(value("local", False)),
            target=AwsTarget(
                stack=value("stack"),
                queue=value("queue"),
                job_definition_prefix=value("job_definition_prefix", "") or "",
                profile=value("profile"),
                region=value("region"),
            ),
            run_id=value("run_id") if args.command not in ("run", "prune") else None,
            prune_ids=tuple(value("run_id") or ()) if args.command == "prune" else (),
            inputs=RunInputs(
                array_size=value("array_size"),
                run_id=value("run_id") if args.command == "run" else None,
                source_bucket=value("source_bucket"),
                recipient=value("recipient"),
                max_object_bytes=value("max_object_bytes"),
                input_prefix=value("input_prefix"),
                steps=steps,
                objects_per_child=value("objects_per_child"),
            ),
            local_options=local,
            dry_run=bool(value("dry_run", False)),
            watch=bool(value("watch", False)),
            failed_only=bool(value("failed_only", False)),
            max_vcpu_hours=value("max_vcpu_hours"),
            diagnose_after=value("diagnose_after", DEFAULT_DIAGNOSE_AFTER),
            poll_interval=value("poll_interval"),
            limit=value("limit", 20),
            html=Path(args.html) if value("html") else None,
            older_than_days=value("older_than"),
            job=value("job"),
            follow=bool(value("follow", False)),
            rejected=bool(value("rejected", False)),
            estimate_from=value("estimate_from"),
            seconds_per_object=value("seconds_per_object"),
        )
        options.check()
        return options

    def check(self) -> None:
        """Refuse, in one line, flags that do not go together."""
        if self.limit < 1:
            raise SpecError(f"--limit must be at least 1; got {self.limit}")
        if self.follow and self.json:
            raise SpecError("--follow prints a log as it grows; drop --json")
        if self.estimate_from is not None and self.seconds_per_object is not None:
            raise SpecError(
                "--estimate-from and --seconds-per-object are two sources of the time per "
                "object; give one"
            )
        predicting = [
            flag
            for flag, given in (
                ("--estimate-from", self.estimate_from),
                ("--seconds-per-object", self.seconds_per_object),
            )
            if given is not None
        ]
        if predicting and not self.dry_run:
            raise SpecError(
                f"{predicting[0]} predicts a run's time and cost in a dry run; add --dry-run"
            )
        if self.rejected and self.failed_only:
            raise SpecError(
                "--rejected and --failed-only are two resumes; resume what failed first, then "
                "the rejected objects"
            )
        target = self.target
        if self.local:
            given = [
                flag
                for flag, set_ in (
                    ("--stack", target.stack),
                    ("--queue", target.queue),
                    ("--profile", target.profile),
                    ("--region", target.region),
                    ("--job-definition-prefix", target.job_definition_prefix),
                )
                if set_
            ]
            if given:
                raise SpecError(f"--local runs on this machine; drop {given[0]}")
        else:
            check_name_prefix(target.job_definition_prefix)
            local = self.local_options
            if local.on_upload is not None:
                raise SpecError(
                    "--on-upload works with --local only; on AWS, write PREFIX_READY to BucketA "
                    "(aws s3 cp - s3://BUCKET/PREFIX_READY < /dev/null) and the deployed rule "
                    "starts the run"
                )
            for flag, set_ in (
                ("--input", local.input_dir),
                ("--output", local.output_dir),
                ("--inject", local.inject),
                ("--on-schedule", local.on_schedule),
            ):
                if set_:
                    raise SpecError(f"{flag} works with --local only; add --local or drop it")
            if self.command == "prune":
                raise SpecError("prune removes saved local runs; add --local")
        if self.local_options.trigger is not None:
            self._check_trigger()

    def _check_trigger(self) -> None:
        """A triggered run is the deployed pipeline's defaults, as on AWS: only the cost guard
        (the construct's trigger_max_vcpu_hours) and local options apply."""
        local = self.local_options
        if local.on_upload is not None and local.on_schedule:
            raise SpecError("--on-upload and --on-schedule are two triggers; pick one")
        flag = "--on-upload" if local.on_upload is not None else "--on-schedule"
        if local.on_upload and not local.on_upload.endswith("/"):
            raise SpecError(
                f"--on-upload {local.on_upload!r} must be a folder prefix ending in '/' (its "
                "marker is PREFIX_READY), or nothing for the whole bucket"
            )
        inputs = self.inputs
        given = [
            name
            for name in FLAGS
            if name != "max_vcpu_hours" and getattr(inputs, name, None) is not None
        ]
        if self.dry_run:
            given.append("dry_run")
        if given:
            other = FLAGS.get(given[0], "--" + given[0].replace("_", "-"))
            raise SpecError(
                f"{flag} starts a run with the pipeline's defaults, as the deployed trigger does; "
                f"drop {other}"
            )


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
        help="this machine, with no AWS account: the local services (python -m pipeline.local "
        "serve) with the pipeline deployed on them",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    parser = _Parser(
        prog=SCRIPT if Path(sys.argv[0]).name == SCRIPT else PROG,
        description="Submit, watch, cancel, resume, report on and diagnose runs of the array-job "
        "pipeline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=_Parser
    )

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common],
            help=help_,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = command("run", "submit a run (the default command)")
    _add_run_options(run)
    run.add_argument(
        "--dry-run", action="store_true", help="print the five requests; submit nothing"
    )
    run.add_argument("--run-id", help="run id to use (default: a new timestamped one)")
    run.add_argument(
        "--estimate-from",
        metavar="RUN_ID",
        help="predict the run's time and cost from the times per object a saved local run "
        "of the same steps measured",
    )
    run.add_argument(
        "--seconds-per-object",
        type=_positive,
        metavar="S",
        help="predict the run's time and cost from S seconds per object in each of JobB and JobC",
    )
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
        help="--local: make one attempt fail: exit:CODE, host-terminated, timeout or "
        "out-of-memory (e.g. JobB:3=exit:2); repeatable",
    )

    status = command(
        "status", "show a run's jobs; without RUN_ID, list the runs in the queue (newest first)"
    )
    status.add_argument("run_id", metavar="RUN_ID", nargs="?")
    status.add_argument(
        "--limit", type=_int, default=20, metavar="N", help="runs to list (default: 20)"
    )

    cancel = command("cancel", "cancel queued and terminate running jobs of a run")
    cancel.add_argument("run_id", metavar="RUN_ID")

    resume = command("resume", "re-submit a run from its first job that did not succeed")
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "--failed-only",
        action="store_true",
        help="re-run only the failed children of JobB/JobC (their successful outputs are kept), "
        "then JobD and JobE",
    )
    resume.add_argument(
        "--rejected",
        action="store_true",
        help="run the current steps again on the run's rejected objects only (those a step "
        "rejected), then bring its outputs, items, aggregate and summary up to date",
    )
    resume.add_argument("--output", metavar="DIR", help="--local: copy the run's outputs here")
    _add_run_options(resume, sizes=False)

    report = command(
        "report", "what a run did: timeline, child durations, failures, usage, estimated cost"
    )
    report.add_argument("run_id", metavar="RUN_ID")
    report.add_argument(
        "--html", metavar="FILE", help="also write the report as one self-contained HTML page"
    )

    diagnose = command(
        "diagnose", "why a run's jobs wait in RUNNABLE: one line per likely reason, with what to do"
    )
    diagnose.add_argument("run_id", metavar="RUN_ID")

    logs = command("logs", "print a job's log: a standard job's, or an array child's")
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument(
        "job",
        metavar="JOB[:INDEX]",
        nargs="?",
        help="the job (JobA) or array child (JobB:3); without it, the run's jobs and how to "
        "name them",
    )
    logs.add_argument(
        "--follow", action="store_true", help="keep printing the log until the job ends"
    )
    logs.add_argument(
        "--poll-interval",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="with --follow: default: 10 (0.2 with --local)",
    )

    prune = command("prune", "--local: remove saved local runs (their folders and logs)")
    prune.add_argument("run_id", metavar="RUN_ID", nargs="*", help="these runs (default: none)")
    prune.add_argument(
        "--older-than",
        type=_positive,
        metavar="DAYS",
        help="every saved run last changed more than DAYS days ago",
    )
    return parser


def _add_run_options(parser: argparse.ArgumentParser, *, sizes: bool = True) -> None:
    if sizes:
        parser.add_argument(
            "--array-size",
            type=_size,
            metavar="N|auto",
            help="children of JobB and JobC: N exactly (2..10,000), or auto, the default: "
            "a child per --objects-per-child objects of the run's input, at most the deployed "
            "size (the stack's; 8 with --local)",
        )
        parser.add_argument(
            "--objects-per-child",
            type=_int,
            metavar="N",
            help="with --array-size auto: a child per N objects, to pay for each container's "
            f"start (default: {OBJECTS_PER_CHILD})",
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
    parser.add_argument(
        "--steps",
        metavar="MODULE:NAME",
        help="the PipelineSteps object the run runs: with --local, your steps; on AWS, checked "
        "against the deployed ones (default: the deployed pipeline's; the library's own with "
        "--local, or a resumed run's own)",
    )
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
        default=DEFAULT_DIAGNOSE_AFTER,
        metavar="SECONDS",
        help="with --watch: when a job has waited this long to be placed, say how to see why "
        "(default: 600)",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="default: 10 (0.2 with --local)",
    )


def _int(value: str) -> int:
    try:
        return int(value.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def _size(value: str) -> int | None:
    """An array size, or None for ``auto`` (sized to the input)."""
    if value.strip().lower() == "auto":
        return None
    try:
        return _int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number or auto") from None


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number above 0")
    return number


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("array-job-pipeline")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "(not installed)"


def parse(arguments: list[str]) -> Options:
    """Options from a command line; ``run`` is the default command."""
    first = arguments[0] if arguments else "-"
    if first not in COMMANDS and not first.startswith("-"):
        raise UsageError(f"unknown command {first!r}: give one of {', '.join(COMMANDS)}")
    if first not in (*COMMANDS, "-h", "--help", "--version"):
        arguments = ["run", *arguments]
    return Options.from_args(build_parser().parse_args(arguments))
