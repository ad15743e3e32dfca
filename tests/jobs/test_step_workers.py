"""Steps as a user writes them for real work: a command with awk's braces, a step that hangs on
one object, one that kills its worker, one that takes more memory than it declared. Each is run
by the job programs over a run (moto's S3 and DynamoDB, in this process; every step in a worker
process), and the run goes on with every object accounted for."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.jobs_world import jobs_world
from pipeline import contract
from pipeline.jobs.aws_calls import JobError
from pipeline.jobs.runner import ObjectRejectedError, StepCaller
from pipeline.jobs.step_calls import memory_limit_method
from pipeline.jobs.workers import StepWorkers
from pipeline.steps import ObjectRef, PipelineSteps, Step

WORK = textwrap.dedent(
    """
    import os
    import signal
    import time


    def count(source, target, obj):
        text = source.read_text()
        if "HANG" in text:
            time.sleep(3600)
        if "EXIT" in text:
            os._exit(3)
        if "KILL" in text:
            os.kill(os.getpid(), signal.SIGKILL)
        if "GREEDY" in text:
            hoard = bytearray(500 * 1024 * 1024)
            hoard[-1] = 1
        if "SLOW" in text:
            time.sleep(1)
        print('{"returned": "what a step prints is not its answer"}')
        target.write_text(text)
        return {"chars": len(text)}


    def keep(source, target, obj):
        target.write_bytes(source.read_bytes())
        return {"bytes": obj.size}
    """
)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's module of steps, importable as ``worksteps`` (by the job and its workers)."""
    (tmp_path / "worksteps.py").write_text(WORK)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "worksteps"


def _run(steps: PipelineSteps, inputs: dict[str, bytes]) -> tuple[dict[str, Any], list[Any]]:
    """The run, A to E; (its summary, its rejects)."""
    with jobs_world(array_size=2) as world:
        world.steps = steps
        world.put_inputs(inputs)
        world.run_all()
        run_id = world.ctx.run_id
        summary = world.get_json(world.ctx.output_bucket, contract.summary_key(run_id))
        rejects = world.get_json(world.ctx.output_bucket, contract.rejects_key(run_id))
        return summary, rejects["rejects"]


def _fine(count: int) -> dict[str, bytes]:
    return {f"ok-{n}.txt": b"plain words here" for n in range(count)}


def test_an_awk_template_with_braces_runs_as_written() -> None:
    # GIVEN a command step in awk, braces and all, summing revenue per SKU
    awk = (
        "awk -F, 'NR > 1 {revenue[$1] += $2 * $3} "
        'END {for (sku in revenue) printf "%s %.2f\\n", sku, revenue[sku]}\' {input} '
        "| sort > {output}"
    )
    steps = PipelineSteps(cpu=Step.command(awk), memory=Step.command("cp {input} {output}")).check()
    sales = {
        "day-1.csv": b"sku,qty,price\nA,2,1.50\nB,1,4.00\nA,1,1.50\n",
        "day-2.csv": b"sku,qty,price\nC,3,2.00\n",
    }
    # WHEN a run runs it
    with jobs_world(array_size=2) as world:
        world.steps = steps
        world.put_inputs(sales)
        world.run_all()
        summary = world.get_json(world.ctx.output_bucket, contract.summary_key(world.ctx.run_id))
        output = world.s3.get_object(
            Bucket=world.ctx.memory_results_bucket,
            Key=contract.memory_output_key(world.ctx.run_id, "day-1.csv"),
        )["Body"].read()
    # THEN every file was processed, and awk saw its program as written
    assert summary["objects"] == {"listed": 2, "processed": 2, "rejected": 0}
    assert output == b"A 4.50\nB 4.00\n"


def test_a_step_that_hangs_on_one_object_is_stopped_and_the_run_goes_on(work: str) -> None:
    # GIVEN a step with a 1-second limit per object, and one object it hangs on
    steps = PipelineSteps(
        cpu=Step.python(f"{work}:count", object_timeout=1), memory=Step.python(f"{work}:keep")
    ).check()
    inputs = {**_fine(5), "stuck.txt": b"HANG forever"}
    # WHEN a run runs it
    summary, rejects = _run(steps, inputs)
    # THEN that object is rejected for its time, and every other one is processed
    assert rejects == [
        {"key": "stuck.txt", "reason": "cpu step: timed out after 1 s", "stage": "cpu"}
    ]
    assert summary["objects"] == {"listed": 6, "processed": 5, "rejected": 1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"EXIT now", "cpu step: the step's worker exited with status 3"),
        (
            b"KILL me",
            "cpu step: the step's worker was killed by SIGKILL (as the kernel does when memory "
            "runs out)",
        ),
    ],
)
def test_a_step_that_kills_its_worker_rejects_that_object_only(
    work: str, body: bytes, reason: str
) -> None:
    # GIVEN a step that ends its own process on one object of six (three per child)
    steps = PipelineSteps(cpu=Step.python(f"{work}:count"), memory=Step.python(f"{work}:keep"))
    inputs = {**_fine(5), "crash.txt": body}
    # WHEN a run runs it
    summary, rejects = _run(steps, inputs)
    # THEN the object it was on is rejected with the exit status or signal, and the child's
    # other objects are processed by a new worker
    assert rejects == [{"key": "crash.txt", "reason": reason, "stage": "cpu"}]
    assert summary["objects"] == {"listed": 6, "processed": 5, "rejected": 1}


