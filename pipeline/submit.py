"""Run the array-job pipeline: ``python -m pipeline.submit``.

    python -m pipeline.submit --stack ArrayJobPipeline --array-size 100 --watch
    python -m pipeline.submit --dry-run --json
    python -m pipeline.submit status RUN_ID --stack ArrayJobPipeline
    python -m pipeline.submit cancel RUN_ID --stack ArrayJobPipeline
    python -m pipeline.submit resume RUN_ID --stack ArrayJobPipeline --watch
    python -m pipeline.submit --local

The library API is :func:`pipeline.runs.submit_pipeline` and its neighbours; this module is the
command line on top: argument parsing, AWS sessions, progress output and exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any

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
    TargetError,
)
from pipeline.spec import DEFAULT_ARRAY_SIZE, DEFAULT_SPEC, SpecError, check_name_prefix
from pipeline.submission import RunConfig, Targets, dry_run_requests, run_config

COMMANDS = ("run", "status", "cancel", "resume")

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


def progress_printer(output: Output) -> Callable[[Sequence[Any]], None]:
    """A watch callback that prints a progress line whenever it changes, with elapsed time."""
    started = time.monotonic()
    last = ""

    def on_poll(progress: Sequence[Any]) -> None:
        nonlocal last
        line = format_progress(progress)
        if line != last:
            output.progress(f"[{time.monotonic() - started:5.0f}s] {line}")
            last = line

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


def _log_reader(aws: Aws, targets: Targets) -> Any:
    from pipeline.runs import cloudwatch_log_reader

    if aws.logs is None or not targets.log_group:
        return None
    return cloudwatch_log_reader(aws.logs, targets.log_group)


def progress_json(progress: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "job": p.key,
            "jobId": p.job_id,
            "status": p.status,
            "statusReason": p.status_reason,
            "arraySize": p.array_size,
            "children": dict(p.children),
        }
        for p in progress
    ]


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
        "--stack", help="PipelineStack name: queue and job definitions from its outputs"
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
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    parser = _Parser(
        prog="python -m pipeline.submit",
        description="Submit, watch, cancel and resume runs of the array-job pipeline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", metavar="{run,status,cancel,resume}", parser_class=_Parser
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
    run.add_argument(
        "--local",
        action="store_true",
        help="run the whole pipeline on this machine, with no AWS account",
    )
    run.add_argument("--input", metavar="DIR", help="--local: your files as BucketA's objects")
    run.add_argument("--output", metavar="DIR", help="--local: copy the run's outputs here")
    run.add_argument(
        "--inject",
        action="append",
        metavar="JOB[:INDEX]=FAULT",
        help="--local: make one attempt fail: exit:CODE, host-terminated or timeout "
        "(e.g. JobB:3=exit:2); repeatable",
    )
    run.set_defaults(handler=command_run)

    status = commands.add_parser("status", parents=[common], help="show a run's jobs")
    status.add_argument("run_id", metavar="RUN_ID")
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
    resume.add_argument(
        "--local",
        action="store_true",
        help="resume a failed local run saved on this machine (see --local of run)",
    )
    resume.add_argument("--output", metavar="DIR", help="--local: copy the run's outputs here")
    _add_run_options(resume, sizes=False)
    resume.set_defaults(handler=command_resume)
    return parser


def _add_run_options(parser: argparse.ArgumentParser, *, sizes: bool = True) -> None:
    if sizes:
        parser.add_argument(
            "--array-size",
            type=_int,
            help="children of JobB and JobC, 2..10,000 (default: the stack's, else 10,000; "
            "8 with --local)",
        )
    parser.add_argument("--source-bucket", metavar="S3_URL", help="JobE's SourceBucket parameter")
    parser.add_argument("--recipient", metavar="EMAIL", help="JobE's Recipient parameter")
    parser.add_argument("--watch", action="store_true", help="show progress until the run ends")
    parser.add_argument(
        "--max-vcpu-hours",
        type=float,
        metavar="N",
        help="refuse to submit if the run's worst case (children x vCPUs x timeout x attempts) "
        "exceeds N vCPU-hours",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=None, metavar="SECONDS", help="default: 10"
    )


def _int(value: str) -> int:
    try:
        return int(value.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


# --- AWS -----------------------------------------------------------------------------------


@dataclass
class Aws:
    batch: Any
    cloudformation: Any
    logs: Any = None


def connect(profile: str | None, region: str | None) -> Aws:
    """boto3 clients for the CLI, with retries suited to Batch's SubmitJob rate limit.

    Adaptive retry mode adds client-side rate limiting to standard mode's backoff, so a burst
    of TooManyRequestsException slows the submitter down instead of failing the run.
    ``AWS_ENDPOINT_URL`` is honoured by boto3 itself.
    """
    import boto3
    from botocore.config import Config
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
    batch_config = Config(
        retries={"mode": "adaptive", "max_attempts": 10},
        user_agent_extra="array-job-pipeline",
    )
    other_config = Config(retries={"mode": "standard", "max_attempts": 5})
    return Aws(
        batch=session.client("batch", config=batch_config),
        cloudformation=session.client("cloudformation", config=other_config),
        logs=session.client("logs", config=other_config),
    )


def resolve_targets(args: argparse.Namespace, aws: Aws | None) -> Targets:
    if args.stack:
        if aws is None:
            raise TargetError("--stack needs AWS access to read the stack's outputs")
        from pipeline.discovery import targets_from_stack

        targets = targets_from_stack(aws.cloudformation, args.stack)
        if args.queue:
            targets = replace(targets, queue=args.queue)
        return targets
    check_name_prefix(args.job_definition_prefix)
    return Targets.by_name(queue=args.queue, prefix=args.job_definition_prefix)


# --- commands ------------------------------------------------------------------------------


Connector = Callable[[str | None, str | None], Aws]


def command_run(args: argparse.Namespace, output: Output, connector: Connector) -> int:
    if args.local:
        from pipeline.local_run import run_local

        return run_local(args, output)
    from pipeline.preflight import check_cost, check_fit

    # Every input is checked before any AWS call.
    check_cost(_run_config(args, None).spec, args.max_vcpu_hours)
    check_name_prefix(args.job_definition_prefix)
    aws = None if args.dry_run and not args.stack else connector(args.profile, args.region)
    targets = resolve_targets(args, aws)
    config = _run_config(args, targets)
    check_cost(config.spec, args.max_vcpu_hours)  # the stack's default size may differ
    if args.dry_run:
        _print_dry_run(output, targets, config)
        return EXIT_OK
    assert aws is not None
    check_fit(config.spec, aws.batch, targets.queue)
    from pipeline.runs import submit_pipeline

    output.progress(
        f"run {config.run_id}: submitting {len(config.spec.jobs)} jobs to {targets.queue}"
    )
    run = submit_pipeline(
        aws.batch,
        targets,
        config,
        on_submitted=lambda job: output.progress(f"  {job.key:<5} submitted {job.job_id}"),
    )
    return _after_submit(args, output, aws, run, targets)


def _run_config(
    args: argparse.Namespace,
    targets: Targets | None,
    *,
    array_size: int | None = None,
    previous_parameters: dict[str, str] | None = None,
) -> RunConfig:
    """The run's inputs: flags first, then what an earlier attempt of the run used, then the
    stack's defaults (its array size, its output bucket as SourceBucket)."""
    previous = previous_parameters or {}
    size = getattr(args, "array_size", None)
    if size is None:
        size = array_size or (targets.default_array_size if targets else None)
    source = args.source_bucket or previous.get("SourceBucket")
    if source is None and targets is not None and targets.output_bucket:
        source = f"s3://{targets.output_bucket}"
    return run_config(
        array_size=DEFAULT_ARRAY_SIZE if size is None else size,
        run_id=getattr(args, "run_id", None),
        source_bucket=source,
        recipient=args.recipient or previous.get("Recipient") or None,
    )


