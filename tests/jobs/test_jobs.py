"""The five job programs on moto: alone, chained A->E, and under faults."""

from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.jobs_world import World, jobs_world, sample_inputs
from helpers.paths import REPO
from pipeline import contract
from pipeline.jobs import job_a, job_b, job_c, job_d, job_e
from pipeline.jobs.aws_calls import JobError
from pipeline.jobs.program import cpu_allowance
from pipeline.jobs.run_context import RunContext, array_index

# --- each job alone ----------------------------------------------------------------------------


def test_job_a_balances_shards_by_bytes_not_count() -> None:
    objects = [job_a.Listed(f"k{i}", size, "") for i, size in enumerate([1000, 10, 10, 10, 10, 10])]
    shards = job_a.plan_shards(objects, 2)
    assert [sum(o.size for o in s) for s in shards] == [1000, 50]
    assert [len(s) for s in shards] == [1, 5]


@pytest.mark.slow  # 1,203 objects put into moto: ~4 s
def test_job_a_lists_more_than_one_page_and_rejects_non_utf8_keys() -> None:
    assert job_a.check("ok%20key.txt", 5, "STANDARD", 100) == ("ok key.txt", None)
    assert job_a.check("bad%FF%FEkey", 5, "STANDARD", 100)[1] == "key is not valid UTF-8"
    assert job_a.check("cold.bin", 5, "GLACIER", 100)[1] == (
        "in archived storage class GLACIER; restore it first"
    )
    with jobs_world(array_size=3) as world:
        world.put_inputs({f"many/{i:04d}": b"x" for i in range(1_203)})
        summary = job_a.run(world.s3, world.ctx)
    assert summary["listed"] == 1_203
    assert summary["valid"] == 1_203


def test_job_b_uses_a_process_pool_and_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_b, "POOL_THRESHOLD", 0)  # a pool even for these small shards
    with jobs_world(array_size=2) as world:
        world.put_inputs({"a.txt": b"hello " * 10_000, "b.bin": b"\x00" * 60_000})
        job_a.run(world.s3, world.ctx)
        results = [job_b.run(world.s3, world.ctx, shard, workers=2) for shard in range(2)]
        index = world.get_json(
            world.ctx.cpu_results_bucket, contract.cpu_index_key(world.ctx.run_id, 0)
        )
    assert sum(r["objects"] for r in results) == 2
    assert all(r["workers"] == 2 for r in results)
    entry = index["objects"][0]
    assert entry["facts"]["compressed_size"] == entry["result_size"] < entry["size"]


def test_cpu_allowance_follows_affinity_not_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0})
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert cpu_allowance() == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setenv("PIPELINE_WORKERS", "3")
    assert cpu_allowance() == 3


def test_array_index_must_be_set_and_in_range() -> None:
    assert array_index({"AWS_BATCH_JOB_ARRAY_INDEX": "3"}, size=4) == 3
    with pytest.raises(JobError, match="AWS_BATCH_JOB_ARRAY_INDEX is ''"):
        array_index({})
    with pytest.raises(JobError, match="outside the array of 4"):
        array_index({"AWS_BATCH_JOB_ARRAY_INDEX": "4"}, size=4)


def test_a_rerun_of_failed_children_maps_to_the_original_indices() -> None:
    assert array_index({"AWS_BATCH_JOB_ARRAY_INDEX": "1", "PIPELINE_INDEX_MAP": "3,17"}) == 17
    assert array_index({"PIPELINE_INDEX_MAP": "3"}, size=8) == 3  # a single child: standard job
    with pytest.raises(JobError, match="does not select one of PIPELINE_INDEX_MAP='3,17'"):
        array_index({"AWS_BATCH_JOB_ARRAY_INDEX": "2", "PIPELINE_INDEX_MAP": "3,17"})


def test_missing_environment_is_one_clear_error() -> None:
    with pytest.raises(JobError, match="environment variable PIPELINE_RUN_ID is not set"):
        RunContext.from_env({})


# --- faults ------------------------------------------------------------------------------------


def _snapshot(world: World) -> dict[str, Any]:
    ctx, prefix = world.ctx, contract.run_prefix(world.ctx.run_id)
    objects = {}
    for bucket in (ctx.cpu_results_bucket, ctx.memory_results_bucket):
        for key in world.keys(bucket, prefix):
            objects[(bucket, key)] = world.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    items = sorted(world.items(), key=lambda i: i[contract.TABLE_SORT_KEY]["S"])
    return {"objects": objects, "items": items}


