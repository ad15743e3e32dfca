"""A user's input at local speed: many small files through the whole pipeline, beside one bare
boto3 loop of the same requests on the same local services, measured in one run.

For N one-line files (5,000 by default) this runs:

- **the pipeline**, as a user does: ``python -m pipeline.submit --local --input DIR
  --array-size 50 --output OUT --json``, timed from the command's start to its end, with
  the longest silence between two lines it wrote (seeding, the run, the copies back);
- **a bare loop** of the requests the pipeline makes per object, from one boto3 client in this
  process against ``python -m pipeline.local serve`` started the same way: PUT the input, GET
  it, PUT a result, GET it, PUT an output, put an item, GET the output (7 per object);
- **the services' cost per request**: their CPU seconds over the requests they answered during
  the bare loop (``/_pipeline/stats``), also in units of this machine's speed: the time of a
  fixed pure-Python loop measured in the same run, so figures from machines of different
  speeds compare.

``--hogs 2`` runs both again while two CPU-bound processes compete for the cores.
``--before PATH`` also runs the bare loop against the services of another checkout (``git
worktree add PATH COMMIT``), for the cost per request before and after a change; services
from before authentication ignore the signature.

What these hide: the bare loop is one client making one request at a time, the pipeline's
children make theirs side by side; the pipeline's requests per object are not exactly these
seven (JobA lists, JobD and JobE read the run back); and the pipeline's time includes
starting the services, seeding and the copies back, the loop's does not.

    python bench/inputs.py
    python bench/inputs.py --objects 200 --array-size 4 --hogs 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

REPO = Path(__file__).resolve().parent.parent
REQUESTS_PER_OBJECT = 7


def speed_unit() -> float:
    """Seconds this machine takes for a fixed pure-Python loop (the best of three): the unit
    the services' cost per request is also given in."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(1_000_000):
            total += number * number % 7
        best = min(best, time.perf_counter() - started)
    return best


@contextmanager
def hogs(count: int) -> Iterator[None]:
    """``count`` processes that keep a core busy each, until the block ends."""
    processes = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
            process.join()


def _spin() -> None:
    while True:
        pass


@dataclass
class Loop:
    seconds: float
    requests: int
    services_cpu: float

    @property
    def cpu_per_request(self) -> float:
        return self.services_cpu / self.requests


