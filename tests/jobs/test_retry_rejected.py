"""Fix a step, then retry the objects it rejected (``resume RUN_ID --rejected``), as the job
programs do it: JobB and JobC redo the rejected objects of their shard only, JobD checks the
run as it then stands, JobE writes the summary, rejects and aggregate anew. The jobs run in
this process on moto's S3 and DynamoDB; each step in a worker process, which imports the
step's module afresh, so a fixed module is what the retry runs."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from helpers.jobs_world import World, jobs_world
from pipeline import contract
from pipeline.jobs import job_b, job_c, job_d
from pipeline.jobs.aws_calls import JobError
from pipeline.steps import PipelineSteps, Step

BROKEN = textwrap.dedent(
    """
    def revenue(source, target, obj):
        text = source.read_text()
        if "{" in text:
            raise ValueError("unexpected '{' in field name")
        target.write_text(text)
        return {"chars": len(text)}


    def keep(source, target, obj):
        target.write_text(source.read_text())
        return {"bytes": obj.size}


    def total(items):
        return {"files": sum(1 for _ in items)}
    """
)
FIXED = BROKEN.replace("raise ValueError(\"unexpected '{' in field name\")", "text = text.strip()")
INPUTS = {
    **{f"sales/ok-{n}.csv": b"sku,qty\nA,1\n" for n in range(5)},
    "sales/braces-1.csv": b"sku,qty\n{A},1\n",
    "sales/braces-2.csv": b"sku,qty\n{B},2\n",
    "sales/empty.csv": b"",
}


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "retrysteps.py"
    path.write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


STEPS = PipelineSteps(
    cpu=Step.python("retrysteps:revenue"),
    memory=Step.python("retrysteps:keep"),
    aggregate=Step.python("retrysteps:total"),
)


def _retry(world: World, token: str) -> dict[str, Any]:
    """The jobs a resume --rejected submits (JobA kept), run in Batch's order."""
    world.ctx = replace(world.ctx, retry_rejected=token)
    for shard in range(world.ctx.array_size):
        job_b.run(world.s3, world.ctx, shard, 1, step=world.steps.cpu)
    for shard in range(world.ctx.array_size):
        job_c.run(world.s3, world.dynamodb, world.ctx, shard, step=world.steps.memory)
    for check in range(contract.VALIDATION_STEPS):
        job_d.run(world.s3, world.dynamodb, world.ctx, check, checks=world.steps.checks)
    return world.run_e()


def _outcome(world: World) -> tuple[dict[str, Any], list[Any]]:
    run_id = world.ctx.run_id
    summary = world.get_json(world.ctx.output_bucket, contract.summary_key(run_id))
    rejects = world.get_json(world.ctx.output_bucket, contract.rejects_key(run_id))["rejects"]
    return summary, rejects


def test_a_fixed_step_retried_on_a_finished_runs_rejects_brings_the_run_up_to_date(
    module: Path,
) -> None:
    with jobs_world(array_size=3) as world:
        # GIVEN a run whose CPU step rejected the two files with braces, and that ended
        world.steps = STEPS
        world.put_inputs(INPUTS)
        world.run_all()
        summary, rejects = _outcome(world)
        assert summary["objects"] == {"listed": 8, "processed": 5, "rejected": 3}
        assert len(world.items()) == 5
        # WHEN the step is fixed and the run's rejected objects retried
        module.write_text(FIXED)
        reads = world.object_reads()
        _retry(world, "20261207T120000-ab12")
        summary, rejects = _outcome(world)
        # THEN only the rejected inputs were read again ...
        inputs_read = sorted(k for k in reads if k.startswith("sales/"))
        assert inputs_read == ["sales/braces-1.csv", "sales/braces-2.csv"]
        # ... and the summary, rejects, items, aggregate and outputs are up to date
        assert summary["objects"] == {"listed": 8, "processed": 7, "rejected": 1}
        assert summary["retry"] == "20261207T120000-ab12"
        assert all(check["passed"] for check in summary["checks"])
        assert summary["aggregate"]["result"] == {"files": 7}
        assert rejects == [
            {
                "key": "sales/empty.csv",
                "reason": "empty object (0 bytes)",
                "size": 0,
                "stage": "listing",
            }
        ]
        assert len(world.items()) == 7
        outputs = world.keys(world.ctx.memory_results_bucket, "runs/")
        assert contract.memory_output_key(world.ctx.run_id, "sales/braces-1.csv") in outputs
        # AND the run notified again, once
        assert len(world.notifications()) == 2
        # AND nothing is left in BucketB
        assert world.keys(world.ctx.cpu_results_bucket) == []


def test_a_retry_of_a_run_that_failed_its_checks_finishes_it(module: Path) -> None:
    with jobs_world(array_size=2) as world:
        # GIVEN a run whose every object the CPU step rejected, which JobD failed
        world.steps = STEPS
        world.put_inputs({"a.csv": b"{x}", "b.csv": b"{y}"})
        with pytest.raises(JobError, match="the run processed no object"):
            world.run_until_e()
        # WHEN the step is fixed and the rejected objects retried
        module.write_text(FIXED)
        _retry(world, "20261207T120000-cd34")
        summary, rejects = _outcome(world)
    # THEN the run ends with every object processed, and its first summary
    assert summary["objects"] == {"listed": 2, "processed": 2, "rejected": 0}
    assert rejects == []


