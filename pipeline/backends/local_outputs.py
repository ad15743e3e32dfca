"""What a local run leaves when it ends, read through the local services before they stop:
its summary and the SNS message (or the failure notifications), copies of its outputs under
``--output``, and where its folder and logs are."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline import contract
from pipeline.failure_events import RUN_ID_PLACEHOLDER
from pipeline.local.deployment import FAILURES_QUEUE, NOTIFICATIONS_QUEUE, REGION
from pipeline.local.objects import OBJECTS_PATH, batches, read_objects
from pipeline.local.run_folder import RunFolder, write_json
from pipeline.local.sigv4 import signed_request
from pipeline.runs.progress import SubmittedRun, leaf_attempts

if TYPE_CHECKING:
    from pipeline.document import PipelineDocument
    from pipeline.local.services_process import ServicesProcess
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

    @property
    def services(self) -> ServicesProcess | None: ...

    @property
    def on_progress(self) -> Callable[[str], None]: ...


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
    not_copied: dict[str, str] = {}
    if session.output_dir is not None:
        copied = str(_copy_outputs(session, run.run_id, session.output_dir, not_copied))
        kept = Path(copied) / "summary.json"
        local["notCopied"] = not_copied
        lines += [f"not copied: {key}: {why}" for key, why in not_copied.items()]
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
    """``message`` with every link to ``endpoint`` replaced by the summary's file URL, and
    the link's expiry (a presigned URL's) no longer said of a file that does not expire."""
    import re

    if not endpoint:
        return message
    relinked = re.sub(re.escape(endpoint) + r"[^\s\\\"]*", summary.resolve().as_uri(), message)
    return re.sub(
        r"\(link valid for up to \d+ h\): (file://)", r"(this machine's file): \1", relinked
    )


def _summary(session: FinishedRun, run_id: str) -> dict[str, Any]:
    bucket = session.document.resources["output_bucket"]
    body = session.clients["s3"].get_object(Bucket=bucket, Key=contract.summary_key(run_id))
    return dict(json.loads(body["Body"].read()))


def _copy_outputs(
    session: FinishedRun, run_id: str, target: Path, not_copied: dict[str, str]
) -> Path:
    """The run's report, summary and rejects (the output bucket's run folder) into
    ``target/RUN_ID``, and the memory step's outputs under ``outputs/``, each at its input's
    key (see :func:`output_paths`), with ``outputs.json`` mapping keys to files. Nothing is
    written outside ``target``: a key that is not a plain relative path is written under a
    name made of its digest, and a symbolic link already in ``target`` is never followed (the
    file it stands for is not copied, and ``not_copied`` says why)."""
    prefix = contract.run_prefix(run_id)
    bucket = session.document.resources["output_bucket"]
    results = session.document.resources["memory_results_bucket"]
    sizes = {bucket: _sizes(session, bucket, prefix), results: _sizes(session, results, prefix)}
    report: dict[str, str] = {}
    for key in sizes[bucket]:
        relative = key[len(prefix) :]
        report[key] = (
            relative if plain_path(relative) else f"by-digest/{contract.key_digest(relative)}"
        )
    outputs = _outputs_by_key(session, run_id)
    paths = output_paths(list(outputs))
    wanted = {bucket: report, results: {outputs[key]: relative for key, relative in paths.items()}}
    total, done, said = sum(len(names) for names in wanted.values()), 0, time.monotonic()
    for source_bucket, names in wanted.items():
        for batch in batches({key: sizes[source_bucket].get(key, 0) for key in names}):
            found = set()
            for key, body in _fetch(session, source_bucket, batch):
                found.add(key)
                relative = names[key]
                try:
                    write_inside(target, f"{run_id}/{relative}", [body])
                except OSError as error:
                    not_copied[key] = f"{target / run_id / relative}: {error.strerror or error}"
            for key in batch:
                if key not in found:
                    not_copied[key] = "it is not in the run's bucket any more"
            done += len(batch)
            if time.monotonic() - said >= PROGRESS_SECONDS and done < total:
                session.on_progress(f"copying the run's outputs: {done:,} of {total:,} objects")
                said = time.monotonic()
    write_inside(target, f"{run_id}/outputs.json", [json.dumps(paths, indent=2).encode()])
    return target / run_id


PROGRESS_SECONDS = 2.0
"""How often copying the outputs says how far it is."""


def _sizes(session: FinishedRun, bucket: str, prefix: str) -> dict[str, int]:
    """Key -> size of each object under ``prefix`` in ``bucket``."""
    pages = (
        session.clients["s3"]
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=prefix)
    )
    return {obj["Key"]: int(obj["Size"]) for page in pages for obj in page.get("Contents", [])}


def _fetch(session: FinishedRun, bucket: str, keys: list[str]) -> Iterator[tuple[str, bytes]]:
    """(key, body) of each of ``keys`` still in ``bucket``, in one answer from the services
    (:data:`pipeline.local.objects.OBJECTS_PATH`) rather than a request each."""
    assert session.services is not None
    with signed_request(
        session.endpoint + OBJECTS_PATH,
        session.services.credentials,
        REGION,
        method="POST",
        body=json.dumps({"bucket": bucket, "keys": keys}).encode(),
        service="s3",
        timeout=300,
    ) as answer:
        yield from read_objects(answer)


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

    return {
        key: f"outputs/{key}"
        if key not in folders and plain_path(key)
        else f"outputs-by-digest/{contract.key_digest(key)}"
        for key in sorted(keys)
    }


def plain_path(key: str) -> bool:
    """Whether ``key`` names a file below a folder as it is: relative, no ``.`` or ``..``
    or empty part, no NUL, each part short enough for a file name."""
    return all(
        p not in ("", ".", "..") and "\0" not in p and len(p.encode()) <= 255
        for p in key.split("/")
    )


def write_inside(root: Path, relative: str, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``root/relative``, never outside ``root``: each folder is made
    or opened relative to the one before it, refusing a symbolic link at every step
    (``O_NOFOLLOW``), so a link already in ``root`` cannot send the file elsewhere. Each
    folder below ``root`` must be this user's (one another user made there first would get
    the copies), and the file a regular one (a FIFO put there would hold the copy forever).
    ``relative`` must be a plain path (:func:`plain_path`)."""
    if not plain_path(relative):
        raise OSError(errno.EINVAL, "not a plain relative path", relative)
    *folders, name = relative.split("/")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open(root, flags)
    try:
        for folder in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o755, dir_fd=fd)
            inner = os.open(folder, flags | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
            if os.fstat(fd).st_uid != os.geteuid():
                raise OSError(errno.EPERM, "a folder of another user", folder)
        out = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            0o644,
            dir_fd=fd,
        )
        if not stat.S_ISREG(os.fstat(out).st_mode):
            os.close(out)
            raise OSError(errno.EINVAL, "not a regular file", name)
        with os.fdopen(out, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
    finally:
        os.close(fd)


def _success_text(
    summary: Mapping[str, Any], messages: list[dict[str, Any]], copied: str | None, folder: Path
) -> list[str]:
    objects = summary["objects"]
    listed = objects["listed"]
    lines = [
        f"{listed:,} input object{'' if listed == 1 else 's'}, {objects['processed']:,} "
        f"processed, {objects['rejected']:,} rejected, "
        f"{sum(c['passed'] for c in summary['checks'])}/{len(summary['checks'])} checks passed",
    ]
    reasons = summary.get("rejects_by_reason") or {}
    if reasons:
        said = "; ".join(f"{reason} ({count:,})" for reason, count in reasons.items())
        lines.append(f"rejected: {said}")
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
