"""``logs RUN_ID [JOB[:INDEX]] [--follow]``: a job's log, every attempt of it, from where
the backend keeps it (CloudWatch Logs on AWS, the run's folder on this machine); and the hint
every run's end gives to it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pipeline.cli.output import Output
from pipeline.errors import EXIT_OK
from pipeline.runs.logs import (
    AttemptLog,
    failed_children,
    log_target,
    target_attempts,
)
from pipeline.runs.progress import current_submissions, find_run_history

if TYPE_CHECKING:
    from pipeline.backends import Backend, RunSession
    from pipeline.cli.parser import Options


def logs_command(run_id: str, where: str, target: str = "JOB[:INDEX]") -> str:
    """The command that prints a job's log: ``python -m pipeline.submit logs RUN JobB:3 ...``."""
    return f"python -m pipeline.submit logs {run_id} {target} {where}".rstrip()


def command_logs(options: Options, output: Output, backend: Backend) -> int:
    assert options.run_id is not None
    with backend.session(run_id=options.run_id) as session:
        if options.job is None:
            return _list_jobs(options.run_id, output, backend, session)
        target = log_target(session.batch, session.document, options.run_id, options.job)
        attempts, ended = target_attempts(session.batch, target)
        cursors: dict[tuple[str, int], Any] = {}
        printed: dict[tuple[str, int], dict[str, Any]] = {}
        _print_new(session, attempts, cursors, printed, output)
        interval = options.poll_interval or backend.default_poll_interval
        while options.follow and not ended:
            time.sleep(interval)
            attempts, ended = target_attempts(session.batch, target)
            _print_new(session, attempts, cursors, printed, output)
        if not attempts:
            output.progress(f"{options.job} of run {options.run_id} has not started: no log yet")
    if output.as_json:
        attempts_json = list(printed.values())
        output.result("", {"runId": options.run_id, "job": options.job, "attempts": attempts_json})
    return EXIT_OK


def _print_new(
    session: RunSession,
    attempts: list[AttemptLog],
    cursors: dict[tuple[str, int], Any],
    printed: dict[tuple[str, int], dict[str, Any]],
    output: Output,
) -> None:
    """Each attempt's lines not printed yet, under its heading the first time. An attempt is
    known by its job and its number there: a child re-run by a resume has attempts in more
    than one job."""
    for attempt in attempts:
        known = (attempt.job_id, attempt.attempt)
        first = known not in cursors
        lines, cursors[known] = session.read_attempt(attempt, cursor=cursors.get(known))
        if output.as_json:
            if first:
                printed[known] = {**attempt.as_json(), "lines": []}
            printed[known]["lines"] += lines
            continue
        if first:
            print(attempt.heading(), file=output.out, flush=True)
        for line in lines:
            print(line, file=output.out, flush=True)


def _list_jobs(run_id: str, output: Output, backend: Backend, session: RunSession) -> int:
    """The run's jobs, each with how to name it."""
    run = find_run_history(session.batch, session.document.queue, run_id, session.document.spec)
    rows, lines = [], [f"run {run_id}: `{logs_command(run_id, backend.where)}` prints one:"]
    for job in session.document.spec:
        if job.key not in run:
            continue
        # A job resumed with --failed-only is still the array it was, its children named
        # as before (the re-run of a single child is a standard job of its own).
        submissions = current_submissions(run[job.key])
        size, progress = submissions[0].array_size, submissions[-1]
        failed = failed_children(session.batch, submissions) if size else []
        if size:
            shown = f"{size:,} children"
            if failed:
                shown += f", failed: {', '.join(map(str, failed))}"
            name = f"{job.key}:{failed[0]}" if failed else f"{job.key}:0"
        else:
            shown, name = progress.shown_status, job.key
        lines.append(f"  {job.key:<5} {shown:<40} {logs_command(run_id, backend.where, name)}")
        rows.append(
            {
                "job": job.key,
                "jobId": progress.job_id,
                "status": progress.shown_status,
                "arraySize": size,
                "failedIndices": failed,
            }
        )
    output.result("\n".join(lines), {"runId": run_id, "jobs": rows})
    return EXIT_OK