@contextmanager
def served(checkout: Path, state: Path) -> Iterator[dict[str, Any]]:
    """``serve --json`` from ``checkout`` on a fresh state folder; its handshake."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.local", "serve", "--json", f"--state-dir={state}"],
        cwd=checkout,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        yield json.loads(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(timeout=60)


def bare_loop(ready: dict[str, Any], bodies: list[bytes]) -> Loop:
    """The pipeline's requests per object, one at a time from one client."""
    credentials = ready.get("credentials") or {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    session = boto3.Session(
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        region_name=ready.get("region", "us-east-1"),
    )
    config = Config(retries={"max_attempts": 1})
    s3 = session.client("s3", endpoint_url=ready["endpoint"], config=config)
    dynamodb = session.client("dynamodb", endpoint_url=ready["endpoint"], config=config)
    for bucket in ("bench-in", "bench-mid", "bench-out"):
        s3.create_bucket(Bucket=bucket)
    dynamodb.create_table(
        TableName="bench",
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    before = _stats(ready)
    started = time.perf_counter()
    for number, body in enumerate(bodies):
        key = f"in/f{number:05d}.csv"
        s3.put_object(Bucket="bench-in", Key=key, Body=body)
        data = s3.get_object(Bucket="bench-in", Key=key)["Body"].read()
        s3.put_object(Bucket="bench-mid", Key=key, Body=data.upper())
        result = s3.get_object(Bucket="bench-mid", Key=key)["Body"].read()
        s3.put_object(Bucket="bench-out", Key=key, Body=result.lower())
        dynamodb.put_item(
            TableName="bench", Item={"key": {"S": key}, "bytes": {"N": str(len(result))}}
        )
        s3.get_object(Bucket="bench-out", Key=key)["Body"].read()
    seconds = time.perf_counter() - started
    after = _stats(ready)
    return Loop(
        seconds,
        int(after["requests"] - before["requests"]),
        after["cpu_seconds"] - before["cpu_seconds"],
    )


def _stats(ready: dict[str, Any]) -> dict[str, float]:
    from pipeline.local.sigv4 import signed_get

    credentials = ready.get("credentials")
    if credentials is None:  # services from before authentication
        import urllib.request

        with urllib.request.urlopen(ready["endpoint"] + "/_pipeline/stats", timeout=30) as answer:
            return dict(json.loads(answer.read()))
    return dict(signed_get(ready["endpoint"] + "/_pipeline/stats", credentials, ready["region"]))


@dataclass
class Pipeline:
    seconds: float
    longest_silence: float
    silent_before: str
    objects: dict[str, int]


def pipeline_run(inputs: Path, output: Path, state: Path, array_size: int) -> Pipeline:
    """The command a user runs, timed, with the longest gap between two lines it wrote."""
    command = [
        sys.executable,
        "-m",
        "pipeline.submit",
        "--local",
        "--input",
        str(inputs),
        "--array-size",
        str(array_size),
        "--output",
        str(output),
        "--json",
    ]
    env = {**os.environ, "PIPELINE_LOCAL_STATE_DIR": str(state)}
    started = last = time.perf_counter()
    longest, before = 0.0, ""
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    assert process.stdout is not None
    for line in process.stderr:
        now = time.perf_counter()
        if now - last > longest:
            longest, before = now - last, line.strip()
        last = now
    out = process.stdout.read()
    process.wait()
    seconds = time.perf_counter() - started
    if seconds - (last - started) > longest:
        longest, before = seconds - (last - started), "the command's end"
    if process.returncode != 0:
        raise SystemExit(f"the pipeline run failed ({process.returncode}): {out[-2000:]}")
    objects = json.loads(out)["local"]["summary"]["objects"]
    return Pipeline(seconds, longest, before[:80], objects)


def one_line_files(folder: Path, count: int) -> list[bytes]:
    bodies = [f"{number},value-{number}\n".encode() for number in range(count)]
    folder.mkdir()
    for number, body in enumerate(bodies):
        (folder / f"f{number:05d}.csv").write_bytes(body)
    return bodies


def measure(
    scratch: Path, inputs: Path, bodies: list[bytes], args: argparse.Namespace, tag: str
) -> tuple[Pipeline, Loop]:
    with served(REPO, scratch / f"loop-{tag}") as ready:
        loop = bare_loop(ready, bodies)
    run = pipeline_run(inputs, scratch / f"out-{tag}", scratch / f"state-{tag}", args.array_size)
    accounted = run.objects["processed"] + run.objects["rejected"]
    if run.objects["listed"] != len(bodies) or accounted != len(bodies):
        raise SystemExit(f"objects not all accounted for: {run.objects}")
    return run, loop


def report(label: str, run: Pipeline, loop: Loop, unit: float, objects: int) -> None:
    per_request = loop.seconds / loop.requests
    print(f"{label}:")
    print(
        f"  pipeline: {run.seconds:.1f} s ({1000 * run.seconds / objects:.1f} ms an object); "
        f"longest silence {run.longest_silence:.1f} s (before: {run.silent_before})"
    )
    print(
        f"  bare loop: {loop.seconds:.1f} s, {loop.requests:,} requests, "
        f"{1000 * per_request:.2f} ms a request"
    )
    print(f"  pipeline / bare loop: {run.seconds / loop.seconds:.2f}")
    print(
        f"  services' CPU per request: {1000 * loop.cpu_per_request:.3f} ms = "
        f"{loop.cpu_per_request / unit:.4f} units"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--array-size", type=int, default=50)
    parser.add_argument("--hogs", type=int, default=0, help="also measure with N CPU hogs")
    parser.add_argument("--before", type=Path, help="another checkout's services, for the loop")
    args = parser.parse_args()
    unit = speed_unit()
    print(
        f"{args.objects:,} one-line files, --array-size {args.array_size}, "
        f"{os.cpu_count()} cores; this machine's unit (a fixed Python loop): {unit:.3f} s"
    )
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        inputs = scratch / "in"
        bodies = one_line_files(inputs, args.objects)
        run, loop = measure(scratch, inputs, bodies, args, "quiet")
        report("quiet", run, loop, unit, args.objects)
        if args.hogs:
            with hogs(args.hogs):
                run, loop = measure(scratch, inputs, bodies, args, "loaded")
            report(f"with {args.hogs} CPU hogs", run, loop, unit, args.objects)
        if args.before:
            with served(args.before.resolve(), scratch / "loop-before") as ready:
                old = bare_loop(ready, bodies)
            with served(REPO, scratch / "loop-again") as ready:
                new = bare_loop(ready, bodies)
            print(
                f"services' CPU per request, {args.before} then this checkout: "
                f"{old.cpu_per_request / unit:.4f} and {new.cpu_per_request / unit:.4f} units; "
                f"ratio {new.cpu_per_request / old.cpu_per_request:.2f}; bare loop "
                f"{old.seconds:.1f} s and {new.seconds:.1f} s"
            )


if __name__ == "__main__":
    main()
