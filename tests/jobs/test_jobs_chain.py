"""The five job programs chained A->E in process on moto, over 1,100 mixed objects."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest

from helpers.jobs_world import MAX_OBJECT_BYTES, ODD_KEYS, World, jobs_world, sample_inputs
from pipeline import contract

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chained() -> Iterator[tuple[World, dict[str, bytes]]]:
    """One full A->E run over 1,100 mixed objects in 4 shards, shared by the assertions."""
    inputs = sample_inputs(1_100)
    with jobs_world(array_size=4) as world:
        world.put_inputs(inputs)
        world.run_all()
        yield world, inputs


# --- the whole chain ---------------------------------------------------------------------------


def test_every_input_is_accounted_for_exactly_once(chained: tuple[World, dict[str, bytes]]) -> None:
    world, inputs = chained
    ctx = world.ctx
    rejects = world.get_json(ctx.output_bucket, contract.rejects_key(ctx.run_id))["rejects"]
    processed = {i[contract.TABLE_SORT_KEY]["S"] for i in world.items()}
    rejected = {r["key"] for r in rejects}
    assert processed.isdisjoint(rejected)
    assert processed | rejected == set(inputs)
    assert {r["key"]: r["reason"] for r in rejects} == {
        "empty/zero-bytes.txt": "empty object (0 bytes)",
        "big/oversize.bin": f"larger than the {MAX_OBJECT_BYTES:,}-byte limit "
        f"({MAX_OBJECT_BYTES + 1:,} bytes)",
        "folder/": "directory marker, not an object",
    }
    assert set(ODD_KEYS) <= processed


def test_table_has_one_item_per_valid_object(chained: tuple[World, dict[str, bytes]]) -> None:
    world, inputs = chained
    items = world.items()
    assert len(items) == len(inputs) - 3
    by_key = {i[contract.TABLE_SORT_KEY]["S"]: i for i in items}
    sample = by_key["unicode/naïve café ✓.txt"]
    # (the default memory step's attributes, from the decompressed CPU result)
    assert sample["sha256"]["S"] == hashlib.sha256(inputs["unicode/naïve café ✓.txt"]).hexdigest()
    assert int(sample["size"]["N"]) == len(inputs["unicode/naïve café ✓.txt"])


def test_report_has_ten_passing_checks(chained: tuple[World, dict[str, bytes]]) -> None:
    world, _ = chained
    reports = [
        world.get_json(world.ctx.output_bucket, contract.report_key(world.ctx.run_id, step))
        for step in range(10)
    ]
    assert [r["passed"] for r in reports] == [True] * 10
    assert len({r["check"] for r in reports}) == 10
    assert all(r["checked"] > 0 for r in reports)


def test_notification_links_to_the_summary(chained: tuple[World, dict[str, bytes]]) -> None:
    world, inputs = chained
    (message,) = world.notifications()
    assert message["Subject"] == f"Array job pipeline run {world.ctx.run_id} completed"
    assert message["MessageAttributes"]["Recipient"]["Value"] == "ops@example.com"
    text = message["Message"]
    assert f"{len(inputs) - 3:,} objects processed, 3 rejected, all 10 checks passed" in text
    link = re.search(r"https://\S+", text)
    assert link is not None
    summary_key = contract.summary_key(world.ctx.run_id)
    assert summary_key in link.group(0)
    assert "X-Amz-Expires=21600" in link.group(0)
    assert f"s3://{world.ctx.output_bucket}/{summary_key}" in text


def test_summary_counts_and_intermediates_removed(chained: tuple[World, dict[str, bytes]]) -> None:
    world, inputs = chained
    ctx = world.ctx
    summary = world.get_json(ctx.output_bucket, contract.summary_key(ctx.run_id))
    assert summary["objects"] == {
        "listed": len(inputs),
        "processed": len(inputs) - 3,
        "rejected": 3,
    }
    assert summary["bytes_processed"] == sum(
        len(v) for k, v in inputs.items() if k not in ("empty/zero-bytes.txt", "big/oversize.bin")
    )
    assert isinstance(summary["seconds_by_job"], dict)  # filled by the programs' main()
    assert world.keys(ctx.cpu_results_bucket, contract.run_prefix(ctx.run_id)) == []
    assert len(
        world.keys(ctx.memory_results_bucket, contract.run_prefix(ctx.run_id) + "objects/")
    ) == (len(inputs) - 3)
