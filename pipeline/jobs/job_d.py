"""JobD[k]: validation check k of ten, chosen by AWS_BATCH_JOB_ARRAY_INDEX (SEQUENTIAL children).

Each check writes its result to the run's report in the output bucket. A failed check exits 1,
so the later children and JobE never run and the run's intermediates stay for inspection.
The checks use listings and table queries, never one request per object.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.jobs.common import (
    JobError,
    RunContext,
    array_index,
    dumps,
    get_json,
    get_json_if_exists,
    in_threads,
    list_objects,
    make_client,
    put_json,
    record_timing,
    reporting,
    run_main,
)
from pipeline.jobs.job_a import check as check_listed_object

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

SHOWN_FAILURES = 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class CheckResult:
    step: int
    name: str
    checked: int = 0
    failures: list[str] = field(default_factory=list)
    problems: int = 0
    notes: list[str] = field(default_factory=list)
    """What the report should say without failing the check (inputs added after listing)."""

    def fail(self, message: str) -> None:
        self.problems += 1
        if len(self.failures) < SHOWN_FAILURES:
            self.failures.append(message)

    @property
    def passed(self) -> bool:
        return self.problems == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "check": self.name,
            "passed": self.passed,
            "checked": self.checked,
            "problems": self.problems,
            "failures": self.failures,
            "notes": self.notes[:SHOWN_FAILURES],
        }


class RunView:
    """What the checks read, each loaded once and only when a check asks for it."""

    def __init__(
        self,
        s3: S3Client,
        dynamodb: DynamoDBClient,
        ctx: RunContext,
        *,
        shard_view: str | None = None,
    ) -> None:
        self.s3, self.dynamodb, self.ctx = s3, dynamodb, ctx
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
    def rejects(self) -> list[dict[str, Any]]:
        data = get_json(self.s3, self.ctx.output_bucket, contract.rejects_key(self.ctx.run_id))
        return list(data["rejects"])

    @cached_property
    def _shards(self) -> dict[str, list[Any | None]]:
        """Every shard's manifest, JobB index and JobC record, once per JobD (the first check
        writes them as the shard view; SEQUENTIAL runs it first). The JobC records are read;
        the index and the manifest each holds, as its writer read them, stand for the stored
        ones they match byte for byte (see ``contract.READ_RECORD``), so a run whose records
        are intact costs N reads and two listings, not 3 x N reads."""
        if self.shard_view is not None:
            saved = get_json_if_exists(self.s3, self.ctx.cpu_results_bucket, self.shard_view)
            if saved is not None and len(saved.get("manifests", [])) == self.ctx.array_size:
                return dict(saved)
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
            put_json(self.s3, self.ctx.cpu_results_bucket, self.shard_view, shards)
        return shards

    def _stored_or_read(
        self, held: list[Any | None], prefix: str, key: Callable[[str, int], str]
    ) -> list[Any | None]:
        """Each shard's BucketB record under ``prefix``: the copy ``held`` for it when that is
        the stored object byte for byte (its MD5 is the ETag the listing gives), otherwise
        the stored object, read (None when there is none)."""
        etags = {
            obj["Key"]: obj["ETag"].strip('"')
            for obj in list_objects(self.s3, self.ctx.cpu_results_bucket, prefix)
        }
        records = list(held)
        unmatched = [
            shard
            for shard, copy in enumerate(held)
            if copy is None
            or hashlib.md5(dumps(copy), usedforsecurity=False).hexdigest()
            != etags.get(key(self.ctx.run_id, shard))
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
        return {e["key"]: e for index in self.cpu_indexes for e in (index or {}).get("objects", [])}

    @cached_property
    def items(self) -> dict[str, dict[str, Any]]:
        """The run's table items, by object key (Query, 1 MB per page)."""
        items: dict[str, dict[str, Any]] = {}
        paginator = self.dynamodb.get_paginator("query")
        with reporting(f"Query {self.ctx.metadata_table}"):
            for page in paginator.paginate(
                TableName=self.ctx.metadata_table,
                KeyConditionExpression="#run = :run",
                ExpressionAttributeNames={"#run": contract.TABLE_PARTITION_KEY},
                ExpressionAttributeValues={":run": {"S": self.ctx.run_id}},
            ):
                for item in page.get("Items", []):
                    items[item[contract.TABLE_SORT_KEY]["S"]] = item
        return items

    def objects(self, bucket: str, part: str) -> dict[str, dict[str, Any]]:
        return {o["Key"]: o for o in list_objects(self.s3, bucket, self.prefix + part)}

    @cached_property
    def cpu_results(self) -> dict[str, dict[str, Any]]:
        return self.objects(self.ctx.cpu_results_bucket, "cpu/")

    @cached_property
    def memory_outputs(self) -> dict[str, dict[str, Any]]:
        return self.objects(self.ctx.memory_results_bucket, "objects/")


