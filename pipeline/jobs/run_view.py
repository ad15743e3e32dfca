"""What JobD's checks read of a run, each part loaded once and only when a check asks for it:
the listing, the shards' records, the table's items, the buckets' listings.

Every shard's manifest, JobB record and JobC record, the listings of BucketB's results and
BucketC's outputs (key, size, ETag) and the run's table items are read once per JobD job: the
first check writes them as the shard view, and the SEQUENTIAL children after it read that one
object instead of listing and querying again (nothing writes the run while JobD checks it).
A record that is missing a field a check needs raises :class:`MalformedRecordError`, which the
check reports as a failure naming the record and the field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.jobs.aws_calls import reporting
from pipeline.jobs.bucket_io import dumps, get_json, get_json_if_exists, list_objects, put_json
from pipeline.jobs.program import in_threads
from pipeline.jobs.run_context import RunContext
from pipeline.steps import StepRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client


class MalformedRecordError(Exception):
    """A record without a field a check needs; the message names both."""


def need(record: Any, name: str, what: str) -> Any:
    """``record[name]``, or :class:`MalformedRecordError` naming ``what`` and the field."""
    if not isinstance(record, Mapping) or name not in record:
        raise MalformedRecordError(f"{what} has no field {name!r}")
    return record[name]


def _entries(records: list[Any | None], what: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for shard, record in enumerate(records):
        for entry in need(record, "objects", f"{what} of shard {shard}") if record else []:
            found[str(need(entry, "key", f"an entry of {what} {shard}"))] = entry
    return found


class RunView:
    """What the checks read, each loaded once and only when a check asks for it."""

    def __init__(
        self,
        s3: S3Client,
        dynamodb: DynamoDBClient,
        ctx: RunContext,
        *,
        shard_view: str | None = None,
        checks: Sequence[str] = (),
        max_rejected_share: float = 1.0,
        allow_empty_runs: bool = False,
    ) -> None:
        self.s3, self.dynamodb, self.ctx = s3, dynamodb, ctx
        self.checks = tuple(checks)
        """References of the steps' own checks."""
        self.max_rejected_share = max_rejected_share
        self.allow_empty_runs = allow_empty_runs
        """Whether a run that processed no object may pass."""
        self.prefix = contract.run_prefix(ctx.run_id)
        self.shard_view = shard_view
        """BucketB key of the shard view this JobD shares between its checks (None: read the
        shards)."""

    def _per_shard(self, bucket: str, key: Callable[[str, int], str]) -> list[Any | None]:
        return in_threads(
            lambda shard: get_json_if_exists(self.s3, bucket, key(self.ctx.run_id, shard)),
            list(range(self.ctx.array_size)),
        )

    @cached_property
    def listing(self) -> dict[str, Any]:
        return dict(
            get_json(self.s3, self.ctx.output_bucket, contract.listing_key(self.ctx.run_id))
        )

    @cached_property
    def listing_rejects(self) -> list[dict[str, Any]]:
        """The objects JobA rejected, each with its reason."""
        key = contract.listing_rejects_key(self.ctx.run_id)
        return list(need(get_json(self.s3, self.ctx.output_bucket, key), "rejects", key))

    @cached_property
    def _shards(self) -> dict[str, list[Any | None]]:
        """Every shard's manifest, JobB index and JobC record, once per JobD (the first check
        writes them as the shard view; SEQUENTIAL runs it first). The JobC records are read;
        the index and the manifest each holds, as its writer read them, stand for the stored
        ones they match byte for byte (see ``contract.READ_RECORD``), so a run whose records
        are intact costs N reads and two listings, not 3 x N reads."""
        if self._saved_view is not None:
            return self._saved_view
        memory_indexes = self._per_shard(self.ctx.memory_results_bucket, contract.memory_index_key)
        cpu_indexes = self._stored_or_read(
            [_held_record(record) for record in memory_indexes],
            contract.cpu_indexes_prefix(self.ctx.run_id),
            contract.cpu_index_key,
        )
        manifests = self._stored_or_read(
            [_held_record(record) for record in cpu_indexes],
            contract.manifests_prefix(self.ctx.run_id),
            contract.manifest_key,
        )
        shards: dict[str, list[Any | None]] = {
            "manifests": manifests,
            "cpu_indexes": cpu_indexes,
            "memory_indexes": memory_indexes,
        }
        if self.shard_view is not None:
            view: dict[str, Any] = {
                **shards,
                "cpu_results": self._listed_cpu_results,
                "memory_outputs": self._listed_memory_outputs,
            }
            with contextlib.suppress(TypeError):  # items holding binary values are read anew
                view["items"] = json.loads(json.dumps(self._queried_items))
            put_json(self.s3, self.ctx.cpu_results_bucket, self.shard_view, view)
        return shards

    @cached_property
    def _saved_view(self) -> dict[str, Any] | None:
        """The shard view an earlier check of this JobD wrote, if there is one."""
        if self.shard_view is None:
            return None
        saved = get_json_if_exists(self.s3, self.ctx.cpu_results_bucket, self.shard_view)
        if saved is not None and len(saved.get("manifests", [])) == self.ctx.array_size:
            return dict(saved)
        return None

    def _viewed(self, part: str) -> Any | None:
        """``part`` of the saved shard view, if it holds one."""
        saved = self._saved_view
        return saved.get(part) if saved is not None else None

    @cached_property
    def intermediates_removed(self) -> bool:
        """Whether the run's JobE already ran (its summary is written), and so removed the
        run's BucketB intermediates: a retry of its rejected objects checks the run from the
        copies the JobC records hold, and without the results of objects it did not redo."""
        summary = contract.summary_key(self.ctx.run_id)
        return get_json_if_exists(self.s3, self.ctx.output_bucket, summary) is not None

    def _stored_or_read(
        self, held: list[Any | None], prefix: str, key: Callable[[str, int], str]
    ) -> list[Any | None]:
        """Each shard's BucketB record under ``prefix``: the copy ``held`` for it when that is
        the stored object byte for byte (its MD5 is the ETag the listing gives), otherwise
        the stored object, read (None when there is none). Once the run's JobE removed the
        intermediates, a held copy stands for a stored object that is gone."""
        etags = {
            obj["Key"]: obj["ETag"].strip('"')
            for obj in list_objects(self.s3, self.ctx.cpu_results_bucket, prefix)
        }
        records = list(held)
        removed = bool(self.ctx.retry_rejected) and self.intermediates_removed
        unmatched = [
            shard
            for shard, copy in enumerate(held)
            if copy is None
            or (
                hashlib.md5(dumps(copy), usedforsecurity=False).hexdigest()
                != etags.get(key(self.ctx.run_id, shard))
                and not (removed and key(self.ctx.run_id, shard) not in etags)
            )
        ]
        read = in_threads(
            lambda shard: get_json_if_exists(
                self.s3, self.ctx.cpu_results_bucket, key(self.ctx.run_id, shard)
            ),
            unmatched,
        )
        for shard, record in zip(unmatched, read, strict=True):
            records[shard] = record
        return records

    @property
    def manifests(self) -> list[Any | None]:
        return self._shards["manifests"]

    @property
    def cpu_indexes(self) -> list[Any | None]:
        return self._shards["cpu_indexes"]

    @property
    def memory_indexes(self) -> list[Any | None]:
        return self._shards["memory_indexes"]

    @cached_property
    def manifested(self) -> dict[str, tuple[int, dict[str, Any]]]:
        """Input key -> (shard, manifest entry)."""
        found: dict[str, tuple[int, dict[str, Any]]] = {}
        for shard, manifest in enumerate(self.manifests):
            for entry in (manifest or {}).get("objects", []):
                found.setdefault(entry["key"], (shard, entry))
        return found

    @cached_property
    def cpu_entries(self) -> dict[str, dict[str, Any]]:
        """Input key -> its entry in a JobB record (done, or rejected by the CPU step)."""
        return _entries(self.cpu_indexes, "JobB record")

    @cached_property
    def memory_entries(self) -> dict[str, dict[str, Any]]:
        """Input key -> its entry in a JobC record (done, or rejected by the memory step)."""
        return _entries(self.memory_indexes, "JobC record")

    @cached_property
    def stage_rejects(self) -> list[dict[str, Any]]:
        """The objects a step rejected, each with its reason."""
        return [
            {"key": key, "reason": entry["rejected"], "stage": stage}
            for stage, entries in (("cpu", self.cpu_entries), ("memory", self.memory_entries))
            for key, entry in entries.items()
            if "rejected" in entry
        ]

    def step_records(self) -> list[StepRecord]:
        """Every object both steps did, as the checks of the steps see it."""
        records = []
        for key, entry in self.memory_entries.items():
            cpu = self.cpu_entries.get(key)
            if "rejected" in entry or cpu is None or "rejected" in cpu:
                continue
            records.append(
                StepRecord(
                    key=key,
                    size=int(need(cpu, "size", f"JobB entry of {key!r}")),
                    etag=str(cpu.get("etag", "")),
                    cpu=dict(cpu.get("facts") or {}),
                    memory=dict(entry.get("attributes") or {}),
                )
            )
        return records

    @cached_property
    def items(self) -> dict[str, dict[str, Any]]:
        """The run's table items, by object key."""
        viewed = self._viewed("items")
        return dict(viewed) if viewed is not None else self._queried_items

    @cached_property
    def _queried_items(self) -> dict[str, dict[str, Any]]:
        return dict(self.item_pages())

    def item_pages(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The run's table items, (object key, item), read a page (1 MB) at a time."""
        paginator = self.dynamodb.get_paginator("query")
        with reporting(f"Query {self.ctx.metadata_table}"):
            for page in paginator.paginate(
                TableName=self.ctx.metadata_table,
                KeyConditionExpression="#run = :run",
                ExpressionAttributeNames={"#run": contract.TABLE_PARTITION_KEY},
                ExpressionAttributeValues={":run": {"S": self.ctx.run_id}},
            ):
                for item in page.get("Items", []):
                    yield item[contract.TABLE_SORT_KEY]["S"], dict(item)

    def objects(self, bucket: str, part: str) -> dict[str, dict[str, Any]]:
        """Key -> ``{"Size", "ETag"}`` of each object of the run's ``part`` of ``bucket``."""
        return {
            o["Key"]: {"Size": o["Size"], "ETag": o["ETag"]}
            for o in list_objects(self.s3, bucket, self.prefix + part)
        }

    @cached_property
    def cpu_results(self) -> dict[str, dict[str, Any]]:
        viewed = self._viewed("cpu_results")
        return dict(viewed) if viewed is not None else self._listed_cpu_results

    @cached_property
    def memory_outputs(self) -> dict[str, dict[str, Any]]:
        viewed = self._viewed("memory_outputs")
        return dict(viewed) if viewed is not None else self._listed_memory_outputs

    @cached_property
    def _listed_cpu_results(self) -> dict[str, dict[str, Any]]:
        return self.objects(self.ctx.cpu_results_bucket, "cpu/")

    @cached_property
    def _listed_memory_outputs(self) -> dict[str, dict[str, Any]]:
        return self.objects(self.ctx.memory_results_bucket, "objects/")


def _held_record(record: Any) -> Any | None:
    """Take the record ``record`` holds as its writer read it (see ``contract.READ_RECORD``):
    the shard view keeps each record once."""
    return record.pop(contract.READ_RECORD, None) if isinstance(record, dict) else None