def _print_dry_run(output: Output, targets: Targets, config: RunConfig) -> None:
    from pipeline.preflight import format_costs, worst_case

    output.progress("\n".join(format_costs(worst_case(config.spec))))
    requests = dry_run_requests(targets, config)
    if output.as_json:
        output.result("", requests)
        return
    for request in requests:
        print(json.dumps(request, indent=2), file=output.out)


def _after_submit(
    args: argparse.Namespace, output: Output, aws: Aws, run: Any, targets: Targets
) -> int:
    data = {"runId": run.run_id, "jobs": [{"job": j.key, "jobId": j.job_id} for j in run.jobs]}
    where = f"--stack {args.stack}" if args.stack else f"--queue {targets.queue}"
    if not args.watch:
        output.result(
            f"submitted run {run.run_id}\nfollow it with: python -m pipeline.submit status "
            f"{run.run_id} {where}",
            data,
        )
        return EXIT_OK
    return _watch(args, output, aws, run, data, where, targets)


def _watch(
    args: argparse.Namespace,
    output: Output,
    aws: Aws,
    run: Any,
    data: dict[str, Any],
    where: str,
    targets: Targets,
) -> int:
    from pipeline.runs import failure_report, watch

    interval = args.poll_interval if args.poll_interval is not None else 10.0
    result = watch(aws.batch, run, interval=interval, on_poll=progress_printer(output))
    data["status"] = "SUCCEEDED" if result.succeeded else "FAILED"
    data["progress"] = progress_json(result.progress)
    if result.succeeded:
        output.result(f"run {run.run_id} succeeded", data)
        return EXIT_OK
    assert result.failure is not None
    data["failure"] = {
        "job": result.failure.job_key,
        "jobId": result.failure.job_id,
        "arrayIndex": result.failure.child_index,
        "statusReason": result.failure.status_reason,
        "exitCode": result.failure.exit_code,
        "logStream": result.failure.log_stream,
    }
    groups = failure_report(aws.batch, result.progress, read_log=_log_reader(aws, targets))
    data["failures"] = [g.as_json() for g in groups]
    if output.as_json:
        output.result("", data)
    else:
        output.progress("failure report:\n" + "\n".join(format_report(groups)))
    raise JobFailedError(
        f"run {run.run_id} failed: {result.failure.describe()}; "
        f"stop what is left with `python -m pipeline.submit cancel {run.run_id} {where}`"
    )


