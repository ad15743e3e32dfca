"""A run's report as one self-contained HTML page: a timeline, child durations, failures,
what the run used and an estimate of what it cost.

Hand-written SVG and inline CSS, no script: the page opens offline, and its
Content-Security-Policy (``default-src 'none'``) keeps a browser from fetching anything. A
plotting library would add megabytes and dependencies for five bar charts.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pipeline.runs.report import JobRecord, RunReport

WIDTH = 1100
LABEL = 90
ROW = 44
BINS = 160
MAX_MARKS = 300

Scale = Callable[[float], float]
"""Milliseconds since the epoch -> x in the timeline."""

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1160px;color:#1d2433;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5a6275}.note{color:#5a6275;font-size:13px;margin:4px 0 10px}
table{border-collapse:collapse;margin:6px 0}th,td{padding:4px 10px;text-align:right;
border-bottom:1px solid #e3e6ec}th:first-child,td:first-child{text-align:left}
th{background:#f4f6f9;font-weight:600}.estimate{font-style:italic}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e3e6ec;border-radius:8px;
padding:10px 14px;min-width:150px}.card b{display:block;font-size:20px}
.hists{display:flex;gap:18px;flex-wrap:wrap}.hist{border:1px solid #e3e6ec;border-radius:8px;
padding:8px 12px}.fail{color:#b42318}.ok{color:#067647}
svg text{font:12px system-ui,sans-serif;fill:#1d2433}
.wait{fill:#c7d2e5}.running{fill:#2f6fd6}.failed{fill:#d92d20}.retry{stroke:#f79009}
.failmark{stroke:#d92d20}.bar{fill:#2f6fd6}.axis{stroke:#9aa3b5}
pre{background:#f6f7f9;padding:8px;overflow-x:auto;font-size:12px}
"""


