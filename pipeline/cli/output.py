"""What the command line prints: results on stdout (JSON with ``--json``), progress on stderr,
as the AWS CLI does, so ``... --json > result.json`` holds exactly the result."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.runs.engine import DryRun, RunOutcome
    from pipeline.runs.failures import FailureGroup
    from pipeline.runs.logs import BusyChild
    from pipeline.runs.progress import JobProgress, RunSummary
    from pipeline.runs.report import RunReport

Clock = Callable[[], float]


@dataclass
class Output:
    """Where the CLI writes: results to stdout (JSON with --json), progress to stderr."""

    as_json: bool
    out: IO[str]
    err: IO[str]

    def progress(self, text: str) -> None:
        # Progress is for a person: if nobody can be told any more (a closed terminal), the
        # command goes on and its exit code says how it ended.
        with contextlib.suppress(OSError, ValueError):
            print(printable(text), file=self.err, flush=True)

    def result(self, text: str, data: Any) -> None:
        if self.as_json:
            json.dump(data, self.out, indent=2, default=str)
            self.out.write("\n")
        else:
            print(printable(text), file=self.out)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (escape sequences that move the
    cursor, rewrite the title or colour what follows, carriage returns that overwrite a
    line) from a log, a key or a reason are written as escapes (``\\x1b``); newlines and
    tabs stay."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def format_progress(progress: Sequence[JobProgress]) -> str:
    """``JobA SUCCEEDED | JobB RUNNING 9,412/10,000 done, 3 failed | JobC PENDING | ...``"""
    parts = []
    for job in progress:
        text = f"{job.key} {job.shown_status}"
        if job.array_size:
            done = job.children.get("SUCCEEDED", 0) + job.children.get("FAILED", 0)
            text += f" {done:,}/{job.array_size:,} done"
            if job.children.get("FAILED"):
                text += f", {job.children['FAILED']:,} failed"
        parts.append(text)
    return " | ".join(parts)


def progress_printer(
    output: Output,
    *,
    every: float = 1.0,
    still_every: float = 4.0,
    clock: Clock = time.monotonic,
) -> Callable[[Sequence[JobProgress]], None]:
    """A watch callback that prints a progress line, with elapsed time, when a job's status
    changes, and when only children counts changed at most once every ``every`` seconds (a
    10,000-child run does not print 20,000 lines). A line that has not changed is printed
    again once ``still_every`` seconds have passed since the last (at the next poll), so a
    job that works long without a change is not a silence that looks like a hang."""
    started = clock()
    last_line = ""
    last_statuses: tuple[str, ...] = ()
    last_time = 0.0

    def on_poll(progress: Sequence[JobProgress]) -> None:
        nonlocal last_line, last_statuses, last_time
        line = format_progress(progress)
        statuses = tuple(p.shown_status for p in progress)
        now = clock()
        quiet = now - last_time
        if quiet < still_every and (
            line == last_line or (statuses == last_statuses and quiet < every)
        ):
            return
        output.progress(f"[{now - started:5.0f}s] {line}")
        last_line, last_statuses, last_time = line, statuses, now

    return on_poll


BUSY_LOOK_EVERY = 30.0
"""Seconds between two looks at which object long-running children are on (each look reads
a few logs)."""


def busy_hint(
    output: Output,
    look: Callable[[Sequence[JobProgress]], Sequence[BusyChild]],
    *,
    every: float = BUSY_LOOK_EVERY,
    clock: Clock = time.monotonic,
) -> Callable[[Sequence[JobProgress]], None]:
    """A watch callback that, at most every ``every`` seconds while children run, says once
    per child and object which object a child has been on for a minute or more (``look``
    finds them: see :func:`pipeline.runs.engine.busy`)."""
    told: set[tuple[str, str]] = set()
    last = [clock()]

    def check(progress: Sequence[JobProgress]) -> None:
        now = clock()
        running = any(p.children.get("RUNNING") for p in progress)
        if not running or now - last[0] < every:
            return
        last[0] = now
        for child in look(progress):
            if (child.name, child.key) not in told:
                told.add((child.name, child.key))
                output.progress(f"{child.describe(time.time())}, running")

    return check


def runnable_hint(
    output: Output, run_id: str, where: str, after_seconds: float, *, clock: Clock = time.monotonic
) -> Callable[[Sequence[JobProgress]], None]:
    """A watch callback that says, once per job, how to see why it has waited more than
    ``after_seconds`` to be placed (RUNNABLE, or an array with RUNNABLE children and none
    running: children that wait while others of theirs run wait for those, not to be
    placed)."""
    since: dict[str, float] = {}
    told: set[str] = set()

    def check(progress: Sequence[JobProgress]) -> None:
        now = clock()
        for job in progress:
            started = job.children.get("STARTING") or job.children.get("RUNNING")
            waiting = job.status == "RUNNABLE" or (
                bool(job.children.get("RUNNABLE")) and not started
            )
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


def format_failures(groups: Sequence[FailureGroup], run_id: str = "", where: str = "") -> list[str]:
    """The failure report: one block per group of children that failed the same way (the
    ``logs`` command that prints one's log, and its last lines), then one line for the jobs
    that never ran because of it."""
    lines = []
    for group in groups:
        if group.not_run:
            continue
        lines.append(f"  {group.describe()}")
        if run_id:
            command = f"python -m pipeline.submit logs {run_id} {group.log_name} {where}".rstrip()
            lines.append(f"    its log: `{command}`; last lines:")
        lines += [f"    | {line}" for line in group.log_tail]
    not_run = [group.where() for group in groups if group.not_run]
    if not_run:
        lines.append(f"  not run, as a job they depend on failed: {', '.join(not_run)}")
    return lines


def print_outcome(
    output: Output, outcome: RunOutcome, extra: Sequence[str] = (), where: str = ""
) -> None:
    """A watched run's end, a run's status: JSON, or text on stdout; ``where`` (the
    backend's flags) completes the ``logs`` commands it names."""
    if output.as_json:
        output.result("", outcome.as_json())
        return
    lines = [f"run {outcome.run_id} {outcome.status}"]
    if outcome.failure is not None:
        lines[0] += f": {outcome.failure.describe()}"
    for p in outcome.progress:
        lines.append(f"  {p.key:<5} {p.job_id}  {format_progress([p]).split(' ', 1)[1]}")
    now = time.time()
    lines += [f"  {busy.describe(now)}" for busy in outcome.busy]
    if extra:
        lines += ["", *extra]
    if outcome.failures:
        lines += [
            "",
            "failure report:",
            *format_failures(outcome.failures, outcome.run_id, where),
        ]
    output.result("\n".join(lines), None)


def print_runs(output: Output, runs: Sequence[RunSummary], where: str) -> None:
    """``status`` without a run id: a table like the AWS CLI's ``--output table``, newest
    first, or ``{"runs": [...]}`` with --json."""
    if output.as_json:
        output.result("", {"runs": [r.as_json() for r in runs]})
        return
    if not runs:
        kept = "" if where == "--local" else "; Batch keeps ended jobs for about 7 days"
        output.result(f"no runs ({where}{kept})", None)
        return
    rows = [("RUN ID", "STATUS", "SUBMITTED (UTC)", "STARTED BY", "INPUT")]
    for run in runs:
        when = datetime.fromtimestamp(run.created_at / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        prefix = "(whole bucket)" if not run.input_prefix else run.input_prefix
        rows.append((run.run_id, run.status, when, run.started_by, prefix))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False))
        + "  "
        + row[4]
        for row in rows
    ]
    output.result("\n".join(lines), None)