def command_status(args: argparse.Namespace, output: Output, connector: Connector) -> int:
    from pipeline.runs import failure_report, find_run, first_failure

    aws = connector(args.profile, args.region)
    targets = resolve_targets(args, aws)
    run = find_run(aws.batch, targets.queue, args.run_id, DEFAULT_SPEC)
    progress = [run[j.key] for j in DEFAULT_SPEC if j.key in run]
    failure = first_failure(aws.batch, progress)
    groups = failure_report(aws.batch, progress, read_log=_log_reader(aws, targets))
    lines = [f"run {args.run_id}"]
    for p in progress:
        lines.append(f"  {p.key:<5} {p.job_id}  {format_progress([p]).split(' ', 1)[1]}")
    if failure:
        lines.append(f"first failure: {failure.describe()}")
        lines += ["failure report:", *format_report(groups)]
    data = {
        "runId": args.run_id,
        "progress": progress_json(progress),
        "failure": failure.describe() if failure else None,
        "failures": [g.as_json() for g in groups],
    }
    output.result("\n".join(lines), data)
    return EXIT_OK


def command_cancel(args: argparse.Namespace, output: Output, connector: Connector) -> int:
    from pipeline.runs import find_run, stop

    aws = connector(args.profile, args.region)
    targets = resolve_targets(args, aws)
    run = find_run(aws.batch, targets.queue, args.run_id, DEFAULT_SPEC)
    actions = stop(aws.batch, list(run.values()), f"cancelled by user: run {args.run_id}")
    text = (
        "\n".join(f"{key}: {action}" for key, action in actions)
        if actions
        else f"run {args.run_id} has no active jobs"
    )
    output.result(text, {"runId": args.run_id, "actions": dict(actions)})
    return EXIT_OK


def command_resume(args: argparse.Namespace, output: Output, connector: Connector) -> int:
    if args.local:
        from pipeline.local_run import resume_local

        return resume_local(args, output)
    from pipeline.preflight import check_cost, check_fit
    from pipeline.runs import find_run, plan_resume, submit_pipeline

    aws = connector(args.profile, args.region)
    targets = resolve_targets(args, aws)
    run = find_run(aws.batch, targets.queue, args.run_id, DEFAULT_SPEC)
    plan = plan_resume(aws.batch, run, DEFAULT_SPEC, failed_only=args.failed_only)
    config = _run_config(
        args, targets, array_size=plan.array_size, previous_parameters=plan.parameters
    )
    check_cost(config.spec, args.max_vcpu_hours)
    check_fit(config.spec, aws.batch, targets.queue)
    output.progress(f"run {args.run_id}: {plan.describe()}")
    resumed = submit_pipeline(
        aws.batch,
        targets,
        config,
        reuse=plan.keep,
        reruns=plan.reruns,
        on_submitted=lambda job: output.progress(f"  {job.key:<5} submitted {job.job_id}"),
    )
    return _after_submit(args, output, aws, resumed, targets)


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


if __name__ == "__main__":
    sys.exit(main())
