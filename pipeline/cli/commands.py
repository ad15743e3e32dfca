"""The commands of ``python -m pipeline.submit``: each is one path, whatever the backend (a
deployed pipeline, or this machine with ``--local``), that opens a session and calls the run
engine (:mod:`pipeline.runs.engine`) once."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from pipeline.backends.aws import AwsBackend, Connector, connect
from pipeline.backends.local import LocalBackend
from pipeline.cli import estimates
from pipeline.cli.logs import command_logs, logs_command
from pipeline.cli.output import (
    Output,
    busy_hint,
    format_run_report,
    print_dry_run,
    print_outcome,
    print_runs,
    printable,
    progress_printer,
    runnable_hint,
)
from pipeline.cli.parser import FLAGS, Options, UsageError, parse
from pipeline.errors import (
    EXIT_BAD_INPUT,
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_LOCAL,
    EXIT_OK,
    EXIT_SERVICE,
    JobFailedError,
    PipelineError,
    RunStateError,
    SpecError,
)
from pipeline.runs import engine
from pipeline.runs.progress import INTERRUPTED

if TYPE_CHECKING:
    from pipeline.backends import Backend, RunSession
    from pipeline.runs.progress import JobProgress, SubmittedJob, SubmittedRun


def make_backend(options: Options, output: Output, connector: Connector) -> Backend:
    if options.local:
        return LocalBackend(options.local_options, on_progress=output.progress)
    return AwsBackend(options.target, connector)


def command_run(options: Options, output: Output, backend: Backend) -> int:
    inputs = options.inputs.checked()
    backend.check_run(inputs, max_vcpu_hours=options.max_vcpu_hours)
    if options.dry_run:
        document, note = backend.dry_run_document()
        if note:
            output.progress(note)
        print_dry_run(output, estimates.dry_run(options, backend, document, inputs))
        return EXIT_OK
    run_id = backend.new_run_id(inputs)
    inputs = inputs.with_run_id(run_id)
    with backend.session(run_id=run_id, mode="new") as session:
        inputs = estimates.sized(options, session, inputs)
        config = session.plan(inputs, max_vcpu_hours=options.max_vcpu_hours)
        size = estimates.checked_size(options, config)
        run = session.start(
            config,
            on_submitted=_submitted(output, config.run_id, size),
            run_id_given=options.inputs.run_id is not None,
        )
        return _after_submit(options, output, backend, session, run)


def command_resume(options: Options, output: Output, backend: Backend) -> int:
    assert options.run_id is not None
    inputs = options.inputs.checked()
    with backend.session(run_id=options.run_id, mode="resume") as session:
        lost = session.outputs_lost(options.run_id)
        if lost and options.rejected:
            raise RunStateError(
                f"run {options.run_id}'s outputs are gone (its saved buckets and table are "
                f"missing), so its rejected objects cannot be told apart: resume it without "
                "--rejected to run it again from the start"
            )
        left = (
            engine.unfinished(session, session.document, options.run_id)
            if session.continues_interrupted(options.run_id) and not lost
            else None
        )
        if left is not None:
            # Its services stopped under it (killed, Ctrl-C): they go on where it stopped,
            # and what then did not succeed is submitted again, as for any run.
            output.progress(
                f"run {options.run_id}: going on where it stopped (attempts that were running "
                "were lost with their host, and are retried as their retry strategy says)"
            )
            outcome = _follow(options, output, backend, session, left)
            if outcome.succeeded:
                return _finished(output, backend, session, left, outcome)
        if lost:
            output.progress(
                f"run {options.run_id}: what its jobs wrote is gone (its saved buckets and "
                "table are missing): every job runs again"
            )
            if unended := engine.unfinished(session, session.document, options.run_id):
                engine.cancel(session, session.document, options.run_id)
                engine.follow(session, unended, interval=backend.default_poll_interval)
        resume = engine.plan_resume_run(
            session,
            session.document,
            options.run_id,
            inputs,
            failed_only=options.failed_only and not lost,
            max_vcpu_hours=options.max_vcpu_hours,
            from_start=lost,
            rejected=options.rejected,
        )
        what = "retrying its rejected objects: " if options.rejected else ""
        output.progress(f"run {options.run_id}: {what}{resume.plan.describe()}")
        run = session.start(
            resume.config, plan=resume.plan, on_submitted=_submitted(output, options.run_id)
        )
        return _after_submit(options, output, backend, session, run)


def _submitted(output: Output, run_id: str, size: str = "") -> Callable[[SubmittedJob], None]:
    """Says each job as it is submitted (after pre-flight passed), under a heading that
    says the run's ``size`` when given."""
    said: list[str] = []

    def say(job: SubmittedJob) -> None:
        if not said:
            output.progress(f"run {run_id}: submitting" + (f"; {size}" if size else ""))
        said.append(job.key)
        output.progress(f"  {job.key:<5} submitted {job.job_id}")

    return say


