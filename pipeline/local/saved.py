"""Saved local runs: a failed local run's buckets, table, jobs and logs, kept on this machine
so that ``status RUN_ID --local`` and ``resume RUN_ID --local`` can find it again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.spec import BUCKET_KEYS

if TYPE_CHECKING:
    from pipeline.local.batch import LocalBatch
    from pipeline.local.services import LocalAws

STATE_DIR_ENV = "PIPELINE_LOCAL_STATE_DIR"


def runs_dir() -> Path:
    """Where local runs are saved: $PIPELINE_LOCAL_STATE_DIR, else
    ~/.local/state/array-job-pipeline, then runs/."""
    root = os.environ.get(STATE_DIR_ENV) or Path.home() / ".local/state/array-job-pipeline"
    return Path(root) / "runs"


def state_dir(run_id: str) -> Path:
    """Where local run ``run_id`` is saved (see :func:`runs_dir`)."""
    return runs_dir() / run_id


def save_state(aws: LocalAws, batch: LocalBatch, run_id: str) -> Path:
    """The buckets' objects, the table's items and the queue's jobs, to resume the run later."""
    target = state_dir(run_id)
    shutil.rmtree(target, ignore_errors=True)
    (target / "objects").mkdir(parents=True)
    s3 = aws.clients["s3"]
    objects: list[dict[str, str]] = []
    for key in BUCKET_KEYS:
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
    if batch.log_dir.exists():
        shutil.copytree(batch.log_dir, target / "logs")
    return target


def saved_jobs(run_id: str) -> tuple[Path, list[dict[str, object]]]:
    """(where, the jobs) of a saved local run; RunStateError when there is none."""
    from pipeline.errors import RunStateError

    saved = state_dir(run_id)
    if not (saved / "jobs.json").exists():
        raise RunStateError(
            f"no saved local run {run_id!r} in {saved.parent}; a local run is saved there "
            "when it fails (one that succeeded is not kept: its result was printed at its end)"
        )
    return saved, list(json.loads((saved / "jobs.json").read_text()))


def saved_run_ids() -> list[str]:
    """Every saved local run (failed ones with their state, successful ones with their jobs)."""
    runs = runs_dir()
    if not runs.is_dir():
        return []
    return sorted(d.name for d in runs.iterdir() if (d / "jobs.json").is_file())


def save_jobs(batch: LocalBatch, run_id: str) -> Path:
    """Only the queue's jobs of a run that succeeded: enough for ``status`` and ``report``
    (kilobytes), not its objects (there is nothing to resume)."""
    target = state_dir(run_id)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    (target / "jobs.json").write_text(json.dumps(batch.export_jobs()))
    return target


def restore_state(aws: LocalAws, saved: Path) -> None:
    if not (saved / "objects.json").exists():
        return  # a run that succeeded keeps its jobs only
    s3 = aws.clients["s3"]
    for obj in json.loads((saved / "objects.json").read_text()):
        s3.upload_file(str(saved / "objects" / obj["file"]), aws.names[obj["bucket"]], obj["key"])
    dynamodb = aws.clients["dynamodb"]
    items = json.loads((saved / "items.json").read_text())
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]
        dynamodb.batch_write_item(RequestItems={aws.names["metadata_table"]: requests})


def refuse_saved_run_id(run_id: str) -> None:
    """A new local run may not take the id of a saved one (their objects would mix)."""
    from pipeline.errors import RunStateError

    if (state_dir(run_id) / "jobs.json").exists():
        raise RunStateError(
            f"a saved local run {run_id!r} exists in {state_dir(run_id).parent}; pick another "
            f"--run-id, or continue it with `resume {run_id} --local`"
        )
