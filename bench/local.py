"""The local engine at two array sizes, measured side by side in one run.

For N = 8 and N = 1,000 (``--large 10000`` for the workflow's own size), this runs the whole
pipeline locally, as ``python -m pipeline.submit --local --array-size N`` does (the embedded
services in their own process, the default 300-object sample, LocalBatch forking every attempt
from the pre-loaded launcher), and prints:

- wall time of each, from starting the services to the run's summary, and their ratio;
- children per second at the larger size (JobB and JobC children, 2 x N jobs);
- the marginal cost of one child, (wall(large) - wall(small)) / (2 x (large - small)),
  beside a no-op job through the launcher on this machine (a warm spare takes it: request,
  become the job, exit, exit reported) and a bare fork, exit and wait of a process as large;
- how long each job took, first start to last stop;
- the requests the embedded server answered (the first spare to warm up sends two; the ones
  after it copy pages instead, or send two each where they cannot), per second of wall time;
  its CPU time as a share of the wall time (100% is one core: it is one Python process, so one
  interpreter lock); and the mean time a request spent in it, waiting for that lock included;
- CPU seconds of this process (LocalBatch's scheduling and the watch loop) and of the
  processes it started (the server, the launcher and every job), against wall x cores;
- a projection for N = 10,000 from the marginal cost.

The small size runs three times (before the large one and twice after), and its median run
is the baseline: a run of about ten seconds on a shared machine varies by a fifth from one
minute to the next, the long run much less in proportion.

What these hide: the marginal cost is everything a child costs (its fork, its requests to the
embedded server, the scheduling around it, its share of JobD's and JobE's reads), not an
overhead figure; JobB's children run one at a time (each asks 32 vCPUs, more than this
machine has, so it gets all of it), so the JobB figure is a latency, not a throughput; and the
projection assumes a cost linear in N.

    python bench/local.py
    python bench/local.py --large 10000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.local.backend import LocalBackend
from pipeline.local.batch import _Launcher
from pipeline.local.sample import sample_objects
from pipeline.local.services import job_environment, server_stats
from pipeline.runs import engine


@dataclass
class Measured:
    array_size: int
    seconds: float
    requests: int
    server_seconds: float
    server_cpu: float
    own_cpu: float
    """CPU seconds of this process: LocalBatch's scheduling and the watch loop."""
    child_cpu: float
    """CPU seconds of the processes it started: the server, the launcher and every job."""
    jobs: dict[str, tuple[float, float]]
    """Job key -> (first start, last stop), seconds after the first job was created."""


def measure(array_size: int) -> Measured:
    """One local run, as the command line makes it, timed from starting the services."""
    backend = LocalBackend()
    document = backend.document()
    config = engine.plan_run(document, engine.RunInputs(array_size=array_size))
    started = time.monotonic()
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    with backend.session(document, inputs=sample_objects()) as session:
        run = engine.start(session, document, config)
        outcome = engine.follow(session, run, interval=0.2)
        assert outcome.succeeded, outcome.failure
        assert session.aws is not None
        stats = server_stats(session.aws.endpoint)
        seconds = time.monotonic() - started
        jobs = _spans(session.batch.export_jobs())
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Measured(
        array_size,
        seconds,
        int(stats["requests"]),
        stats["seconds"],
        stats["cpu_seconds"],
        _cpu(own_after) - _cpu(own),
        _cpu(children_after) - _cpu(children),
        jobs,
    )


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _spans(records: list[dict[str, object]]) -> dict[str, tuple[float, float]]:
    origin = min(int(str(r["created_at"])) for r in records)
    spans: dict[str, tuple[float, float]] = {}
    for record in records:
        leaves = list(record.get("children") or []) or [record]  # type: ignore[call-overload]
        starts = [int(leaf["started_at"]) for leaf in leaves if leaf.get("started_at")]
        stops = [int(leaf["stopped_at"]) for leaf in leaves if leaf.get("stopped_at")]
        if starts and stops:
            spans[str(record["name"])] = (
                (min(starts) - origin) / 1000,
                (max(stops) - origin) / 1000,
            )
    return spans


