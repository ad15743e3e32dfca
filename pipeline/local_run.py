"""``python -m pipeline.submit --local``: the whole pipeline on this machine, no AWS account.

S3, DynamoDB and SNS come from moto's server, started in this process on a free loopback
port and stopped at the end; the job programs run as subprocesses under :class:`LocalBatch`
and reach that server through ``AWS_ENDPOINT_URL`` with dummy credentials. The run is submitted
and watched by the same code that drives AWS Batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pipeline.errors import EXIT_JOB_FAILED, EXIT_OK, RunStateError
from pipeline.local import Fault, LocalBatch, LocalJobDefinition
from pipeline.notifications import failure_event_pattern, matches, render
from pipeline.runs import SubmittedRun
from pipeline.spec import (
    DEFAULT_SPEC,
    QUEUE_NAME,
    RESOURCES,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
    SpecError,
    run_prefix,
)
from pipeline.submission import RunConfig, Targets, run_config

if TYPE_CHECKING:
    from pipeline.submit import Output

LOCAL_ARRAY_SIZE = 8
LOCAL_SAMPLE_OBJECTS = 300
LOCAL_MAX_OBJECT_BYTES = 1024 * 1024
"""The local size limit, so the sample's oversize object is rejected as a real one would be."""
REGION = "us-east-1"
STACK = "arrayjobpipeline"

JOB_IMAGES_DIR = Path(__file__).resolve().parents[1] / "job_images"


def resource_names(stack: str = STACK) -> dict[str, str]:
    """Names for the local buckets, table and topic, derived from the stack name as
    CloudFormation derives the deployed ones (without its random suffix)."""
    return {r.key: f"{stack}-{r.key.replace('_', '-')}-local" for r in RESOURCES}


@dataclass
class LocalAws:
    """moto's server and the pipeline's resources on it."""

    endpoint: str
    names: dict[str, str]
    topic_arn: str
    queue_url: str
    clients: dict[str, Any]

    @property
    def resource_env(self) -> dict[str, str]:
        values = {**self.names, "notification_topic": self.topic_arn}
        return {r.env: values[r.key] for r in RESOURCES}

    def job_env(self) -> dict[str, str]:
        """What each job subprocess gets: this machine's environment with AWS pointed at the
        local server, the job programs importable as in the image, and the resources."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",
            AWS_DEFAULT_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONPATH=str(JOB_IMAGES_DIR),
            PIPELINE_MAX_OBJECT_BYTES=str(LOCAL_MAX_OBJECT_BYTES),
            **self.resource_env,
        )
        return env

    def seed(self, inputs: Mapping[str, bytes]) -> None:
        """Put the run's input objects into BucketA."""
        for key, body in inputs.items():
            self.clients["s3"].put_object(Bucket=self.names["input_bucket"], Key=key, Body=body)

    def notifications(self) -> list[dict[str, Any]]:
        sqs = self.clients["sqs"]
        response = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in response.get("Messages", [])]


