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
from pipeline.runs.progress import find_run

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
        cursors: dict[int, Any] = {}
        printed: list[dict[str, Any]] = []
        _print_new(session, attempts, cursors, printed, output)
        interval = options.poll_interval or backend.default_poll_interval
        while options.follow and not ended:
            time.sleep(interval)
            attempts, ended = target_attempts(session.batch, target)
            _print_new(session, attempts, cursors, printed, output)
        if not attempts:
            output.progress(f"{options.job} of run {options.run_id} has not started: no log yet")
    if output.as_json:
        output.result("", {"runId": options.run_id, "job": options.job, "attempts": printed})
    return EXIT_OK


def _print_new(
    session: RunSession,
    attempts: list[AttemptLog],
    cursors: dict[int, Any],
    printed: list[dict[str, Any]],
    output: Output,
) -> None:
    """Each attempt's lines not printed yet, under its heading the first time."""
    for attempt in attempts:
        first = attempt.attempt not in cursors
        lines, cursors[attempt.attempt] = session.read_attempt(
            attempt, cursor=cursors.get(attempt.attempt)
        )
        if output.as_json:
            if first:
                printed.append({**attempt.as_json(), "lines": []})
            printed[attempt.attempt - 1]["lines"] += lines
            continue
        if first:
            print(attempt.heading(), file=output.out, flush=True)
        for line in lines:
            print(line, file=output.out, flush=True)


def _list_jobs(run_id: str, output: Output, backend: Backend, session: RunSession) -> int:
    """The run's jobs, each with how to name it."""
    run = find_run(session.batch, session.document.queue, run_id, session.document.spec)
    rows, lines = [], [f"run {run_id}: `{logs_command(run_id, backend.where)}` prints one:"]
    for job in session.document.spec:
        progress = run.get(job.key)
        if progress is None:
            continue
        failed = failed_children(session.batch, progress) if progress.array_size else []
        if progress.array_size:
            shown = f"{progress.array_size:,} children"
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
                "arraySize": progress.array_size,
                "failedIndices": failed,
            }
        )
    output.result("\n".join(lines), {"runId": run_id, "jobs": rows})
    return EXIT_OK