@pytest.mark.slow  # a few seconds: in the full suite, not the fast loop
def test_a_child_run_twice_gives_identical_outputs() -> None:
    with jobs_world(array_size=2) as world:
        world.put_inputs(sample_inputs(60))
        job_a.run(world.s3, world.ctx)
        for shard in range(2):
            job_b.run(world.s3, world.ctx, shard, workers=1)
            job_c.run(world.s3, world.dynamodb, world.ctx, shard)
        first = _snapshot(world)
        # WHEN Batch retries child 1 of JobB and of JobC
        job_b.run(world.s3, world.ctx, 1, workers=1)
        job_c.run(world.s3, world.dynamodb, world.ctx, 1)
        second = _snapshot(world)
    assert second == first
    assert len(first["items"]) == 57


class _Unreliable:
    """A DynamoDB client whose first BatchWriteItem leaves half the items unprocessed."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        self.calls += 1
        ((table, requests),) = RequestItems.items()
        if self.calls == 1 and len(requests) > 1:
            half = len(requests) // 2
            self.real.batch_write_item(RequestItems={table: requests[:half]})
            return {"UnprocessedItems": {table: requests[half:]}}
        return dict(self.real.batch_write_item(RequestItems=RequestItems))


def test_unprocessed_dynamodb_items_are_retried() -> None:
    with jobs_world(array_size=1) as world:
        world.put_inputs({f"k{i}": b"data" for i in range(10)})
        job_a.run(world.s3, world.ctx)
        job_b.run(world.s3, world.ctx, 0, workers=1)
        flaky = _Unreliable(world.dynamodb)
        slept: list[float] = []
        job_c.run(world.s3, flaky, world.ctx, 0, sleep=slept.append)  # type: ignore[arg-type]
        assert len(world.items()) == 10
    assert flaky.calls == 2
    assert len(slept) == 1


def test_items_still_unprocessed_fail_naming_the_first_key() -> None:
    class NeverWrites:
        def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
            return {"UnprocessedItems": RequestItems}

    items = [{contract.TABLE_SORT_KEY: {"S": f"key-{i}"}} for i in range(3)]
    with pytest.raises(JobError, match="3 items still unprocessed after 8 attempts, first 'key-0'"):
        job_c.write_items(NeverWrites(), "table", items, sleep=lambda _: None)  # type: ignore[arg-type]


def test_an_empty_bucket_fails_at_the_third_check_saying_why() -> None:
    # GIVEN an empty input bucket and the default steps
    # WHEN the run reaches JobD
    with jobs_world(array_size=2) as world, pytest.raises(JobError) as failure:
        world.run_until_e()
    # THEN its third check fails, saying nothing was listed and how to allow it
    assert str(failure.value) == (
        "check 2 (rejects have reasons) failed with 1 problem(s); first: the run processed no "
        "object: no object was listed in BucketA; check the input, or let such runs succeed "
        "with PipelineSteps(allow_empty_runs=True)"
    )


def test_an_empty_bucket_completes_with_a_report_of_zero_objects_when_allowed() -> None:
    from dataclasses import replace

    with jobs_world(array_size=2) as world:
        world.steps = replace(world.steps, allow_empty_runs=True)
        world.run_all()
        summary = world.get_json(world.ctx.output_bucket, contract.summary_key(world.ctx.run_id))
        (message,) = world.notifications()
    assert summary["objects"] == {"listed": 0, "processed": 0, "rejected": 0}
    assert [c["passed"] for c in summary["checks"]] == [True] * 10
    assert "0 objects processed" in message["Message"]


def test_a_tampered_output_fails_the_right_check_naming_the_key() -> None:
    with jobs_world(array_size=2) as world:
        world.put_inputs({"keep.txt": b"fine", "target file.txt": b"original"})
        job_a.run(world.s3, world.ctx)
        for shard in range(2):
            job_b.run(world.s3, world.ctx, shard, workers=1)
            job_c.run(world.s3, world.dynamodb, world.ctx, shard)
        output_key = contract.memory_output_key(world.ctx.run_id, "target file.txt")
        world.s3.put_object(Bucket=world.ctx.memory_results_bucket, Key=output_key, Body=b"{}")
        for step in range(4):
            job_d.run(world.s3, world.dynamodb, world.ctx, step)
        with pytest.raises(JobError) as failure:
            job_d.run(world.s3, world.dynamodb, world.ctx, 4)
        report = world.get_json(world.ctx.output_bucket, contract.report_key(world.ctx.run_id, 4))
        # AND JobE refuses to clean up after a failed check
        with pytest.raises(JobError, match="check 4 \\(memory stage complete\\) did not pass"):
            world.run_e()
        assert world.keys(world.ctx.cpu_results_bucket) != []
    assert str(failure.value).startswith("check 4 (memory stage complete) failed with 1 problem")
    assert f"{output_key} for 'target file.txt' changed after JobC wrote it" in str(failure.value)
    assert report["passed"] is False


def test_a_lost_object_fails_the_accounting_check() -> None:
    with jobs_world(array_size=1) as world:
        world.put_inputs({"a": b"1", "b": b"2"})
        # JobA lists a minute later, so both objects are older than the listing
        job_a.run(world.s3, world.ctx, clock=lambda: time.time() + 60)
        # GIVEN object 'b' dropped from its shard after JobA listed it
        key = contract.manifest_key(world.ctx.run_id, 0)
        manifest = world.get_json(world.ctx.cpu_results_bucket, key)
        manifest["objects"] = [o for o in manifest["objects"] if o["key"] != "b"]
        world.s3.put_object(
            Bucket=world.ctx.cpu_results_bucket, Key=key, Body=json.dumps(manifest).encode()
        )
        with pytest.raises(JobError, match="input 'b' is in no shard and not rejected"):
            job_d.run(world.s3, world.dynamodb, world.ctx, 1)


def test_an_object_added_after_listing_is_not_part_of_the_run() -> None:
    with jobs_world(array_size=1) as world:
        world.put_inputs({"a": b"1", "b": b"2"})
        # JobA listed a minute ago, so what is written now came after the listing
        job_a.run(world.s3, world.ctx, clock=lambda: time.time() - 60)
        world.put_inputs({"late arrival": b"3"})
        report = job_d.run(world.s3, world.dynamodb, world.ctx, 1).as_json()
    assert report["passed"]
    assert report["notes"] == [
        "1 object(s) written to BucketA after JobA listed it are not part of this run, "
        "e.g. 'late arrival'"
    ]


def test_an_object_changed_after_listing_never_yields_an_output() -> None:
    with jobs_world(array_size=1) as world:
        world.put_inputs({"a": b"listed\n", "b": b"untouched\n"})
        job_a.run(world.s3, world.ctx)
        # GIVEN 'a' overwritten after the listing, past the size limit JobA checked
        world.put_inputs({"a": b"x" * (world.ctx.max_object_bytes + 1)})
        # WHEN JobB reads its shard, THEN the child fails naming the key, and 'a' has no output
        with pytest.raises(JobError, match="input 'a' changed after JobA listed it"):
            job_b.run(world.s3, world.ctx, 0, 1)
        results = world.keys(world.ctx.cpu_results_bucket, contract.run_prefix(world.ctx.run_id))
    assert contract.cpu_result_key(world.ctx.run_id, "a") not in results
    assert contract.cpu_index_key(world.ctx.run_id, 0) not in results


def test_job_e_parameters() -> None:
    assert job_e.parse_source_bucket("Ref::SourceBucket", "default-bucket") == "default-bucket"
    assert job_e.parse_source_bucket("s3://my-bucket", "x") == "my-bucket"
    assert job_e.parse_recipient("Ref::Recipient") is None
    with pytest.raises(JobError, match="SourceBucket must be an s3:// URL"):
        job_e.parse_source_bucket("my-bucket", "x")


# --- the image ---------------------------------------------------------------------------------


def test_dockerfile_copy_sources_exist_and_entrypoints_import(tmp_path: Path) -> None:
    from pipeline.constructs.image import assemble_context

    images = assemble_context(tmp_path / "context")  # as synthesis assembles it
    dockerfile = (images / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _target = line.split()[1:]
            for source in sources:
                assert (images / source).exists(), f"COPY source {source} is missing"
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)
    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, re.MULTILINE)
    pins = [
        line.strip()
        for line in (images / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert pins
    assert all("==" in pin for pin in pins)
    for module in (job_a, job_b, job_c, job_d, job_e):
        assert callable(module.main)
        tree = ast.parse(Path(str(module.__file__)).read_text())
        assert any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)


def test_spec_commands_name_the_job_programs() -> None:
    from pipeline.spec import DEFAULT_SPEC

    for job in DEFAULT_SPEC:
        module = job.command[2]
        assert (REPO / (module.replace(".", "/") + ".py")).exists()


def test_jobds_checks_share_one_shard_view_per_jobd_job() -> None:
    # GIVEN a run through JobC with 40 shards
    with jobs_world(array_size=40) as world:
        world.put_inputs(sample_inputs(12))
        world.run_through_c()
        reads = world.object_reads()
        # WHEN JobD "job-1" runs its first check, then the rest
        job_d.run(world.s3, world.dynamodb, world.ctx, 0, validation_job_id="job-1")
        first = len(reads)
        for step in range(1, contract.VALIDATION_STEPS):
            job_d.run(world.s3, world.dynamodb, world.ctx, step, validation_job_id="job-1")
        # THEN the first read every shard's JobC record, which holds JobB's index and the
        # manifest as read (intact: their MD5s are the listed ETags), and wrote the view; the
        # others read the view, not 40 records each
        assert len([k for k in reads[:first] if "/memory-index/" in k]) == 40
        assert [k for k in reads[:first] if "/manifest/" in k or "/cpu-index/" in k] == []
        shard_reads = [k for k in reads[first:] if "/manifest/" in k or "-index/" in k]
        assert shard_reads == []
        view = contract.shard_view_key(world.ctx.run_id, "job-1")
        # (each check that needs the shards reads the view once)
        assert 1 <= reads[first:].count(view) <= contract.VALIDATION_STEPS - 1
        # AND another JobD job (a resumed run's) reads the shards afresh
        reads.clear()
        job_d.run(world.s3, world.dynamodb, world.ctx, 0, validation_job_id="job-2")
        assert len([k for k in reads if "/memory-index/" in k]) == 40


def test_a_shard_record_changed_after_it_was_read_is_read_from_s3() -> None:
    # GIVEN a run through JobC, then JobB's index of shard 1 rewritten with an object missing
    with jobs_world(array_size=2) as world:
        world.put_inputs(sample_inputs(6))
        world.run_through_c()
        key = contract.cpu_index_key(world.ctx.run_id, 1)
        index = world.get_json(world.ctx.cpu_results_bucket, key)
        lost = index["objects"].pop()["key"]
        world.s3.put_object(
            Bucket=world.ctx.cpu_results_bucket, Key=key, Body=json.dumps(index).encode()
        )
        reads = world.object_reads()
        # WHEN JobD checks the JobB results
        for step in range(3):
            job_d.run(world.s3, world.dynamodb, world.ctx, step)
        with pytest.raises(JobError) as failure:
            job_d.run(world.s3, world.dynamodb, world.ctx, 3)
    # THEN it read the stored index (JobC's copy no longer matches it), not the copy, and the
    # check names the object whose JobB result is gone from it
    assert key in reads
    assert contract.cpu_index_key(world.ctx.run_id, 0) not in reads
    assert f"{lost!r} has no JobB entry" in str(failure.value)


def test_jobe_sums_the_childrens_seconds_from_the_shard_view_not_a_record_each() -> None:
    # GIVEN children that ran a second each (by their clock) and kept it in their shard records
    with jobs_world(array_size=3) as world:
        world.put_inputs(sample_inputs(6))
        job_a.run(world.s3, world.ctx)
        for shard in range(3):
            job_b.run(world.s3, world.ctx, shard, 1, started=41.0, clock=lambda: 42.0)
            job_c.run(
                world.s3,
                world.dynamodb,
                world.ctx,
                shard,
                sleep=lambda _: None,
                started=41.0,
                clock=lambda: 42.0,
            )
        for step in range(contract.VALIDATION_STEPS):
            job_d.run(world.s3, world.dynamodb, world.ctx, step, validation_job_id="d-1")
        # WHEN JobE summarizes the run
        world.run_e()
        summary = world.get_json(world.ctx.output_bucket, contract.summary_key(world.ctx.run_id))
        timing_objects = world.keys(
            world.ctx.output_bucket, contract.run_prefix(world.ctx.run_id) + "timings/"
        )
    # THEN JobB and JobC each took three seconds in all, and no child wrote a timing
    # object of its own (the view went with the intermediates)
    assert summary["seconds_by_job"]["JobB"] == 3.0
    assert summary["seconds_by_job"]["JobC"] == 3.0
    assert not any("JobB" in k or "JobC" in k for k in timing_objects)


def test_jobds_later_checks_list_no_bucket_and_query_no_table() -> None:
    # GIVEN a run through JobC
    with jobs_world(array_size=4) as world:
        world.put_inputs(sample_inputs(12))
        world.run_through_c()
        calls: list[str] = []
        for client in (world.s3, world.dynamodb):
            client.meta.events.register(
                "before-parameter-build.*.*",
                lambda params, model, **_: calls.append(
                    f"{model.name} {params.get('Bucket', '')}".strip()
                ),
            )
        # WHEN JobD "job-1" runs its ten checks
        first: list[str] = []
        for step in range(contract.VALIDATION_STEPS):
            job_d.run(world.s3, world.dynamodb, world.ctx, step, validation_job_id="job-1")
            if not first and "Query" in calls:
                first = list(calls)
        # THEN the check that wrote the view listed BucketB's results and BucketC's outputs
        # and queried the table, and the checks after it did none of those: they read the view
        stage_buckets = (world.ctx.cpu_results_bucket, world.ctx.memory_results_bucket)
        listings = [f"ListObjectsV2 {bucket}" for bucket in stage_buckets]
        assert first.count("Query") == 1
        assert all(listing in first for listing in listings)
        later = calls[len(first) :]
        assert "Query" not in later
        assert [call for call in later if call in listings] == []