@pytest.mark.skipif(memory_limit_method() is None, reason="this system has no RLIMIT_DATA")
def test_a_step_is_held_to_its_memory_mib(work: str) -> None:
    # GIVEN a step declared at 64 MiB that allocates 500 MB on one object
    steps = PipelineSteps(
        cpu=Step.python(f"{work}:count", memory_mib=64), memory=Step.python(f"{work}:keep")
    )
    inputs = {**_fine(3), "greedy.txt": b"GREEDY"}
    # WHEN a run runs it
    summary, rejects = _run(steps, inputs)
    # THEN that object is rejected for its memory, and the others are processed
    assert rejects == [
        {
            "key": "greedy.txt",
            "reason": "cpu step: MemoryError: the step ran out of its memory_mib (64 MiB)",
            "stage": "cpu",
        }
    ]
    assert summary["objects"]["processed"] == 3


def test_a_crashed_worker_is_replaced_for_the_next_object(work: str, tmp_path: Path) -> None:
    # GIVEN a caller with one worker, whose step kills it on the first object
    caller = StepCaller(Step.python(f"{work}:count"), workers=1)
    first, second = tmp_path / "a.in", tmp_path / "b.in"
    first.write_text("EXIT")
    second.write_text("fine")
    try:
        # WHEN it is called on that object, then on another
        with pytest.raises(ObjectRejectedError, match="exited with status 3"):
            caller(first, tmp_path / "a.out", ObjectRef("a", 4, "e"))
        facts = caller(second, tmp_path / "b.out", ObjectRef("b", 4, "e"))
    finally:
        caller.close()
    # THEN the second object is processed, and what the step printed was not its answer
    assert facts == {"chars": 4}


def test_an_object_a_step_is_long_on_is_named_in_the_log(work: str, tmp_path: Path) -> None:
    # GIVEN workers that name an object after 0.3 s on it
    lines: list[str] = []
    workers = StepWorkers(
        Step.python(f"{work}:count"), workers=1, stage="cpu", log=lines.append, slow_after=0.3
    )
    source = tmp_path / "slow.in"
    source.write_text("SLOW")
    try:
        # WHEN the step takes a second on it
        workers.call(source, tmp_path / "slow.out", ObjectRef("in/slow one.txt", 4, "e"))
    finally:
        workers.close()
    # THEN the log named it while it ran, then said it was done
    assert len(lines) == 2
    assert lines[0].startswith('cpu step: on "in/slow one.txt" since ')
    assert lines[1].startswith('cpu step: done with "in/slow one.txt" after ')
    # AND that is what progress reads back: on it while running, nothing once done
    stage, key, _since = contract.slow_object(lines[:1]) or ("", "", 0.0)
    assert (stage, key) == ("cpu", "in/slow one.txt")
    assert contract.slow_object(lines) is None


def test_a_timed_out_command_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    # GIVEN a shell command that starts a long sleep, limited to 1 s per object
    marker = tmp_path / "survived"
    step = Step.command(
        f"(sleep 2; touch {marker}) & wait; cp {{input}} {{output}}", object_timeout=1
    )
    caller = StepCaller(step, workers=1)
    source = tmp_path / "x.in"
    source.write_text("x")
    try:
        # WHEN it runs past its time
        with pytest.raises(ObjectRejectedError, match=r"^timed out after 1 s$"):
            caller(source, tmp_path / "x.out", ObjectRef("x", 1, "e"))
    finally:
        caller.close()
    # THEN the process it started was stopped with it (its marker never appears)
    time.sleep(1.5)
    assert not marker.exists()


def test_a_run_whose_every_object_is_rejected_fails_saying_why(work: str) -> None:
    # GIVEN a memory step that fails on every object (it expects the wrong file)
    steps = PipelineSteps(
        cpu=Step.python(f"{work}:count"), memory=Step.command("cp {input}.csv {output}")
    )
    # WHEN a run reaches JobD
    with jobs_world(array_size=2) as world:
        world.steps = steps
        world.put_inputs(_fine(3))
        with pytest.raises(JobError) as failure:
            world.run_until_e()
        run_id = world.ctx.run_id
    # THEN the run fails at the third check, naming a reject and the way to re-run them
    assert str(failure.value).startswith(
        "check 2 (rejects have reasons) failed with 1 problem(s); first: the run processed no "
        "object: all 3 listed objects were rejected, first 'ok-0.txt': memory step: the command "
        "exited 1: "
    )
    assert str(failure.value).endswith(
        f"fix the steps and re-run what they rejected with `python -m pipeline.submit resume "
        f"{run_id} --rejected`, or let such runs succeed with "
        "PipelineSteps(allow_empty_runs=True)"
    )
