"""Two measurements of the job programs, on moto, in one run:

1. AWS requests per valid input object across JobA..JobE, running the programs' own ``main``
   (timing records included) over 1,000 small objects in 4 shards. Goal <= 4.5; the floor is
   about 4 (JobB's GET and PUT, JobC's GET and PUT per object).
2. JobB's throughput with 2 workers divided by its throughput with 1 worker, on the same
   CPU-heavy shard, side by side. Goal >= 1.7 on a 2-core machine.

    .venv/bin/python bench/jobs.py
    .venv/bin/python bench/jobs.py --objects 40 --heavy-objects 4   # a quick look
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
)

import boto3  # noqa: E402

from helpers.jobs_world import MAX_OBJECT_BYTES, World, jobs_world, sample_inputs  # noqa: E402
from pipeline import contract  # noqa: E402
from pipeline.batch_facts import ARRAY_INDEX_VARIABLE  # noqa: E402
from pipeline.jobs import job_a, job_b, job_c, job_d, job_e  # noqa: E402
from pipeline.spec import DEFAULT_SPEC  # noqa: E402


@contextmanager
def job_environment(world: World, key: str, index: int | None = None) -> Iterator[None]:
    """The environment ``key``'s definition gives its job (its step among it), for ``world``."""
    ctx = world.ctx
    values = {
        **DEFAULT_SPEC.environment_of(DEFAULT_SPEC.job(key)),
        contract.RUN_ID: ctx.run_id,
        contract.ARRAY_SIZE: str(ctx.array_size),
        contract.INPUT_BUCKET: ctx.input_bucket,
        contract.CPU_RESULTS_BUCKET: ctx.cpu_results_bucket,
        contract.MEMORY_RESULTS_BUCKET: ctx.memory_results_bucket,
        contract.OUTPUT_BUCKET: ctx.output_bucket,
        contract.METADATA_TABLE: ctx.metadata_table,
        contract.NOTIFICATION_TOPIC_ARN: ctx.notification_topic_arn,
        contract.MAX_OBJECT_BYTES: str(ctx.max_object_bytes),
    }
    if index is not None:
        values[ARRAY_INDEX_VARIABLE] = str(index)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def requests_per_object(objects: int) -> None:
    # The sample's valid objects only (no empty, oversize or directory entries).
    inputs = {
        k: v for k, v in sample_inputs(objects + 3).items() if v and len(v) <= MAX_OBJECT_BYTES
    }
    with jobs_world(array_size=4) as world:
        world.put_inputs(inputs)
        counts: Counter[str] = Counter()
        boto3.setup_default_session(region_name="us-east-1")
        assert boto3.DEFAULT_SESSION is not None
        boto3.DEFAULT_SESSION.events.register(
            "before-send", lambda event_name, **_: counts.update([event_name.split(".", 1)[1]])
        )
        steps: list[tuple[Any, str, int | None]] = [(job_a, "JobA", None)]
        steps += [(job_b, "JobB", i) for i in range(4)] + [(job_c, "JobC", i) for i in range(4)]
        steps += [(job_d, "JobD", k) for k in range(contract.VALIDATION_STEPS)]
        steps += [(job_e, "JobE", None)]
        for module, key, index in steps:
            with job_environment(world, key, index):
                code = module.main([]) if module is job_e else module.main()
            assert code == 0, module.__name__
    valid = len(inputs)
    total = sum(counts.values())
    print(f"requests per valid object, A..E over {valid:,} small objects in 4 shards:")
    print(f"  {total:,} requests: " + ", ".join(f"{k} {v:,}" for k, v in counts.most_common(8)))
    print(f"  ratio: {total / valid:.2f} requests per object (goal <= 4.5, floor about 4)")


def job_b_scaling(objects: int) -> None:
    # CPU-heavy shard: objects of 1.5 MB of mixed text, so compression dominates.
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"zeta"]
    body = b" ".join(words[(i * 7919) % 6] + str(i % 977).encode() for i in range(200_000))
    inputs = {f"heavy/{i:03d}.txt": body[i:] + body[:i] for i in range(objects)}
    timings: dict[int, list[float]] = {}
    with jobs_world(array_size=1) as world:
        world.ctx = type(world.ctx)(**{**world.ctx.__dict__, "max_object_bytes": 10**9})
        world.put_inputs(inputs)
        job_a.run(world.s3, world.ctx)
        job_b.run(world.s3, world.ctx, 0, workers=1)  # warm-up, unmeasured
        for workers in (1, 2, 1, 2):
            started = time.perf_counter()
            job_b.run(world.s3, world.ctx, 0, workers=workers)
            timings.setdefault(workers, []).append(time.perf_counter() - started)
    best = {w: min(t) for w, t in timings.items()}
    megabytes = sum(len(v) for v in inputs.values()) / 1e6
    print(f"JobB throughput on one shard of {len(inputs)} objects, {megabytes:.0f} MB:")
    for workers, seconds in best.items():
        print(f"  {workers} worker(s): {megabytes / seconds:.1f} MB/s (best of 2, {seconds:.2f} s)")
    print(
        f"  ratio 2 workers / 1 worker: {best[1] / best[2]:.2f} (goal >= 1.7 on 2 cores; "
        f"this machine has {os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000, help="small objects, A..E")
    parser.add_argument("--heavy-objects", type=int, default=24, help="JobB's 1.5 MB objects")
    parser.add_argument("--requests-only", action="store_true")
    args = parser.parse_args()
    if not args.requests_only:
        job_b_scaling(args.heavy_objects)
    requests_per_object(args.objects)