def _held_record(record: Any) -> Any | None:
    """Take the record ``record`` holds as its writer read it (see ``contract.READ_RECORD``):
    the shard view keeps each record once."""
    return record.pop(contract.READ_RECORD, None) if isinstance(record, dict) else None


def shard_coverage(view: RunView, result: CheckResult) -> None:
    """Every shard has its manifest (JobA), result index (JobB) and done record (JobC)."""
    if view.listing.get("shards") != view.ctx.array_size:
        result.fail(
            f"JobA wrote {view.listing.get('shards')} shards for an array of {view.ctx.array_size}"
        )
    stages = (
        ("manifest", view.manifests),
        ("JobB index", view.cpu_indexes),
        ("JobC record", view.memory_indexes),
    )
    for shard in range(view.ctx.array_size):
        result.checked += 1
        for what, records in stages:
            if records[shard] is None:
                result.fail(f"shard {shard} has no {what}")


def inputs_accounted_for(view: RunView, result: CheckResult) -> None:
    """Every object in BucketA (under the run's input prefix) is in exactly one shard or in
    the rejects list."""
    rejected = [r["key"] for r in view.rejects]
    shard_keys = [e["key"] for m in view.manifests for e in (m or {}).get("objects", [])]
    seen: dict[str, int] = {}
    for key in [*shard_keys, *rejected]:
        seen[key] = seen.get(key, 0) + 1
    listed_at = view.listing.get("listed_at")
    late: list[str] = []
    for obj in list_objects(
        view.s3, view.ctx.input_bucket, view.ctx.input_prefix, url_encoded=True
    ):
        key = check_listed_object(obj["Key"], obj["Size"], "STANDARD", view.ctx.max_object_bytes)[0]
        result.checked += 1
        count = seen.pop(key, 0)
        if count == 0 and listed_at is not None and obj["LastModified"].timestamp() > listed_at:
            late.append(key)  # written after JobA listed: not part of this run
        elif count == 0:
            result.fail(f"input {key!r} is in no shard and not rejected: it was lost")
        elif count > 1:
            result.fail(f"input {key!r} is accounted for {count} times")
    for key in seen:
        result.fail(f"{key!r} is in a shard or rejects but not in BucketA")
    if late:
        result.notes.append(
            f"{len(late)} object(s) written to BucketA after JobA listed it are not part of "
            f"this run, e.g. {late[0]!r}"
        )


def rejects_have_reasons(view: RunView, result: CheckResult) -> None:
    """Each rejected object says why, and the count matches JobA's listing."""
    for reject in view.rejects:
        result.checked += 1
        if not str(reject.get("reason", "")).strip():
            result.fail(f"rejected {reject.get('key')!r} has no reason")
    if len(view.rejects) != view.listing.get("rejected"):
        result.fail(
            f"{len(view.rejects)} rejects listed, JobA counted {view.listing.get('rejected')}"
        )


def cpu_results_complete(view: RunView, result: CheckResult) -> None:
    """Every valid object has a JobB digest and a compressed result of the recorded size."""
    for key in view.manifested:
        result.checked += 1
        entry = view.cpu_entries.get(key)
        if entry is None:
            result.fail(f"{key!r} has no JobB result")
            continue
        if not _SHA256.fullmatch(entry.get("sha256", "")):
            result.fail(f"{key!r} has no SHA-256 digest from JobB")
        listed_size = view.manifested[key][1].get("size")
        if entry.get("size") != listed_size:
            result.fail(
                f"{key!r} was {entry.get('size')} bytes when JobB read it, {listed_size} when "
                "JobA listed it"
            )
        stored = view.cpu_results.get(entry["result_key"])
        if stored is None:
            result.fail(f"JobB result {entry['result_key']} for {key!r} is missing")
        elif stored["Size"] != entry["compressed_size"]:
            result.fail(
                f"JobB result {entry['result_key']} for {key!r} has {stored['Size']} "
                f"bytes, {entry['compressed_size']} recorded"
            )