def _after_submit(
    options: Options, output: Output, backend: Backend, session: RunSession, run: SubmittedRun
) -> int:
    if not (options.watch or backend.always_watches):
        outcome = engine.submitted(run)
        output.result(
            f"submitted run {run.run_id}\nfollow it with: python -m pipeline.submit status "
            f"{run.run_id} {backend.where}\nread a job's log with: "
            f"{logs_command(run.run_id, backend.where)}",
            outcome.as_json(),
        )
        return EXIT_OK
    outcome = _follow(options, output, backend, session, run)
    return _finished(output, backend, session, run, outcome)


def _follow(
    options: Options, output: Output, backend: Backend, session: RunSession, run: SubmittedRun
) -> engine.RunOutcome:
    """Follow ``run`` to its end, printing its progress and, when jobs wait long to be
    placed, how to see why."""
    printer = progress_printer(output)
    hint = runnable_hint(output, run.run_id, backend.where, options.diagnose_after)
    busy = busy_hint(output, lambda p: engine.busy(session, session.document, p))

    def on_poll(progress: Sequence[JobProgress]) -> None:
        printer(progress)
        hint(progress)
        busy(progress)

    interval = options.poll_interval or backend.default_poll_interval
    return engine.follow(session, run, interval=interval, on_poll=on_poll)


def _finished(
    output: Output,
    backend: Backend,
    session: RunSession,
    run: SubmittedRun,
    outcome: engine.RunOutcome,
) -> int:
    """A followed run's end: what the backend adds, the outcome, and the exit code (a
    failure is :class:`JobFailedError` with the commands that go on from it)."""
    outcome, extra = session.finish(run, outcome)
    print_outcome(output, outcome, extra, backend.where)
    if outcome.succeeded:
        output.progress(f"read a job's log with `{logs_command(outcome.run_id, backend.where)}`")
        return EXIT_OK
    assert outcome.failure is not None
    failed = outcome.failure.log_name
    hints = [
        f"its log: `{logs_command(outcome.run_id, backend.where, failed)}`",
        f"re-run what failed with `python -m pipeline.submit resume {outcome.run_id} "
        f"--failed-only {backend.where}`",
    ]
    if any(p.is_active for p in outcome.progress):  # the rest goes on without this command
        hints.insert(
            0,
            f"stop what is left with `python -m pipeline.submit cancel {outcome.run_id} "
            f"{backend.where}`",
        )
    raise JobFailedError(
        f"run {outcome.run_id} failed: {outcome.failure.describe()}; " + "; ".join(hints)
    )


def command_status(options: Options, output: Output, backend: Backend) -> int:
    with backend.session(run_id=options.run_id) as session:
        if options.run_id is None:
            runs = [
                replace(run, status=INTERRUPTED)
                if run.is_active and session.interrupted(run.run_id)
                else run
                for run in engine.list_runs(session, session.document, limit=options.limit)
            ]
            print_runs(output, runs, backend.where)
            return EXIT_OK
        outcome = engine.status(session, session.document, options.run_id)
        for note in session.notes(options.run_id):
            output.progress(note)
        if outcome.status == "RUNNING" and session.interrupted(options.run_id):
            outcome = replace(outcome, status=INTERRUPTED)
            output.progress(
                f"run {options.run_id} was interrupted (its local services stopped); go on "
                f"with `python -m pipeline.submit resume {options.run_id} {backend.where}`"
            )
        print_outcome(output, outcome, where=backend.where)
    return EXIT_OK


def command_cancel(options: Options, output: Output, backend: Backend) -> int:
    assert options.run_id is not None
    with backend.session(run_id=options.run_id, mode="stop") as session:
        actions = engine.cancel(session, session.document, options.run_id)
    text = (
        "\n".join(f"{key}: {action}" for key, action in actions)
        if actions
        else f"run {options.run_id} has no active jobs"
    )
    output.result(text, {"runId": options.run_id, "actions": dict(actions)})
    return EXIT_OK


def command_report(options: Options, output: Output, backend: Backend) -> int:
    from pipeline.runs.report import collect, progress_reporter

    assert options.run_id is not None
    html_path = _html_path(options.html) if options.html else None
    with backend.session(run_id=options.run_id) as session:
        report = collect(
            session.batch,
            session.document,
            options.run_id,
            read_log=session.read_log,
            on_progress=progress_reporter(output.progress),
        )
        spec = session.document.spec
    if options.local:  # what the run measured, as a run of its input on AWS
        report = replace(report, prediction=estimates.local_prediction(options.run_id, spec))
    if html_path is not None:
        from pipeline.cli.report_html import render

        html_path.write_text(render(report), encoding="utf-8")
        output.progress(f"wrote {html_path}")
    output.result("\n".join(format_run_report(report)), report.as_json())
    return EXIT_OK