def noop_job_seconds(count: int = 50) -> float:
    """One no-op job through the pre-loaded launcher, request to reported exit, taken by a
    spare that has had time to warm up (as a job that starts after the one before it ended
    finds one): the process machinery every child pays, without the scheduler around it."""
    with tempfile.TemporaryDirectory() as scratch:
        launcher = _Launcher(job_environment("http://127.0.0.1:9"), Path(scratch), lambda: None)
        try:
            total = 0.0
            for number in range(count + 1):
                time.sleep(0.05)  # the spare that takes the next request is warm by then
                started = time.monotonic()
                launcher.launch(
                    [sys.executable, "-c", "pass"], {}, Path(scratch) / f"{number}.log", []
                ).wait(60)
                if number:  # the first waits for the launcher's own start-up
                    total += time.monotonic() - started
            return total / count
        finally:
            launcher.close()


def bare_fork_seconds(count: int = 200) -> float:
    """Fork this process (the pipeline and boto3 loaded, like the launcher), exit at once
    and reap: the operating system's share of a child, without any of ours."""
    started = time.monotonic()
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return (time.monotonic() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=8)
    parser.add_argument("--large", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        os.environ.setdefault("PIPELINE_LOCAL_STATE_DIR", state)
        # The small run is short, so a moment of this machine's noise is a large part of it:
        # it runs before and twice after the large one, and the median of the three is the
        # baseline (all three are printed).
        smalls = [measure(args.small)]
        large = measure(args.large)
        smalls += [measure(args.small), measure(args.small)]
    small = sorted(smalls, key=lambda m: m.seconds)[1]
    noop, fork = noop_job_seconds(), bare_fork_seconds()
    per_child = (large.seconds - small.seconds) / (2 * (args.large - args.small))
    cores = len(os.sched_getaffinity(0))
    print(
        f"local pipeline, default 300-object sample, {cores} cores; N = {args.small:,} ran "
        f"{', '.join(f'{m.seconds:.1f}' for m in smalls)} s (before and after N = "
        f"{args.large:,}), its median run is shown:"
    )
    print(f"  {'':<34}{f'N = {small.array_size:,}':>14}{f'N = {large.array_size:,}':>14}")
    rows: list[tuple[str, Callable[[Measured], str]]] = [
        ("wall, services start to summary", lambda m: f"{m.seconds:.1f} s"),
        ("server requests", lambda m: f"{m.requests:,}"),
        ("server requests per second", lambda m: f"{m.requests / m.seconds:.0f}"),
        ("server CPU (share of one core)", lambda m: f"{m.server_cpu / m.seconds:.0%}"),
        (
            "mean time a request is in it",
            lambda m: f"{1000 * m.server_seconds / m.requests:.1f} ms",
        ),
        ("CPU: scheduler + watch (this one)", lambda m: f"{m.own_cpu:.1f} s"),
        ("CPU: server, launcher and jobs", lambda m: f"{m.child_cpu:.1f} s"),
    ]
    for label, value in rows:
        print(f"  {label:<34}{value(small):>14}{value(large):>14}")
    for key in ("JobA", "JobB", "JobC", "JobD", "JobE"):
        spans = [m.jobs.get(key) for m in (small, large)]
        cells = [f"{s[1] - s[0]:.1f} s" if s else "-" for s in spans]
        print(f"  {key + ', first start to last stop':<34}{cells[0]:>14}{cells[1]:>14}")
    ratio = large.seconds / small.seconds
    print(f"  ratio N = {large.array_size:,} / N = {small.array_size:,}: {ratio:.2f}")
    rate = 2 * large.array_size / large.seconds
    print(f"  children per second at N = {large.array_size:,}: {rate:.1f}")
    print(
        f"  marginal cost per child: {per_child * 1000:.0f} ms, beside a no-op job through "
        f"the launcher: {noop * 1000:.1f} ms (a bare fork, exit and wait of a process this "
        f"size: {fork * 1000:.1f} ms)"
    )
    projected = small.seconds + per_child * 2 * (10_000 - small.array_size)
    print(f"  projected N = 10,000 (20,012 jobs): {projected / 60:.1f} min")


if __name__ == "__main__":
    main()