@contextmanager
def local_aws() -> Iterator[LocalAws]:
    """Start moto's server on a free loopback port with the pipeline's resources; stop it at
    the end, whatever happens."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # it logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = ""
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        # moto keeps its state per process, not per server: start from nothing.
        _reset(endpoint)
        session = boto3.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION
        )
        clients: dict[str, Any] = {
            name: session.client(name, endpoint_url=endpoint)
            for name in ("s3", "dynamodb", "sns", "sqs")
        }
        names = resource_names()
        for key in ("input_bucket", "cpu_results_bucket", "memory_results_bucket", "output_bucket"):
            clients["s3"].create_bucket(Bucket=names[key])
        clients["dynamodb"].create_table(
            TableName=names["metadata_table"],
            KeySchema=[
                {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
                {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": TABLE_PARTITION_KEY, "AttributeType": "S"},
                {"AttributeName": TABLE_SORT_KEY, "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        topic_arn = clients["sns"].create_topic(Name=names["notification_topic"])["TopicArn"]
        # What an email subscriber would receive, captured through a queue.
        queue_url = clients["sqs"].create_queue(QueueName="notifications")["QueueUrl"]
        queue_arn = clients["sqs"].get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        clients["sns"].subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        yield LocalAws(endpoint, names, topic_arn, queue_url, clients)
    finally:
        if endpoint:
            with contextlib.suppress(OSError):
                _reset(endpoint)  # frees the run's objects in this process
        server.stop()


def _reset(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


ODD_KEYS = (
    "with space/file one.txt",
    "unicode/naïve café ✓.txt",
    "日本語/ファイル.txt",
    "symbols/a+b=c&d;e,f.txt",
    "deep/a/b/c/d/e/f.bin",
)
"""Keys a pipeline must handle: spaces, unicode, reserved URL characters, deep paths."""


@contextmanager
def local_pipeline(
    aws: LocalAws,
    config: RunConfig,
    *,
    log_dir: Path,
    faults: Mapping[tuple[str, int | None], Fault] | None = None,
    vcpu_budget: int | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[tuple[LocalBatch, Targets]]:
    """A LocalBatch holding the pipeline's five job definitions (from the spec, as the stack
    registers them), and the targets to submit to it."""
    definitions = LocalJobDefinition.from_spec(
        config.spec,
        environment=aws.job_env(),
        parameters={"SourceBucket": f"s3://{aws.names['output_bucket']}"},
    )
    targets = Targets(
        queue=QUEUE_NAME, job_definitions={j.key: j.definition_name for j in config.spec}
    )
    with LocalBatch(
        queue=QUEUE_NAME,
        definitions=definitions,
        environment=aws.job_env(),
        log_dir=log_dir,
        faults=faults,
        vcpu_budget=vcpu_budget,
        on_event=on_event,
    ) as batch:
        yield batch, targets


def sample_objects(
    count: int = LOCAL_SAMPLE_OBJECTS,
    *,
    max_object_bytes: int = LOCAL_MAX_OBJECT_BYTES,
    seed: int = 7,
) -> dict[str, bytes]:
    """A deterministic sample: text and random bytes of mixed sizes, keys with spaces and
    unicode, one empty object, one over the size limit, and a directory marker."""
    rng = random.Random(seed)
    words = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
    odd = (
        "with space/file one.txt",
        "unicode/naïve café ✓.txt",
        "日本語/ファイル.txt",
        "symbols/a+b=c&d;e,f.txt",
        "deep/a/b/c/d/e/f.bin",
    )
    objects: dict[str, bytes] = {}
    for number in range(max(count - len(odd) - 3, 0)):
        size = rng.choice((1, 200, 2_000, 20_000, 80_000))
        if number % 3:
            text = " ".join(rng.choice(words) for _ in range(size // 5 + 1))
            body = text.encode()[:size]
        else:
            body = rng.randbytes(size)
        objects[f"data/{number % 17:02d}/object-{number:05d}.dat"] = body
    for key in ODD_KEYS:
        objects[key] = f"contents of {key}\n".encode() * 3
    objects["empty/zero-bytes.txt"] = b""
    objects["big/oversize.bin"] = b"\x01" * (max_object_bytes + 1)
    objects["folder/"] = b""
    return objects


def read_input_dir(path: Path) -> dict[str, bytes]:
    if not path.is_dir():
        raise SpecError(f"--input {str(path)!r} is not a folder; name a folder of files to process")
    files = {
        str(f.relative_to(path).as_posix()): f.read_bytes()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }
    if not files:
        raise SpecError(f"--input {str(path)!r} has no files")
    return files


def parse_faults(specs: list[str] | None) -> dict[tuple[str, int | None], Fault]:
    """``JOB[:INDEX]=exit:CODE|host-terminated|timeout`` (see --inject)."""
    faults: dict[tuple[str, int | None], Fault] = {}
    keys = {j.key for j in DEFAULT_SPEC}
    for spec in specs or []:
        target, _, what = spec.partition("=")
        job, _, index = target.partition(":")
        if job not in keys or (index and not index.isdigit()) or not what:
            jobs = ", ".join(sorted(keys))
            raise SpecError(
                f"--inject {spec!r} must look like JobB:3=exit:2 (a job of {jobs}, an optional "
                "child index, and exit:CODE, host-terminated or timeout)"
            )
        try:
            faults[(job, int(index) if index else None)] = Fault.parse(what)
        except ValueError as error:
            raise SpecError(f"--inject {spec!r}: {error}") from None
    return faults


def run_local(args: argparse.Namespace, output: Output) -> int:
    """Seed BucketA, run A..E locally, show progress, print the notification and the link."""
    from pipeline.runs import submit_pipeline

    size = args.array_size if args.array_size is not None else LOCAL_ARRAY_SIZE
    config = run_config(
        array_size=size,
        run_id=args.run_id,
        source_bucket=args.source_bucket,
        recipient=args.recipient,
    )
    inputs = read_input_dir(Path(args.input)) if args.input else sample_objects()
    faults = parse_faults(getattr(args, "inject", None))
    output_dir = _output_dir(args)
    with _sigterm_as_interrupt(), local_aws() as aws:
        output.progress(f"local run {config.run_id}: moto server at {aws.endpoint}")
        aws.seed(inputs)
        output.progress(
            f"seeded BucketA ({aws.names['input_bucket']}) with {len(inputs):,} objects, "
            f"{sum(len(b) for b in inputs.values()):,} bytes"
        )
        with _LocalSession(aws, config, faults=faults) as session:
            run = submit_pipeline(session.batch, session.targets, config)
            return session.finish(run, output, output_dir)


def resume_local(args: argparse.Namespace, output: Output) -> int:
    """``resume RUN_ID --local``: restore a failed local run saved on this machine and resume
    it as on AWS (with ``--failed-only``, only the failed children of JobB and JobC)."""
    from pipeline.runs import find_run, plan_resume, submit_pipeline

    saved = state_dir(args.run_id)
    if not (saved / "jobs.json").exists():
        raise RunStateError(
            f"no saved local run {args.run_id!r} in {saved.parent}; a local run is saved there "
            "when it fails"
        )
    output_dir = _output_dir(args)
    with _sigterm_as_interrupt(), local_aws() as aws:
        output.progress(f"resuming local run {args.run_id}: moto server at {aws.endpoint}")
        restore_state(aws, saved)
        jobs = json.loads((saved / "jobs.json").read_text())
        with _LocalSession(aws, run_config(array_size=LOCAL_ARRAY_SIZE)) as session:
            session.batch.import_jobs(jobs)
            run = find_run(session.batch, QUEUE_NAME, args.run_id, DEFAULT_SPEC)
            plan = plan_resume(session.batch, run, DEFAULT_SPEC, failed_only=args.failed_only)
            config = run_config(
                array_size=plan.array_size or LOCAL_ARRAY_SIZE,
                run_id=args.run_id,
                source_bucket=args.source_bucket or plan.parameters.get("SourceBucket") or None,
                recipient=args.recipient or plan.parameters.get("Recipient") or None,
            )
            output.progress(plan.describe())
            resumed = submit_pipeline(
                session.batch, session.targets, config, reuse=plan.keep, reruns=plan.reruns
            )
            return session.finish(resumed, output, output_dir)


class _LocalSession:
    """A LocalBatch on the local AWS, its events and logs, and how a run there ends."""

    def __init__(
        self,
        aws: LocalAws,
        config: RunConfig,
        *,
        faults: Mapping[tuple[str, int | None], Fault] | None = None,
    ) -> None:
        self.aws = aws
        self.work = Path(tempfile.mkdtemp(prefix="array-pipeline-local-"))
        self.events: list[dict[str, Any]] = []
        self._pipeline = local_pipeline(
            aws, config, log_dir=self.work / "logs", faults=faults, on_event=self.events.append
        )

    def __enter__(self) -> _LocalSession:
        self.batch, self.targets = self._pipeline.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._pipeline.__exit__(*exc)

    def finish(self, run: SubmittedRun, output: Output, output_dir: Path | None) -> int:
        """Watch until every job has ended; report success (summary, notification, link) or
        failure (notification, failure report; the run is saved for ``resume --local``)."""
        from pipeline.runs import failure_report, watch
        from pipeline.submit import format_report, progress_json, progress_printer

        batch, aws = self.batch, self.aws
        output.progress(
            f"submitted {', '.join(f'{j.key} {j.job_id[:8]}' for j in run.jobs if not j.reused)} "
            f"to {QUEUE_NAME} (local, {batch.vcpu_budget} vCPUs)"
        )
        result = watch(batch, run, interval=0.2, on_poll=progress_printer(output), settle=True)
        data: dict[str, Any] = {
            "runId": run.run_id,
            "status": "SUCCEEDED" if result.succeeded else "FAILED",
            "jobs": [{"job": j.key, "jobId": j.job_id, "reused": j.reused} for j in run.jobs],
            "progress": progress_json(result.progress),
        }
        if not result.succeeded:
            assert result.failure is not None
            # What the stack's EventBridge rule would have sent to the topic.
            pattern = failure_event_pattern(batch.queue)
            notices = [render(e) for e in self.events if matches(pattern, e)]
            groups = failure_report(
                batch, result.progress, read_log=lambda job_id, _s: _tail(batch.log_path(job_id))
            )
            saved = save_state(aws, batch, run.run_id)
            data.update(
                failure=result.failure.describe(),
                notifications=notices,
                failures=[g.as_json() for g in groups],
                savedTo=str(saved),
            )
            output.result(
                "\n".join(
                    [
                        f"run {run.run_id} FAILED: {result.failure.describe()}",
                        "",
                        *(f"failure notification: {n}" for n in notices),
                        "",
                        "failure report:",
                        *format_report(groups),
                        "",
                        f"logs of every attempt: {self.work / 'logs'}",
                        f"run saved in {saved}; re-run what failed with:",
                        f"  python -m pipeline.submit resume {run.run_id} --failed-only --local",
                    ]
                ),
                data,
            )
            return EXIT_JOB_FAILED
        summary = _summary(aws, run.run_id)
        messages = aws.notifications()
        data["summary"] = summary
        data["notification"] = messages[0] if messages else None
        data["attempts"] = _attempt_counts(batch, run)
        if output_dir is not None:
            data["copiedTo"] = str(_copy_outputs(aws, run.run_id, output_dir))
        output.result(_success_text(run.run_id, summary, messages, data.get("copiedTo")), data)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(state_dir(run.run_id), ignore_errors=True)
        return EXIT_OK


def _attempt_counts(batch: LocalBatch, run: SubmittedRun) -> dict[str, int]:
    """How many job processes each job of the submission started (reused jobs: none)."""
    counts: dict[str, int] = {}
    for job in run.jobs:
        if job.reused:
            counts[job.key] = 0
            continue
        children = batch.list_jobs(arrayJobId=job.job_id)["jobSummaryList"]
        ids = [c["jobId"] for c in children] or [job.job_id]
        described = [
            d
            for i in range(0, len(ids), 100)
            for d in batch.describe_jobs(jobs=ids[i : i + 100])["jobs"]
        ]
        counts[job.key] = sum(len(d["attempts"]) for d in described)
    return counts


def _output_dir(args: argparse.Namespace) -> Path | None:
    output_dir = Path(args.output) if getattr(args, "output", None) else None
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise SpecError(f"--output {str(output_dir)!r} exists and is not a folder")
    return output_dir


# --- saved local runs --------------------------------------------------------------------------

STATE_DIR_ENV = "PIPELINE_LOCAL_STATE_DIR"


def state_dir(run_id: str) -> Path:
    """Where a failed local run is saved: $PIPELINE_LOCAL_STATE_DIR, else
    ~/.local/state/array-job-pipeline, then runs/<run-id>."""
    root = os.environ.get(STATE_DIR_ENV) or Path.home() / ".local/state/array-job-pipeline"
    return Path(root) / "runs" / run_id


def save_state(aws: LocalAws, batch: LocalBatch, run_id: str) -> Path:
    """The buckets' objects, the table's items and the queue's jobs, to resume the run later."""
    target = state_dir(run_id)
    shutil.rmtree(target, ignore_errors=True)
    (target / "objects").mkdir(parents=True)
    s3 = aws.clients["s3"]
    objects: list[dict[str, str]] = []
    for key in ("input_bucket", "cpu_results_bucket", "memory_results_bucket", "output_bucket"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=aws.names[key]):
            for obj in page.get("Contents", []):
                path = target / "objects" / str(len(objects))
                s3.download_file(aws.names[key], obj["Key"], str(path))
                objects.append({"bucket": key, "key": obj["Key"], "file": path.name})
    items = [
        item
        for page in aws.clients["dynamodb"]
        .get_paginator("scan")
        .paginate(TableName=aws.names["metadata_table"])
        for item in page["Items"]
    ]
    (target / "objects.json").write_text(json.dumps(objects))
    (target / "items.json").write_text(json.dumps(items))
    (target / "jobs.json").write_text(json.dumps(batch.export_jobs()))
    return target