def render(report: RunReport) -> str:
    """The report as one HTML document."""
    failed = any(j.failed for j in report.jobs) or any(j.status == "FAILED" for j in report.jobs)
    status = "FAILED" if failed else "SUCCEEDED"
    seconds = (report.ended_at - report.started_at) / 1000
    cost = report.cost
    cards = [
        ("status", f'<span class="{"fail" if failed else "ok"}">{status}</span>'),
        ("wall time", _duration(seconds)),
        ("vCPU-hours used", f"{sum(j.vcpu_hours for j in report.jobs):,.3f}"),
        ("GiB-hours used", f"{sum(j.gib_hours for j in report.jobs):,.3f}"),
        (
            "estimated cost",
            f'<span class="estimate">~${cost.usd:,.2f}</span>' if cost else "n/a (no prices)",
        ),
        ("retried attempts", str(sum(j.retries for j in report.jobs))),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Run {_e(report.run_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Array job pipeline run {_e(report.run_id)}</h1>",
        f'<div class="meta">{_when(report.started_at)} to {_when(report.ended_at)}; '
        f"collected with {report.calls.get('describe_jobs', 0)} DescribeJobs and "
        f"{report.calls.get('list_jobs', 0)} ListJobs calls</div>",
        '<div class="cards">',
        *(f'<div class="card">{_e(name)}<b>{value}</b></div>' for name, value in cards),
        "</div>",
        "<h2>Timeline</h2>",
        '<div class="note">Each row is a job. Blank: waiting for the jobs it depends on '
        "(PENDING); light: ready and waiting to be placed (RUNNABLE, from the moment its "
        "dependencies ended); dark: running on an instance. Array rows show how many children "
        "waited and ran at each moment (height: share of the array). Red ticks: failed "
        "children; orange ticks: attempts that were retried.</div>",
        timeline_svg(report),
        "<h2>Child durations</h2>",
        '<div class="note">Run time per child (every attempt counted), and the slowest '
        "children.</div>",
        '<div class="hists">',
        *(histogram_block(job) for job in report.jobs if job.array_size),
        "</div>",
        "<h2>Failures</h2>",
        failures_block(report),
        "<h2>What it used</h2>",
        usage_block(report),
        "</body></html>",
    ]
    return "\n".join(parts)


def timeline_svg(report: RunReport) -> str:
    start, end = report.started_at, max(report.ended_at, report.started_at + 1)
    span = end - start
    plot = WIDTH - LABEL - 10
    height = ROW * len(report.jobs) + 30

    def x(ms: float) -> float:
        return LABEL + (ms - start) / span * plot

    out = [
        f'<svg id="timeline" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="timeline">'
    ]
    for row, job in enumerate(report.jobs):
        top = row * ROW + 4
        out.append(f'<g class="job-row" data-job="{_e(job.key)}">')
        out.append(f'<text x="4" y="{top + ROW / 2}">{_e(job.label)}</text>')
        if job.array_size:
            out += _array_bands(job, top, start, span)
        else:
            out += _standard_bars(job, top, x)
        out += _marks(job, top, x)
        out.append("</g>")
    axis_y = ROW * len(report.jobs) + 10
    out.append(f'<line class="axis" x1="{LABEL}" x2="{LABEL + plot}" y1="{axis_y}" y2="{axis_y}"/>')
    for tick in range(6):
        ms = start + span * tick / 5
        out.append(
            f'<text x="{x(ms):.1f}" y="{axis_y + 16}" text-anchor="middle">'
            f"{_duration((ms - start) / 1000)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _standard_bars(job: JobRecord, top: float, x: Scale) -> list[str]:
    scale = x
    (child,) = job.children
    bars = []
    first = child.first_started_at
    if first:
        ready = child.ready_at or child.created_at
        bars.append(_rect("wait", scale(ready), scale(first), top + 8, ROW - 16))
        end = child.stopped_at or first
        kind = "failed" if child.status == "FAILED" else "running"
        bars.append(_rect(kind, scale(first), scale(end), top + 8, ROW - 16))
    return bars  # a job that never started shows only its failure tick


def _array_bands(job: JobRecord, top: float, start: int, span: int) -> list[str]:
    """Children waiting and running per time bin, as stacked columns (O(children + bins))."""
    waiting = [0] * (BINS + 1)
    running = [0] * (BINS + 1)

    def add(counts: list[int], begin: float, finish: float) -> None:
        first = max(int((begin - start) / span * BINS), 0)
        last = min(int((finish - start) / span * BINS), BINS - 1)
        if last < first:
            return
        counts[first] += 1
        counts[last + 1] -= 1

    for child in job.children:
        first = child.first_started_at
        if first is None:
            continue
        add(waiting, child.ready_at or child.created_at, first)
        for attempt in child.attempts or ():
            add(running, attempt.started_at, attempt.stopped_at)
        if not child.attempts and child.stopped_at:
            add(running, first, child.stopped_at)
    size = job.array_size or 1
    band = ROW - 10
    width = (WIDTH - LABEL - 10) / BINS
    bars: list[str] = []
    open_wait = open_run = 0
    for b in range(BINS):
        open_wait += waiting[b]
        open_run += running[b]
        left = LABEL + b * width
        run_h = band * min(open_run / size, 1.0)
        wait_h = band * min(open_wait / size, 1.0 - open_run / size if open_run < size else 0)
        if run_h > 0:
            bars.append(_rect("running", left, left + width, top + 5 + band - run_h, run_h))
        if wait_h > 0:
            y = top + 5 + band - run_h - wait_h
            bars.append(_rect("wait", left, left + width, y, wait_h))
    return bars


def _marks(job: JobRecord, top: float, x: Scale) -> list[str]:
    scale = x
    marks = []
    failed = [c for c in job.children if c.status == "FAILED" and c.stopped_at]
    retried = [a for c in job.children for a in c.attempts[:-1]]
    for child in failed[:MAX_MARKS]:
        px = scale(child.stopped_at or 0)
        marks.append(
            f'<line class="failmark" x1="{px:.1f}" x2="{px:.1f}" y1="{top}" '
            f'y2="{top + ROW - 4}" stroke-width="2"/>'
        )
    for attempt in retried[:MAX_MARKS]:
        px = scale(attempt.stopped_at)
        marks.append(
            f'<line class="retry" x1="{px:.1f}" x2="{px:.1f}" y1="{top}" '
            f'y2="{top + 10}" stroke-width="2"/>'
        )
    return marks


def histogram_block(job: JobRecord) -> str:
    if not any(c.first_started_at for c in job.children):
        return (
            f'<div class="hist"><b>{_e(job.key)}</b> ({job.array_size:,} children): none ran '
            "(a job it depends on failed)</div>"
        )
    edges, counts = job.histogram()
    width, height = 360, 120
    peak = max(counts) or 1
    bar = width / len(counts)
    bars = "".join(
        f'<rect class="bar" x="{i * bar + 1:.1f}" y="{height - count / peak * (height - 16):.1f}" '
        f'width="{max(bar - 2, 1):.1f}" height="{count / peak * (height - 16):.1f}">'
        f"<title>{count} children, {edges[i]:.2f}-{edges[i + 1]:.2f} s</title></rect>"
        for i, count in enumerate(counts)
    )
    slowest = ", ".join(
        f"[{c.index}] {c.run_seconds:.2f} s" for c in job.slowest() if c.index is not None
    )
    return (
        f'<div class="hist"><b>{_e(job.key)}</b> ({job.array_size:,} children, '
        f"{edges[0]:.2f} to {edges[-1]:.2f} s)<br>"
        f'<svg class="histogram" data-job="{_e(job.key)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(job.key)} durations">'
        f"{bars}</svg><br>slowest: {_e(slowest) or 'none'}</div>"
    )


_NOT_RUN = "not run: a job it depends on failed"


def failures_block(report: RunReport) -> str:
    if not report.failures:
        return '<p class="ok">No job failed.</p>'
    rows = []
    for group in report.failures:
        tail = "\n".join(group.log_tail)
        rows.append(
            f"<tr><td>{_e(group.where())}</td><td>{group.count}</td>"
            f"<td>{'' if group.exit_code is None else group.exit_code}</td>"
            f'<td style="text-align:left">{_e(group.status_reason or "")}</td>'
            f'<td style="text-align:left">{_NOT_RUN if group.not_run else ""}'
            f"{f'<pre>{_e(tail)}</pre>' if tail else ''}</td></tr>"
        )
    return (
        '<table id="failures"><tr><th>where</th><th>failed</th><th>exit code</th>'
        '<th style="text-align:left">reason</th><th style="text-align:left">log excerpt</th>'
        "</tr>" + "".join(rows) + "</table>"
    )


def usage_block(report: RunReport) -> str:
    cost = report.cost
    rows = []
    for job in report.jobs:
        worst = report.worst_case.get(job.key, (0.0, 0.0))
        priced = ""
        if cost and job.key in cost.per_job:
            priced = f"~${cost.per_job[job.key]:,.2f} ({_e(cost.instance_types[job.key])})"
        rows.append(
            f"<tr><td>{_e(job.label)}</td><td>{len(job.children):,}</td>"
            f"<td>{job.vcpu_hours:,.4f}</td><td>{worst[0]:,.1f}</td>"
            f"<td>{job.gib_hours:,.4f}</td><td>{worst[1]:,.1f}</td>"
            f'<td class="estimate">{priced or "n/a"}</td></tr>'
        )
    basis = (
        f'<p class="note estimate">Cost is an estimate: {_e(cost.basis)}.</p>'
        if cost
        else '<p class="note">No cost estimate: the queue\'s instance types have no prices '
        "in pipeline/instances.py (an unmanaged or local environment).</p>"
    )
    return (
        '<table id="usage"><tr><th>job</th><th>children</th><th>vCPU-hours</th>'
        "<th>worst case</th><th>GiB-hours</th><th>worst case</th><th>estimated cost</th></tr>"
        + "".join(rows)
        + '</table><p class="note">Used: each child\'s time on an instance (start to stop, '
        "every attempt) times its vCPUs or GiB. Worst case: what --dry-run printed before the "
        "run (children x resources x timeout x attempts).</p>" + basis
    )


def _rect(kind: str, left: float, right: float, y: float, height: float) -> str:
    return (
        f'<rect class="{kind}" x="{left:.1f}" y="{y:.1f}" width="{max(right - left, 1):.1f}" '
        f'height="{height:.1f}"/>'
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


__all__: Sequence[str] = ["render"]
