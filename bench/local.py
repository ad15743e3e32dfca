"""The local engine's cost per child, measured side by side in one run.

For two array sizes (default 8 and 64; ``--large 1000`` or ``--large 10000`` for more), this
runs the whole pipeline locally (LocalBatch and the embedded moto server, the default
300-object sample) and prints:

- wall time of each, and their ratio;
- children per second at the larger size (JobB and JobC children, 2 x N jobs);
- the marginal cost of one child: (wall(large) - wall(small)) / (2 x (large - small)), beside
  the cost of forking a no-op child from the pre-loaded launcher on this machine;
- a projection for N = 10,000 from that marginal cost.

What these hide: the marginal cost includes everything a child does (its client creation,
its requests to the embedded server, its share of JobD's checks, which read every shard's
records), not only the scheduler's overhead; and the projection assumes that cost stays
linear in N, which JobD's per-check reads of every shard do not quite do.

    python bench/local.py
    python bench/local.py --large 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.local.backend import LocalBackend
from pipeline.local.batch import _Launcher
from pipeline.local.sample import sample_objects
from pipeline.local.services import job_environment
from pipeline.runs import engine


def wall_time(array_size: int) -> float:
    """Seconds from the first SubmitJob to the end of JobE, for one local run."""
    backend = LocalBackend()
    document = backend.document()
    config = engine.plan_run(document, engine.RunInputs(array_size=array_size))
    with backend.session(document, inputs=sample_objects()) as session:
        started = time.monotonic()
        run = engine.start(session, document, config)
        outcome = engine.follow(session, run, interval=0.2)
        elapsed = time.monotonic() - started
    assert outcome.succeeded, outcome.failure
    return elapsed


def noop_fork_seconds(count: int = 50) -> float:
    """One no-op child forked by the pre-loaded launcher, start to exit."""
    import sys

    with tempfile.TemporaryDirectory() as scratch:
        launcher = _Launcher(job_environment("http://127.0.0.1:9"), Path(scratch), lambda: None)
        try:
            launcher.launch(
                [sys.executable, "-c", "pass"], {}, Path(scratch) / "warm.log", []
            ).wait(60)
            started = time.monotonic()
            for number in range(count):
                launcher.launch(
                    [sys.executable, "-c", "pass"], {}, Path(scratch) / f"{number}.log", []
                ).wait(60)
            return (time.monotonic() - started) / count
        finally:
            launcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=8)
    parser.add_argument("--large", type=int, default=64)
    args = parser.parse_args()
    small, large = wall_time(args.small), wall_time(args.large)
    per_child = (large - small) / (2 * (args.large - args.small))
    fork = noop_fork_seconds()
    print("local pipeline (LocalBatch + embedded moto server), default 300-object sample:")
    print(f"  N = {args.small:>6,}: {small:7.1f} s")
    print(f"  N = {args.large:>6,}: {large:7.1f} s   ratio {large / small:.2f}")
    print(f"  children per second at N = {args.large:,}: {2 * args.large / large:.1f}")
    print(
        f"  marginal cost per child: {per_child * 1000:.0f} ms, beside a no-op fork of the "
        f"launcher: {fork * 1000:.0f} ms"
    )
    print(f"  projected N = 10,000 (20,012 jobs): {(small + per_child * 2 * 9_992) / 60:.0f} min")


if __name__ == "__main__":
    main()