def stage_counts_match(view: RunView, result: CheckResult) -> None:
    """The number of objects is the same at every stage."""
    counts = {
        "JobA valid": view.listing.get("valid"),
        "manifests": len(view.manifested),
        "JobB results": len(view.cpu_entries),
        "JobC records": sum(len((m or {}).get("keys", [])) for m in view.memory_indexes),
        "BucketC outputs": len(view.memory_outputs),
        "table items": len(view.items),
    }
    result.checked = len(counts)
    if len(set(counts.values())) != 1:
        result.fail("counts differ: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def items_per_object(view: RunView, result: CheckResult) -> None:
    """Every valid object has exactly its table item, in the right shard."""
    for key, (shard, _) in view.manifested.items():
        result.checked += 1
        item = view.items.get(key)
        if item is None:
            result.fail(f"{key!r} has no table item")
        elif int(item["shard"]["N"]) != shard:
            result.fail(f"{key!r} table item says shard {item['shard']['N']}, manifest {shard}")


def outputs_intact(view: RunView, result: CheckResult) -> None:
    """Every valid object has its BucketC output, unchanged since JobC wrote it (its ETag is
    the MD5 JobC recorded)."""
    for key in view.manifested:
        result.checked += 1
        item = view.items.get(key)
        output_key = contract.memory_output_key(view.ctx.run_id, key)
        stored = view.memory_outputs.get(output_key)
        if stored is None:
            result.fail(f"BucketC output {output_key} for {key!r} is missing")
        elif item is not None and stored["ETag"].strip('"') != item["output_md5"]["S"]:
            result.fail(f"BucketC output {output_key} for {key!r} changed after JobC wrote it")


def digests_round_trip(view: RunView, result: CheckResult) -> None:
    """Decompressing JobB's result gives back the input: same SHA-256, same size."""
    for key, item in view.items.items():
        result.checked += 1
        if item["sha256_original"]["S"] != item["sha256_roundtrip"]["S"]:
            result.fail(f"{key!r}: digest after the round trip differs from the input's")
        if item["size"]["N"] != item["roundtrip_size"]["N"]:
            result.fail(
                f"{key!r}: {item['roundtrip_size']['N']} bytes after the round trip, "
                f"{item['size']['N']} in"
            )


def no_orphans(view: RunView, result: CheckResult) -> None:
    """Nothing in BucketB, BucketC or the table belongs to an object that is not in a shard."""
    expected_cpu = {contract.cpu_result_key(view.ctx.run_id, k) for k in view.manifested}
    expected_memory = {contract.memory_output_key(view.ctx.run_id, k) for k in view.manifested}
    for key in view.cpu_results:
        result.checked += 1
        if key not in expected_cpu:
            result.fail(f"orphan JobB result {key}")
    for key in view.memory_outputs:
        result.checked += 1
        if key not in expected_memory:
            result.fail(f"orphan BucketC output {key}")
    for key in view.items:
        result.checked += 1
        if key not in view.manifested:
            result.fail(f"orphan table item {key!r}")


def shards_balanced(view: RunView, result: CheckResult) -> None:
    """Shards are balanced by bytes: no two differ by more than the largest object."""
    sizes = view.listing.get("shard_bytes", [])
    result.checked = len(sizes)
    if sizes and max(sizes) - min(sizes) > view.listing.get("largest_object", 0):
        result.fail(
            f"shard bytes range from {min(sizes):,} to {max(sizes):,}, more apart than "
            f"the largest object ({view.listing.get('largest_object', 0):,})"
        )


CHECKS: tuple[Callable[[RunView, CheckResult], None], ...] = (
    shard_coverage,
    inputs_accounted_for,
    rejects_have_reasons,
    cpu_results_complete,
    stage_counts_match,
    items_per_object,
    outputs_intact,
    digests_round_trip,
    no_orphans,
    shards_balanced,
)
assert len(CHECKS) == contract.VALIDATION_STEPS


def run(
    s3: S3Client,
    dynamodb: DynamoDBClient,
    ctx: RunContext,
    step: int,
    *,
    validation_job_id: str | None = None,
) -> CheckResult:
    check = CHECKS[step]
    result = CheckResult(step, check.__name__.replace("_", " "))
    view = None
    if validation_job_id:
        view = contract.shard_view_key(ctx.run_id, validation_job_id)
    check(RunView(s3, dynamodb, ctx, shard_view=view), result)
    put_json(s3, ctx.output_bucket, contract.report_key(ctx.run_id, step), result.as_json())
    if not result.passed:
        raise JobError(
            f"check {step} ({result.name}) failed with {result.problems} problem(s); first: "
            f"{result.failures[0]}"
        )
    return result


def main() -> int:
    def work() -> dict[str, Any]:
        started = time.monotonic()
        ctx = RunContext.from_env()
        step = array_index(size=contract.VALIDATION_STEPS)
        s3 = make_client("s3")
        try:
            # Children's IDs are "<JobD's ID>:<index>": the shard view is this JobD's.
            job_id = os.environ.get("AWS_BATCH_JOB_ID", "").rpartition(":")[0] or None
            result = run(s3, make_client("dynamodb"), ctx, step, validation_job_id=job_id)
        finally:
            record_timing(s3, ctx, "JobD", step, time.monotonic() - started)
        return {"check": result.name, "checked": result.checked}

    return run_main("JobD", work)


if __name__ == "__main__":
    raise SystemExit(main())
