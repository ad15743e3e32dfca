"""The CPU step's facts reach the run's outputs beside the memory step's: each object's table
item holds them (``cpu_facts``), and the aggregate step gets them with its items."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers.jobs_world import jobs_world
from pipeline import contract
from pipeline.steps import PipelineSteps, Step

SALES = textwrap.dedent(
    """
    def revenue(source, target, obj):
        rows = [line.split(",") for line in source.read_text().splitlines()[1:]]
        target.write_text(source.read_text())
        return {"revenue": round(sum(int(q) * float(p) for _, q, p in rows), 2)}


    def lines(source, target, obj):
        target.write_text(source.read_text())
        return {"lines": len(source.read_text().splitlines())}


    def claims_cpu_facts(source, target, obj):
        target.write_text("x")
        return {"cpu_facts": "mine"}


    def total(items):
        items = list(items)
        return {
            "revenue": round(sum(i["cpu_facts"]["revenue"] for i in items), 2),
            "lines": sum(i["lines"] for i in items),
        }
    """
)


@pytest.fixture
def sales(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "salessteps.py").write_text(SALES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "salessteps"


INPUTS = {
    "day-1.csv": b"sku,qty,price\nA,2,1.50\nB,1,4.00\n",
    "day-2.csv": b"sku,qty,price\nC,3,2.00\n",
}


def test_the_cpu_steps_facts_are_in_each_item_and_the_aggregate(sales: str) -> None:
    # GIVEN a CPU step that returns revenue, a memory step that counts lines, and an
    # aggregate over both
    steps = PipelineSteps(
        cpu=Step.python(f"{sales}:revenue"),
        memory=Step.python(f"{sales}:lines"),
        aggregate=Step.python(f"{sales}:total"),
    )
    # WHEN a run runs them
    with jobs_world(array_size=2) as world:
        world.steps = steps
        world.put_inputs(INPUTS)
        world.run_all()
        items = {i[contract.TABLE_SORT_KEY]["S"]: i for i in world.items()}
        summary = world.get_json(world.ctx.output_bucket, contract.summary_key(world.ctx.run_id))
    # THEN each item holds the CPU step's facts beside the memory step's attributes
    assert items["day-1.csv"]["cpu_facts"] == {"M": {"revenue": {"N": "7.0"}}}
    assert items["day-1.csv"]["lines"] == {"N": "3"}
    # AND the aggregate saw both, and every check passed
    assert summary["aggregate"]["result"] == {"revenue": 13.0, "lines": 5}
    assert all(check["passed"] for check in summary["checks"])


def test_a_memory_step_may_not_return_the_attribute_that_holds_them(sales: str) -> None:
    steps = PipelineSteps(
        cpu=Step.python(f"{sales}:revenue"), memory=Step.python(f"{sales}:claims_cpu_facts")
    )
    with jobs_world(array_size=2) as world:
        world.steps = steps
        world.put_inputs(INPUTS)
        world.run_through_c()
        record = world.get_json(
            world.ctx.memory_results_bucket, contract.memory_index_key(world.ctx.run_id, 0)
        )
    (entry,) = record["objects"]
    assert entry["rejected"] == (
        "memory step: attribute 'cpu_facts' is the pipeline's own; rename it"
    )