def _html_path(path: Path) -> Path:
    if path.is_dir():
        raise SpecError(f"--html {str(path)!r} is a folder; name a file, like report.html")
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        raise SpecError(f"--html {str(path)!r} cannot be written ({error.strerror})") from None
    return path


def command_diagnose(options: Options, output: Output, backend: Backend) -> int:
    from pipeline.runs.diagnose import diagnose

    assert options.run_id is not None
    with backend.session(run_id=options.run_id) as session:
        findings = diagnose(session.batch, session.document, options.run_id)
    text = "\n".join(f"{f.job}: {f.reason}; {f.action}" for f in findings) or (
        f"run {options.run_id} has no job waiting to be placed"
    )
    output.result(text, {"runId": options.run_id, "findings": [f.as_json() for f in findings]})
    return EXIT_OK


def command_prune(options: Options, output: Output, backend: Backend) -> int:
    """Remove saved local runs: those named, or those older than ``--older-than`` days."""
    from pipeline.backends.local import prune_runs

    removed = prune_runs(list(options.prune_ids), older_than_days=options.older_than_days)
    text = "\n".join(f"removed {run_id}" for run_id in removed) or "no saved local run removed"
    output.result(text, {"removed": removed})
    return EXIT_OK


COMMANDS: dict[str, Callable[[Options, Output, Backend], int]] = {
    "run": command_run,
    "status": command_status,
    "cancel": command_cancel,
    "resume": command_resume,
    "report": command_report,
    "diagnose": command_diagnose,
    "prune": command_prune,
    "logs": command_logs,
}


@contextlib.contextmanager
def _stops_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end a command like Ctrl-C: whatever it started
    is stopped on the way out. A command started to outlive its terminal (``nohup``, which
    ignores SIGHUP) keeps ignoring it."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    stops = [signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stops.append(signal.SIGHUP)
    previous = {n: signal.signal(n, interrupt) for n in stops}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def in_flags(error: Exception) -> str:
    """An engine message in the command line's words: each field it names, by its flag."""
    import re

    return re.sub(
        r"\b(" + "|".join(FLAGS) + r")\b", lambda m: FLAGS[m.group(1)], str(error)
    ).replace("the dry run", "--dry-run")


def _interrupted(command: str, *, local: bool) -> str:
    """What an interrupted command says: where a run it started is, and how to go on."""
    if command not in ("run", "resume"):
        return "interrupted"
    if local:  # the services stopped with the command: the run waits
        return (
            "interrupted: the run is kept; `python -m pipeline.submit status --local` shows "
            "it and how to resume it"
        )
    return (
        "interrupted: jobs already submitted go on in AWS Batch; `python -m pipeline.submit "
        "status` with the same --stack or --queue shows them"
    )


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

    err = stderr or sys.stderr

    def fail(message: str, code: int) -> int:
        # A terminal that was closed cannot be told: the exit code still says what happened.
        with contextlib.suppress(OSError, ValueError):
            print(f"error: {printable(message)}", file=err, flush=True)
        return code

    try:
        options = parse(list(sys.argv[1:] if argv is None else argv))
    except UsageError as error:
        return fail(str(error), EXIT_BAD_INPUT)
    except SpecError as error:
        return fail(in_flags(error), EXIT_BAD_INPUT)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK
    output = Output(options.json, stdout or sys.stdout, err)
    backend = make_backend(options, output, connector)
    try:
        with _stops_as_interrupts():
            return COMMANDS[options.command](options, output, backend)
    except SpecError as error:
        return fail(in_flags(error), EXIT_BAD_INPUT)
    except PipelineError as error:
        return fail(in_flags(error), error.exit_code)
    except NoCredentialsError:
        return fail(
            "no AWS credentials found; run `aws configure`, set AWS_PROFILE, or pass --profile; "
            "to try the pipeline without AWS, use --local",
            EXIT_CONFIG,
        )
    except ClientError as error:
        info = error.response.get("Error", {})
        return fail(
            f"{error.operation_name}: {info.get('Code')}: {info.get('Message')}", EXIT_SERVICE
        )
    except BotoCoreError as error:
        return fail(str(error), backend.unreachable_exit_code)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError, ValueError):  # the terminal may be gone (SIGHUP)
            print(_interrupted(options.command, local=options.local), file=err, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (`... --json | head`): end quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        import os

        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as error:  # the local state folder (a run's own files are said before)
        where = f"{error.filename}: " if error.filename else ""
        hint = ""
        said = str(error.strerror or error)
        if options.local and isinstance(error, PermissionError):
            hint = ": set PIPELINE_LOCAL_STATE_DIR to a folder of your own"
            said = said.replace(": name another state folder", "")
        return fail(f"{where}{said}{hint}", EXIT_LOCAL)