def restore_state(aws: LocalAws, saved: Path) -> None:
    s3 = aws.clients["s3"]
    for obj in json.loads((saved / "objects.json").read_text()):
        s3.upload_file(str(saved / "objects" / obj["file"]), aws.names[obj["bucket"]], obj["key"])
    dynamodb = aws.clients["dynamodb"]
    items = json.loads((saved / "items.json").read_text())
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]
        dynamodb.batch_write_item(RequestItems={aws.names["metadata_table"]: requests})


def _summary(aws: LocalAws, run_id: str) -> dict[str, Any]:
    body = (
        aws.clients["s3"]
        .get_object(Bucket=aws.names["output_bucket"], Key=f"{run_prefix(run_id)}summary.json")[
            "Body"
        ]
        .read()
    )
    return dict(json.loads(body))


def _success_text(
    run_id: str, summary: Mapping[str, Any], messages: list[dict[str, Any]], copied: str | None
) -> str:
    objects = summary["objects"]
    lines = [
        f"run {run_id} SUCCEEDED: {objects['listed']:,} input objects, {objects['processed']:,} "
        f"processed, {objects['rejected']:,} rejected, "
        f"{sum(c['passed'] for c in summary['checks'])}/{len(summary['checks'])} checks passed",
    ]
    for message in messages:
        lines += ["", f"SNS notification: {message.get('Subject', '')}"]
        lines += [f"  {line}" for line in message["Message"].strip().splitlines()]
        attributes = message.get("MessageAttributes", {})
        if "Recipient" in attributes:
            lines.append(f"  (Recipient: {attributes['Recipient']['Value']})")
    if copied:
        lines += ["", f"report and outputs copied to {copied}"]
    else:
        lines += ["", "(the local server stops with this run: add --output DIR to keep the files)"]
    return "\n".join(lines)


def _copy_outputs(aws: LocalAws, run_id: str, target: Path) -> Path:
    s3 = aws.clients["s3"]
    destination = target / run_id
    for bucket_key in ("output_bucket", "memory_results_bucket"):
        bucket = aws.names[bucket_key]
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=run_prefix(run_id)):
            for obj in page.get("Contents", []):
                path = destination / obj["Key"][len(run_prefix(run_id)) :]
                path.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(path))
    return destination


def _tail(path: Path, lines: int = 15) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a local run like Ctrl-C: jobs are killed and the server stopped."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