def print_dry_run(output: Output, dry_run: DryRun) -> None:
    from pipeline.runs.prediction import format_prediction
    from pipeline.runs.preflight import format_costs
    from pipeline.runs.sizing import format_sizing

    output.progress(f"steps: {dry_run.steps}")
    if dry_run.size is not None:
        output.progress(dry_run.size.describe())
    output.progress("\n".join(format_costs(dry_run.costs)))
    output.progress("\n".join(format_sizing(dry_run.capacity, dry_run.sizing)))
    if dry_run.prediction is not None:
        output.progress("\n".join(format_prediction(dry_run.prediction)))
    elif dry_run.no_prediction is not None:
        output.progress(f"no prediction: {dry_run.no_prediction}")
    if output.as_json:
        output.result("", dry_run.requests)
        return
    output.result("\n".join(json.dumps(request, indent=2) for request in dry_run.requests), None)


def format_run_report(report: RunReport) -> list[str]:
    """The report in a few lines for a terminal."""
    lines = [f"run {report.run_id}"]
    for job in report.jobs:
        runs = sorted(c.run_seconds for c in job.children if c.started_at)
        timing = (
            f"run p50 {runs[len(runs) // 2]:.1f} s, max {runs[-1]:.1f} s" if runs else "not run"
        )
        worst = report.worst_case.get(job.key, (0.0, 0.0))
        lines.append(
            f"  {job.label:<15} {len(job.children):>6,} job(s), {timing}, {job.failed:,} failed, "
            f"{job.retries:,} retried, {job.vcpu_hours:,.4f} vCPU-hours "
            f"(worst case {worst[0]:,.1f})"
        )
    if report.cost is not None:
        lines.append(f"estimated cost: ~${report.cost.usd:,.2f} ({report.cost.basis})")
    if report.prediction is not None:
        from pipeline.runs.prediction import format_prediction

        lines += ["", "on AWS, as the construct deploys it by default:"]
        lines += format_prediction(report.prediction)
    return lines
