"""What a local run leaves when it ends, read through the local services before they stop:
its summary and the SNS message (or the failure notifications), copies of its outputs under
``--output``, and where its folder and logs are."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline import contract
from pipeline.failure_events import RUN_ID_PLACEHOLDER
from pipeline.local.deployment import FAILURES_QUEUE, NOTIFICATIONS_QUEUE
from pipeline.local.run_folder import RunFolder, write_json
from pipeline.runs.progress import SubmittedRun, leaf_attempts

if TYPE_CHECKING:
    from pipeline.document import PipelineDocument
    from pipeline.runs.api import BatchApi
    from pipeline.runs.engine import RunOutcome


class FinishedRun(Protocol):
    """What a local run's end reads, and writes, through the local services."""

    @property
    def batch(self) -> BatchApi: ...

    @property
    def document(self) -> PipelineDocument: ...

    @property
    def run_dir(self) -> Path | None: ...

    @property
    def clients(self) -> Mapping[str, Any]: ...

    @property
    def endpoint(self) -> str: ...

    @property
    def not_seeded(self) -> Mapping[str, str]: ...

    @property
    def output_dir(self) -> Path | None: ...


def finish_local(
    session: FinishedRun, run: SubmittedRun, outcome: RunOutcome
) -> tuple[RunOutcome, list[str]]:
    from dataclasses import replace

    assert session.run_dir is not None
    attempts = leaf_attempts(session.batch, run.jobs)
    retries = {
        key: [a.get("statusReason") or "no reason" for leaf in leaves for a in leaf[:-1]]
        for key, leaves in attempts.items()
    }
    retries = {key: reasons for key, reasons in retries.items() if reasons}
    folder = RunFolder(session.run_dir)
    local: dict[str, Any] = {
        "attempts": {key: sum(len(leaf) for leaf in leaves) for key, leaves in attempts.items()},
        "retries": retries,
        "notSeeded": dict(session.not_seeded),
        "savedTo": str(folder.path),
        "logs": str(folder.logs),
    }
    lines = [
        f"{job}: {count} attempt{'s' * (count > 1)} retried ({reason})"
        for job, reasons in retries.items()
        for reason, count in sorted(Counter(reasons).items())
    ]
    lines += [f"not seeded: {name}: {reason}" for name, reason in local["notSeeded"].items()]
    if not outcome.succeeded:
        notices = [
            text.replace(f"status {RUN_ID_PLACEHOLDER}", f"status {run.run_id}")
            for text in _messages(session, FAILURES_QUEUE)
        ]
        local.update(notifications=notices)
        lines += [f"failure notification: {n}" for n in notices]
        lines += ["", f"logs of every attempt: {folder.logs}", f"run saved in {folder.path}"]
        return replace(outcome, local=local), lines
    summary = _summary(session, run.run_id)
    kept = folder.summary_file
    write_json(kept, summary)
    copied = None
    if session.output_dir is not None:
        copied = str(_copy_outputs(session, run.run_id, session.output_dir))
        kept = Path(copied) / "summary.json"
    # JobE's link points at the services, which stop with this command: the summary's file
    # stands in for it.
    messages = [
        json.loads(_relinked(m, session.endpoint, kept))
        for m in _messages(session, NOTIFICATIONS_QUEUE)
    ]
    local.update(summary=summary, notifications=messages, copiedTo=copied)
    lines += _success_text(summary, messages, copied, folder.path)
    return replace(outcome, local=local), lines


def _messages(session: FinishedRun, queue: str) -> list[str]:
    """Every message waiting in ``queue`` (what the topic or the failure rule sent)."""
    sqs = session.clients["sqs"]
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    found: list[str] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return found
        for message in batch:
            body = message["Body"]
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body
            found.append(parsed if isinstance(parsed, str) else json.dumps(parsed))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _relinked(message: str, endpoint: str, summary: Path) -> str:
    """``message`` with every link to ``endpoint`` replaced by the summary's file URL."""
    import re

    if not endpoint:
        return message
    return re.sub(re.escape(endpoint) + r"[^\s\\\"]*", summary.resolve().as_uri(), message)


def _summary(session: FinishedRun, run_id: str) -> dict[str, Any]:
    bucket = session.document.resources["output_bucket"]
    body = session.clients["s3"].get_object(Bucket=bucket, Key=contract.summary_key(run_id))
    return dict(json.loads(body["Body"].read()))


def _copy_outputs(session: FinishedRun, run_id: str, target: Path) -> Path:
    """The run's report, summary and rejects (the output bucket's run folder) into
    ``target/RUN_ID``, and the memory step's outputs under ``outputs/``, each at its input's
    key (see :func:`output_paths`), with ``outputs.json`` mapping keys to files."""
    s3 = session.clients["s3"]
    prefix = contract.run_prefix(run_id)
    destination = target / run_id
    bucket = session.document.resources["output_bucket"]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            path = destination / obj["Key"][len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(path))
    outputs = _outputs_by_key(session, run_id)
    paths = output_paths(list(outputs))
    for key, relative in paths.items():
        path = destination / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(
            session.document.resources["memory_results_bucket"], outputs[key], str(path)
        )
    write_json(destination / "outputs.json", paths)
    return destination


def _outputs_by_key(session: FinishedRun, run_id: str) -> dict[str, str]:
    """Input key -> the BucketC key of its output, from the run's table items."""
    found: dict[str, str] = {}
    pages = (
        session.clients["dynamodb"]
        .get_paginator("query")
        .paginate(
            TableName=session.document.resources["metadata_table"],
            KeyConditionExpression="#run = :run",
            ExpressionAttributeNames={"#run": contract.TABLE_PARTITION_KEY},
            ExpressionAttributeValues={":run": {"S": run_id}},
        )
    )
    for page in pages:
        for item in page.get("Items", []):
            found[item[contract.TABLE_SORT_KEY]["S"]] = item["output_key"]["S"]
    return found


def output_paths(keys: list[str]) -> dict[str, str]:
    """Where each input's output goes under a run's copy: ``outputs/<key>`` when the key is a
    plain relative path that no other key's folder shadows; else
    ``outputs-by-digest/<digest of the key>`` (keys with ``..``, empty parts, a leading
    ``/``, a part too long for a file name, or a name that is also another key's folder)."""
    folders = {"/".join(k.split("/")[:n]) for k in keys for n in range(1, k.count("/") + 1)}

    def plain(key: str) -> bool:
        parts = key.split("/")
        return key not in folders and all(
            p not in ("", ".", "..") and "\0" not in p and len(p.encode()) <= 255 for p in parts
        )

    return {
        key: f"outputs/{key}" if plain(key) else f"outputs-by-digest/{contract.key_digest(key)}"
        for key in sorted(keys)
    }


def _success_text(
    summary: Mapping[str, Any], messages: list[dict[str, Any]], copied: str | None, folder: Path
) -> list[str]:
    objects = summary["objects"]
    lines = [
        f"{objects['listed']:,} input objects, {objects['processed']:,} processed, "
        f"{objects['rejected']:,} rejected, "
        f"{sum(c['passed'] for c in summary['checks'])}/{len(summary['checks'])} checks passed",
    ]
    aggregate = summary.get("aggregate")
    if aggregate:
        lines.append(f"aggregate ({aggregate['step']}): {json.dumps(aggregate['result'])}")
    for reason, count in summary.get("rejects_by_reason", {}).items():
        if reason.startswith("larger than the "):
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
        lines += ["", f"the run is kept in {folder} (add --output DIR for a copy of its outputs)"]
    return lines
