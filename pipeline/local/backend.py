"""The local backend: what ``--local`` hands the run engine instead of AWS.

- its **document** (:func:`local_document`): the pipeline as a local "deployment" holds it,
  from the same spec the stack deploys, with the local resource names;
- its **sessions**: moto's server with the pipeline's resources (:mod:`.services`), seeded
  with the run's inputs (:mod:`.sample`) or a saved run's state (:mod:`.saved`), and a
  :class:`~pipeline.local.batch.LocalBatch` holding the document's job definitions.

Everything else, from the cost guard to the failure report, is the engine's, as on AWS.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.document import PipelineDocument
from pipeline.errors import RunStateError
from pipeline.local.batch import Fault, LocalBatch, LocalJobDefinition
from pipeline.local.saved import (
    restore_state,
    save_jobs,
    save_state,
    saved_jobs,
    saved_run_ids,
)
from pipeline.local.services import LocalAws, job_environment, local_aws, resource_names
from pipeline.notifications import failure_event_pattern, matches, render
from pipeline.runs.engine import RunOutcome
from pipeline.runs.progress import RunSummary, SubmittedRun, list_runs
from pipeline.spec import (
    DEFAULT_SPEC,
    QUEUE_NAME,
    RECIPIENT,
    SOURCE_BUCKET,
    PipelineSpec,
    SpecError,
    run_prefix,
)

LOCAL_ARRAY_SIZE = 8
"""The local document's array size (JobB and JobC children), where a stack's is 10,000."""


def local_document(array_size: int = LOCAL_ARRAY_SIZE) -> PipelineDocument:
    """The pipeline as the local backend deploys it: the spec's jobs and resources, the
    workflow's names, the local buckets, table and topic. Pure; no server needed."""
    names = resource_names()
    definitions = {j.key: j.definition_name for j in DEFAULT_SPEC}
    return PipelineDocument(
        queue=QUEUE_NAME,
        queue_name=QUEUE_NAME,
        job_definitions=definitions,
        definition_names=definitions,
        spec=DEFAULT_SPEC.with_array_size(array_size),
        parameters={"JobE": {SOURCE_BUCKET: f"s3://{names['output_bucket']}", RECIPIENT: ""}},
        resources=names,
        source="the local backend",
    )


@dataclass
class LocalSession:
    """An open local backend: the engine's :class:`~pipeline.runs.engine.Session`."""

    batch: LocalBatch
    aws: LocalAws | None
    work: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    settle: bool = True
    not_seeded: Mapping[str, str] = field(default_factory=dict)
    """Input files that could not become objects, with the reason (accounted for here)."""

    def read_log(self, job_id: str, _log_stream: str | None) -> list[str]:
        return _tail(self.batch.log_path(job_id))

    def finish(
        self, run: SubmittedRun, outcome: RunOutcome, output_dir: Path | None
    ) -> tuple[RunOutcome, list[str]]:
        """What only a local run has: on success the summary, the SNS message and copies of
        the outputs; on failure the notifications the stack's EventBridge rule would have sent
        and the saved run. Returns the outcome with its ``local`` part, and text lines."""
        assert self.aws is not None
        attempts = _attempts(self.batch, run)
        retries = _retries(attempts)
        local: dict[str, Any] = {
            "logs": str(self.work / "logs"),
            "attempts": _attempt_counts(attempts),
            "retries": retries,
            "notSeeded": dict(self.not_seeded),
        }
        lines: list[str] = [
            f"{job}: {count} attempt{'s' * (count > 1)} retried ({reason})"
            for job, reasons in retries.items()
            for reason, count in sorted(Counter(reasons).items())
        ]
        lines += [f"not seeded: {name}: {reason}" for name, reason in self.not_seeded.items()]
        if not outcome.succeeded:
            pattern = failure_event_pattern(self.batch.queue)
            # The rule's message suggests `status RUN_ID`; a local run is found with --local.
            notices = [
                render(e).replace("status RUN_ID", f"status {run.run_id} --local")
                for e in self.events
                if matches(pattern, e)
            ]
            saved = save_state(self.aws, self.batch, run.run_id)
            local.update(notifications=notices, savedTo=str(saved), logs=str(saved / "logs"))
            lines += [f"failure notification: {n}" for n in notices]
            lines += ["", f"logs of every attempt: {saved / 'logs'}", f"run saved in {saved}"]
            return _with_local(outcome, local), lines
        summary = _summary(self.aws, run.run_id)
        messages = self.aws.notifications()
        # The attempts' logs go with the working folder; a run that succeeded keeps its jobs.
        local.update(summary=summary, notifications=messages, logs=None)
        copied = None
        if output_dir is not None:
            copied = str(_copy_outputs(self.aws, run.run_id, output_dir))
        local["copiedTo"] = copied
        local["savedTo"] = str(save_jobs(self.batch, run.run_id))
        lines += _success_text(summary, messages, copied)
        return _with_local(outcome, local), lines


def _with_local(outcome: RunOutcome, local: dict[str, Any]) -> RunOutcome:
    return replace(outcome, local=local)