def test_an_object_rejected_again_stays_rejected_with_its_new_reason(module: Path) -> None:
    with jobs_world(array_size=2) as world:
        world.steps = STEPS
        world.put_inputs({"a.csv": b"fine", "b.csv": b"{y}"})
        world.run_all()
        # WHEN the retry runs a step still broken for that object, another way
        module.write_text(BROKEN.replace("unexpected '{' in field name", "still braces"))
        _retry(world, "20261207T120000-ef56")
        summary, rejects = _outcome(world)
    # THEN it is rejected again, with what the step says now, and the rest is unchanged
    assert summary["objects"] == {"listed": 2, "processed": 1, "rejected": 1}
    assert rejects == [
        {"key": "b.csv", "reason": "cpu step: ValueError: still braces", "stage": "cpu"}
    ]


def test_a_memory_steps_rejects_are_retried_from_the_input(module: Path) -> None:
    with jobs_world(array_size=2) as world:
        # GIVEN a run whose memory step rejected one object
        module.write_text(
            BROKEN + "\n\ndef picky(source, target, obj):\n"
            "    if 'b' in obj.key:\n        raise ValueError('no b')\n"
            "    target.write_text('x')\n    return {}\n"
        )
        world.steps = replace(STEPS, memory=Step.python("retrysteps:picky"))
        world.put_inputs({"a.csv": b"fine", "b.csv": b"also fine"})
        world.run_all()
        assert _outcome(world)[0]["objects"]["processed"] == 1
        # WHEN the memory step is fixed and the rejected objects retried
        module.write_text(module.read_text().replace("raise ValueError('no b')", "pass"))
        _retry(world, "20261207T120000-0a0b")
        summary, _ = _outcome(world)
    # THEN the object went through both steps again, and the run is whole
    assert summary["objects"] == {"listed": 2, "processed": 2, "rejected": 0}
    assert all(check["passed"] for check in summary["checks"])


def test_a_retry_of_a_run_without_rejects_changes_nothing_it_processed(module: Path) -> None:
    with jobs_world(array_size=2) as world:
        world.steps = STEPS
        world.put_inputs({"a.csv": b"fine", "b.csv": b"fine too"})
        world.run_all()
        before = world.items()
        _retry(world, "20261207T120000-1c1d")
        summary, _ = _outcome(world)
        assert world.items() == before
    assert summary["objects"] == {"listed": 2, "processed": 2, "rejected": 0}


def test_a_result_kept_before_of_an_object_the_cpu_step_now_rejects_is_removed(
    module: Path,
) -> None:
    with jobs_world(array_size=2) as world:
        # GIVEN a run that JobD failed (its memory step rejected everything), whose CPU
        # results are still in BucketB
        picky = "\n\ndef picky(source, target, obj):\n    raise ValueError('not yet')\n"
        module.write_text(BROKEN + picky)
        world.steps = replace(STEPS, memory=Step.python("retrysteps:picky"))
        world.put_inputs({"a.csv": b"fine", "b.csv": b"fine too"})
        with pytest.raises(JobError, match="the run processed no object"):
            world.run_until_e()
        # WHEN the retry's CPU step rejects one of them, and its memory step is fixed
        fixed = "\n\ndef picky(source, target, obj):\n    target.write_text('x')\n    return {}\n"
        module.write_text(BROKEN.replace('if "{" in text', 'if "too" in text') + fixed)
        _retry(world, "20261207T120000-2e2f")
        summary, rejects = _outcome(world)
    # THEN no result of it is left over (JobD's no-orphans check passed), and it is rejected
    assert summary["objects"] == {"listed": 2, "processed": 1, "rejected": 1}
    assert [r["key"] for r in rejects] == ["b.csv"]


def test_a_retry_redoes_only_what_is_rejected_now_not_what_an_earlier_retry_redid(
    module: Path,
) -> None:
    with jobs_world(array_size=3) as world:
        # GIVEN a run whose CPU step rejected the two files with braces, retried twice with
        # the step fixed (the second retry had nothing left to redo)
        world.steps = STEPS
        world.put_inputs(INPUTS)
        world.run_all()
        module.write_text(FIXED)
        _retry(world, "20261207T120000-aa01")
        _retry(world, "20261207T120000-aa02")
        # WHEN the step is broken again and the rejected objects retried once more
        module.write_text(BROKEN)
        reads = world.object_reads()
        _retry(world, "20261207T120000-aa03")
        summary, rejects = _outcome(world)
    # THEN no input was read again (none is rejected by a step now) and the run is as it was:
    # every check passed, no object the fixed step did is rejected, no output left over
    assert sorted(k for k in reads if k.startswith("sales/")) == []
    assert summary["objects"] == {"listed": 8, "processed": 7, "rejected": 1}
    assert all(check["passed"] for check in summary["checks"])
    assert [r["key"] for r in rejects] == ["sales/empty.csv"]
