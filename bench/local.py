"""The local pipeline at two array sizes, measured side by side in one run.

For N = 8 and N = 1,000 (``--large 10000`` for the workflow's own size), this runs the whole
pipeline locally as ``python -m pipeline.submit --local --array-size N`` does (the local
services in their own process with the default 300-object sample, every attempt forked from
the fork server) and prints:

- wall time of each, from starting the services to the run's end, and their ratio;
- children per second at the larger size (JobB and JobC children, 2 x N jobs);
- the marginal cost of one child, (wall(large) - wall(small)) / (2 x (large - small)),
  beside a no-op job through the fork server and a bare fork, exit and wait;
- how long each job took, first start to last stop;
- the requests the services answered, per second, their CPU time as a share of one core, and
  the mean time a request spent in them (waiting for the interpreter lock included);
- a projection for N = 10,000 from the marginal cost.

The small size runs three times (before the large one and twice after), and its median run
is the baseline: a run of about ten seconds on a shared machine varies by a fifth from one
minute to the next, the long run much less in proportion.

What these hide: the marginal cost is everything a child costs (its fork, its requests to the
services, the scheduling around it, its share of JobD's and JobE's reads), not an overhead
figure; JobB's children run one at a time (each asks 32 vCPUs, more than this machine has,
so it gets all of it), so the JobB figure is a latency, not a throughput; and the projection
assumes a cost linear in N.

    python bench/local.py
    python bench/local.py --large 10000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.backends.local import LocalBackend
from pipeline.local.batch.processes import ForkServer, available_cores
from pipeline.local.deployment import REGION, job_environment
from pipeline.local.server import STATS_PATH
from pipeline.local.sigv4 import Credentials, signed_get
from pipeline.runs import engine
from pipeline.runs.requests import RunInputs, new_run_id


@dataclass
class Measured:
    array_size: int
    seconds: float
    requests: int
    server_seconds: float
    server_cpu: float
    jobs: dict[str, tuple[float, float]]
    """Job key -> (first start, last stop), seconds after the first job was created."""


def measure(array_size: int) -> Measured:
    """One local run, as the command line makes it, timed from starting the services."""
    backend = LocalBackend()
    run_id = new_run_id()
    started = time.monotonic()
    with backend.session(run_id=run_id, mode="new") as session:
        config = session.plan(RunInputs(array_size=array_size, run_id=run_id), max_vcpu_hours=None)
        run = session.start(config)
        outcome = engine.follow(session, run, interval=0.2)
        assert outcome.succeeded, outcome.failure
        seconds = time.monotonic() - started
        assert session.services is not None
        stats = signed_get(session.endpoint + STATS_PATH, session.services.credentials, REGION)
        jobs = _spans(session.batch, run.job_ids)
    return Measured(
        array_size,
        seconds,
        int(stats["requests"]),
        stats["seconds"],
        stats["cpu_seconds"],
        jobs,
    )


def _spans(batch: Any, job_ids: dict[str, str]) -> dict[str, tuple[float, float]]:
    described = batch.describe_jobs(jobs=list(job_ids.values()))["jobs"]
    origin = min(int(job["createdAt"]) for job in described)
    return {
        job["jobName"]: ((job["startedAt"] - origin) / 1000, (job["stoppedAt"] - origin) / 1000)
        for job in described
        if job.get("startedAt") and job.get("stoppedAt")
    }


def noop_job_seconds(count: int = 50) -> float:
    """One no-op job through the fork server, request to reported exit: the process
    machinery every child pays, without the scheduler around it."""
    with tempfile.TemporaryDirectory() as scratch:
        server = ForkServer(
            job_environment("http://127.0.0.1:9", Credentials.random().as_environment()),
            Path(scratch) / "fork-server.log",
            lambda: None,
        )
        try:
            total = 0.0
            for number in range(count + 1):
                started = time.monotonic()
                server.launch(
                    [sys.executable, "-c", "pass"], {}, Path(scratch) / f"{number}.log", []
                ).wait(60)
                if number:  # the first waits for the fork server's own start-up
                    total += time.monotonic() - started
            return total / count
        finally:
            server.close()


def bare_fork_seconds(count: int = 200) -> float:
    """Fork this process (the pipeline and boto3 loaded, like the fork server), exit at once
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
    cores = available_cores()
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
        f"the fork server: {noop * 1000:.1f} ms (a bare fork, exit and wait of a process this "
        f"size: {fork * 1000:.1f} ms)"
    )
    projected = small.seconds + per_child * 2 * (10_000 - small.array_size)
    print(f"  projected N = 10,000 (20,012 jobs): {projected / 60:.1f} min")


if __name__ == "__main__":
    main()
