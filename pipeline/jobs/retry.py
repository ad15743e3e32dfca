"""A retry of a run's rejected objects (``resume RUN_ID --rejected``), as JobB and JobC do it
for their shard: the current steps run again on the objects a step rejected (by the CPU step
or the memory step), and every other entry of the shard's records is kept as it was.

Each job reads what the run left. After a run that ended in JobD (a failed check) every
record is where the stages wrote it. After one whose JobE ran, BucketB's intermediates are
gone; the shard's JobC record (BucketC) holds the JobB record it read, which holds the
manifest (``contract.READ_RECORD``), and those are what the retry starts from.

JobB writes the shard's new record with the entries it redid marked with the retry's token
(``contract.RETRIED``) and the JobC entries as they were (``contract.MEMORY_BEFORE``); JobC
then runs the memory step on those of the redone objects the CPU step did, and keeps its
other entries. A shard with nothing rejected writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.jobs.aws_calls import JobError
from pipeline.jobs.bucket_io import get_json_if_exists

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from pipeline.jobs.run_context import RunContext


@dataclass(frozen=True)
class ShardBefore:
    """A shard's records as the run left them."""

    manifest: dict[str, Any]
    cpu_record: dict[str, Any]
    memory_entries: list[dict[str, Any]]

    def rejected(self, token: str) -> set[str]:
        """The keys a step rejected: the CPU step (JobB's record) or the memory step
        (JobC's), or that an earlier attempt of this retry (``token``) redid. An entry an
        earlier retry redid and a step then did is done: run again, it could be rejected
        and leave the output its JobC wrote behind, an orphan JobD's checks count."""
        return {
            str(entry["key"])
            for entry in [*self.cpu_record["objects"], *self.memory_entries]
            if "rejected" in entry or entry.get(contract.RETRIED) == token
        }


def shard_before(s3: S3Client, ctx: RunContext, index: int) -> ShardBefore:
    """The shard's manifest, JobB record and JobC entries, from their buckets or, where
    JobE removed them, from the copies the JobC record holds."""
    memory = get_json_if_exists(
        s3, ctx.memory_results_bucket, contract.memory_index_key(ctx.run_id, index)
    )
    cpu = get_json_if_exists(s3, ctx.cpu_results_bucket, contract.cpu_index_key(ctx.run_id, index))
    if cpu is None and memory is not None:
        cpu = memory.get(contract.READ_RECORD)
    if cpu is None or memory is None:
        raise JobError(
            f"shard {index} of run {ctx.run_id} has no JobB or JobC record to retry the "
            f"rejected objects of: the run did not get that far; resume it with `resume "
            f"{ctx.run_id}` (or --failed-only) first"
        )
    manifest = get_json_if_exists(
        s3, ctx.cpu_results_bucket, contract.manifest_key(ctx.run_id, index)
    ) or cpu.get(contract.READ_RECORD)
    if manifest is None:
        raise JobError(f"shard {index} of run {ctx.run_id} has no manifest to retry from")
    return ShardBefore(dict(manifest), dict(cpu), list(memory.get("objects") or []))


def redone_by_cpu(cpu_record: dict[str, Any], token: str) -> tuple[set[str], list[Any]]:
    """Of a retry's JobB record: the keys it redid, and the entries of those the CPU step
    did (for the memory step to run on)."""
    redone = [e for e in cpu_record["objects"] if e.get(contract.RETRIED) == token]
    return {str(e["key"]) for e in redone}, [e for e in redone if "rejected" not in e]