@dataclass
class LocalBackend:
    """``--local``: the engine's document and sessions on this machine."""

    faults: Mapping[tuple[str, int | None], Fault] = field(default_factory=dict)
    vcpu_budget: int | None = None

    def document(self) -> PipelineDocument:
        return local_document()

    @contextmanager
    def session(
        self,
        document: PipelineDocument,
        *,
        inputs: Mapping[str, bytes] | None = None,
        not_seeded: Mapping[str, str] | None = None,
        saved_run: str | None = None,
        services: bool = True,
    ) -> Iterator[LocalSession]:
        """Start the services (unless ``services`` is False: a saved run's status needs only
        its jobs), seed BucketA with ``inputs`` or restore ``saved_run``, and open a
        LocalBatch with the document's job definitions. Everything stops at the end."""
        with ExitStack() as stack:
            stack.enter_context(_sigterm_as_interrupt())
            aws = stack.enter_context(local_aws()) if services else None
            saved: Path | None = None
            records: list[dict[str, Any]] = []
            if saved_run is not None:
                saved, records = saved_jobs(saved_run)
                if aws is not None:
                    restore_state(aws, saved)
            elif aws is not None and inputs is not None:
                aws.seed(inputs)
            work = Path(tempfile.mkdtemp(prefix="array-pipeline-local-"))
            stack.callback(shutil.rmtree, work, True)
            events: list[dict[str, Any]] = []
            environment = job_environment(aws.endpoint if aws else "http://127.0.0.1:9")
            batch = stack.enter_context(
                LocalBatch(
                    queue=document.queue,
                    definitions=LocalJobDefinition.from_document(document),
                    environment=environment,
                    log_dir=(saved / "logs") if saved and not services else work / "logs",
                    faults=self.faults,
                    vcpu_budget=self.vcpu_budget,
                    on_event=events.append,
                    fork=services,  # a saved run's status or report runs nothing
                )
            )
            if records:
                batch.import_jobs(records)
            yield LocalSession(batch, aws, work, events, not_seeded=dict(not_seeded or {}))

    def saved_runs(self, document: PipelineDocument, *, limit: int | None) -> list[RunSummary]:
        """``status --local`` without a run id: the saved local runs, listed by the engine's
        own code from their jobs (as ``status`` lists a queue's runs on AWS)."""
        with (
            tempfile.TemporaryDirectory(prefix="array-pipeline-local-") as work,
            LocalBatch(
                queue=document.queue,
                definitions=LocalJobDefinition.from_document(document),
                log_dir=Path(work),
                fork=False,
            ) as batch,
        ):
            for run_id in saved_run_ids():
                batch.import_jobs(saved_jobs(run_id)[1])
            return list_runs(batch, document.queue, document.spec, limit=limit)


def refuse_cancel(run_id: str) -> RunStateError:
    return RunStateError(
        f"a local run lives only as long as its command; stop run {run_id} with Ctrl-C there "
        "(a failed one is saved: resume it with resume RUN_ID --local)"
    )


def parse_faults(
    specs: list[str] | None, spec: PipelineSpec = DEFAULT_SPEC
) -> dict[tuple[str, int | None], Fault]:
    """``JOB[:INDEX]=exit:CODE|host-terminated|timeout`` (see --inject); each must name a
    child that exists in ``spec`` (an index for array jobs only, below the array size)."""
    faults: dict[tuple[str, int | None], Fault] = {}
    keys = {j.key for j in spec}
    for text in specs or []:
        target, _, what = text.partition("=")
        job, _, index = target.partition(":")
        if job not in keys or (index and not index.isdigit()) or not what:
            jobs = ", ".join(sorted(keys))
            raise SpecError(
                f"--inject {text!r} must look like JobB:3=exit:2 (a job of {jobs}, an optional "
                "child index, and exit:CODE, host-terminated or timeout)"
            )
        size = spec.job(job).array_size
        if index and size is None:
            raise SpecError(f"--inject {text!r}: {job} is not an array job; drop ':{index}'")
        if index and size is not None and int(index) >= size:
            raise SpecError(
                f"--inject {text!r}: {job} has children 0 to {size - 1} in this run; "
                "pick one of them"
            )
        try:
            faults[(job, int(index) if index else None)] = Fault.parse(what)
        except ValueError as error:
            raise SpecError(f"--inject {text!r}: {error}") from None
    return faults


def _attempts(batch: LocalBatch, run: SubmittedRun) -> dict[str, list[list[Any]]]:
    """Job key -> the attempts of each of its job processes' leaves (reused jobs: none)."""
    found: dict[str, list[list[Any]]] = {}
    for job in run.jobs:
        found[job.key] = []
        if job.reused:
            continue
        children = batch.list_jobs(arrayJobId=job.job_id)["jobSummaryList"]
        ids = [c["jobId"] for c in children] or [job.job_id]
        for start in range(0, len(ids), 100):
            for described in batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]:
                found[job.key].append(list(described.get("attempts", [])))
    return found


def _attempt_counts(attempts: Mapping[str, list[list[Any]]]) -> dict[str, int]:
    """How many job processes each job of the submission started."""
    return {key: sum(len(leaf) for leaf in leaves) for key, leaves in attempts.items()}


def _retries(attempts: Mapping[str, list[list[Any]]]) -> dict[str, list[str]]:
    """Job key -> the reason of every attempt that was retried (a lost host, a pull failure)."""
    retried: dict[str, list[str]] = {}
    for key, leaves in attempts.items():
        for leaf in leaves:
            for attempt in leaf[:-1]:
                retried.setdefault(key, []).append(attempt.get("statusReason") or "no reason")
    return retried


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
    summary: Mapping[str, Any], messages: list[dict[str, Any]], copied: str | None
) -> list[str]:
    objects = summary["objects"]
    lines = [
        f"{objects['listed']:,} input objects, {objects['processed']:,} processed, "
        f"{objects['rejected']:,} rejected, "
        f"{sum(c['passed'] for c in summary['checks'])}/{len(summary['checks'])} checks passed",
    ]
    over = {
        reason: count
        for reason, count in summary.get("rejects_by_reason", {}).items()
        if reason.startswith("larger than the ")
    }
    for reason, count in over.items():
        limit = reason.removeprefix("larger than the ").removesuffix("-byte limit")
        lines.append(
            f"{count:,} rejected over the local limit of {limit} bytes; raise it with "
            "--max-object-bytes N"
        )
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
    return lines


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
