"""The step contract: your work in JobB, JobC and JobE, refused in one line when it cannot work,
and every guarantee of the pipeline kept around it (rejects, checks, retries, the summary)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from helpers.batch import cli_in_process, engine_batch
from helpers.jobs_world import jobs_world, sample_inputs
from pipeline import contract
from pipeline.errors import SpecError
from pipeline.jobs import job_d
from pipeline.jobs.aws_calls import JobError, TransientJobError
from pipeline.jobs.runner import ObjectRejectedError, StepCaller, run_command
from pipeline.spec import DEFAULT_SPEC
from pipeline.steps import (
    DEFAULT_STEPS,
    ObjectRef,
    PipelineSteps,
    Step,
    TransientStepError,
    load_steps,
)

USER_MODULE = """
from collections import Counter
from pathlib import Path

from pipeline import PipelineSteps, Step, TransientStepError


def words(source, target, obj):
    text = source.read_text(errors="replace")
    if "REJECT" in text:
        raise ValueError("asked to be rejected")
    if "RETRY" in text:
        raise TransientStepError("the service did not answer")
    target.write_text(text.upper())
    return {"words": len(text.split())}


def tally(source, target, obj):
    counts = Counter(source.read_text().split())
    target.write_text(str(len(counts)))
    return {"distinct": len(counts), "ratio": 0.5}


def total(items):
    items = list(items)
    return {"files": len(items), "distinct": sum(i["distinct"] for i in items)}


def no_big_files(records):
    return [f"{r.key} has {r.cpu['words']} words" for r in records if r.cpu["words"] > 1000]


def broken_check(records):
    raise RuntimeError("the check itself broke")


def two_arguments(source, target):
    return None


STEPS = PipelineSteps(
    cpu=Step.python("usersteps:words"),
    memory=Step.python("usersteps:tally"),
    aggregate=Step.python("usersteps:total"),
    checks=("usersteps:no_big_files",),
)
WRONG_SIGNATURE = PipelineSteps(cpu=Step.python("usersteps:two_arguments"), memory=STEPS.memory)
NOT_STEPS = "a string"
"""


@pytest.fixture
def usersteps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PipelineSteps:
    """A user's module of steps, importable as ``usersteps``."""
    (tmp_path / "usersteps.py").write_text(USER_MODULE)
    (tmp_path / "breaks_on_import.py").write_text("raise RuntimeError('no config file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return load_steps("usersteps:STEPS")


# --- refused in one line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("usersteps", "steps 'usersteps' must name an object like 'package.module:STEPS'"),
        ("nosuchmodule:STEPS", "steps 'nosuchmodule:STEPS' do not import: ModuleNotFoundError"),
        ("breaks_on_import:STEPS", "RuntimeError: no config file"),
        ("usersteps:NOT_STEPS", "must be a PipelineSteps object; got str"),
        (
            "usersteps:STEP",
            "steps 'usersteps:STEP': usersteps has no STEP; its PipelineSteps objects: STEPS, "
            "WRONG_SIGNATURE",
        ),
        ("breaks_on_import:X", "RuntimeError: no config file"),
        (
            "usersteps:WRONG_SIGNATURE",
            "cpu step 'usersteps:two_arguments' must take 3 positional arguments: "
            "fn(source, target, obj)",
        ),
    ],
)
def test_steps_that_cannot_work_are_one_line_before_a_local_run(
    usersteps: PipelineSteps, reference: str, message: str
) -> None:
    code, out, err = cli_in_process(None, "--local", "--steps", reference)
    assert code == 252
    assert out == ""
    assert err.startswith("error: ")
    assert message in err
    assert err.count("\n") == 1
    with pytest.raises(SpecError):
        load_steps(reference)


@pytest.mark.parametrize(
    ("step", "role", "message"),
    [
        (Step.command("gzip -9 -c > {output}"), "cpu", "has no {input}: add it"),
        (Step.command(["wc", "{inpt}"]), "cpu", "has {inpt}; only {input} and {output}"),
        (Step.command("cat {input} {outputs}"), "memory", "has {outputs}; only {input} and"),
        (Step.command("cat { input }"), "cpu", "has { input }; only {input} and {output}"),
        (Step.command("cp {source} {output}"), "cpu", "has {source}; only {input} and"),
        (Step.command("sort {input}"), "aggregate", "must be a Python step, not a command"),
        (Step.python("usersteps:nothere"), "cpu", "usersteps has no function nothere"),
        (Step.python("usersteps:words"), "aggregate", "must take 1 positional argument"),
        (
            Step.python("usersteps:words", environment={"AWS_BATCH_JOB_ID": "x"}),
            "cpu",
            "sets AWS_BATCH_JOB_ID, which AWS Batch sets itself",
        ),
    ],
)
def test_a_step_that_cannot_work_says_why(
    usersteps: PipelineSteps, step: Step, role: str, message: str
) -> None:
    with pytest.raises(SpecError) as error:
        step.check(role)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_steps_resources_are_checked_as_its_jobs_are(usersteps: PipelineSteps) -> None:
    from dataclasses import replace

    small = replace(usersteps, memory=Step.python("usersteps:tally", memory_mib=2, vcpus=1))
    with pytest.raises(SpecError, match=r"^the memory step \(JobC\): JobC memory must be"):
        DEFAULT_SPEC.with_steps(small)
    sized = DEFAULT_SPEC.with_steps(
        replace(usersteps, cpu=Step.python("usersteps:words", vcpus=4, timeout=600))
    )
    assert (sized.job("JobB").vcpus, sized.job("JobB").timeout_seconds) == (4, 600)
    assert sized.job("JobC").memory_mib == DEFAULT_SPEC.job("JobC").memory_mib


def test_steps_travel_as_job_definition_variables_and_back(usersteps: PipelineSteps) -> None:
    spec = DEFAULT_SPEC.with_steps(usersteps)
    by_role = {job.step: spec.environment_of(job) for job in spec if job.step}
    assert json.loads(by_role["cpu"][contract.STEP]) == {
        "kind": "python",
        "target": "usersteps:words",
    }
    assert json.loads(by_role["check"][contract.CHECKS]) == ["usersteps:no_big_files"]
    assert PipelineSteps.from_environments(by_role) == usersteps
    assert PipelineSteps.from_json(usersteps.as_json()) == usersteps
    with pytest.raises(SpecError, match="contract version 99"):
        PipelineSteps.from_json({**usersteps.as_json(), "version": 99})


# --- the runner --------------------------------------------------------------------------------


def _files(tmp_path: Path, text: str) -> tuple[Path, Path]:
    source = tmp_path / "in"
    source.write_text(text)
    return source, tmp_path / "out"


def test_a_shell_command_step_writes_its_output(tmp_path: Path) -> None:
    source, target = _files(tmp_path, "b\na\n")
    assert run_command(Step.command("sort {input} > {output}"), source, target) is None
    assert target.read_text() == "a\nb\n"


def test_a_command_without_output_gives_its_standard_output(tmp_path: Path) -> None:
    source, target = _files(tmp_path, "one two three\n")
    run_command(Step.command(["wc", "-w", "{input}"]), source, target)
    assert target.read_text().split()[0] == "3"


def test_a_command_that_prints_a_json_object_returns_it_as_facts(tmp_path: Path) -> None:
    source, target = _files(tmp_path, "x")
    step = Step.command("""cp {input} {output} && echo '{"copied": true}'""")
    assert run_command(step, source, target) == {"copied": True}


def test_a_failing_command_rejects_the_object_with_its_last_line(tmp_path: Path) -> None:
    source, target = _files(tmp_path, "x")
    step = Step.command("echo noise >&2; echo 'bad header' >&2; exit 3; cat {input} > {output}")
    with pytest.raises(ObjectRejectedError, match=r"^the command exited 3: bad header$"):
        run_command(step, source, target)


def test_exit_75_is_transient_and_retries_the_child(tmp_path: Path) -> None:
    source, target = _files(tmp_path, "x")
    caller = StepCaller(Step.command("echo throttled >&2; exit 75 # {input}"), workers=1)
    with pytest.raises(TransientJobError, match="throttled"):
        caller(source, target, ObjectRef("k", 1, "e"))


@pytest.mark.parametrize(
    ("body", "raised", "message"),
    [
        ("REJECT", ObjectRejectedError, "ValueError: asked to be rejected"),
        ("RETRY", TransientJobError, "the service did not answer"),
    ],
)
def test_a_python_step_rejects_or_retries_as_it_raises(
    usersteps: PipelineSteps,
    tmp_path: Path,
    body: str,
    raised: type[Exception],
    message: str,
) -> None:
    source, target = _files(tmp_path, body)
    caller = StepCaller(usersteps.cpu, workers=1)
    with pytest.raises(raised, match=message):
        caller(source, target, ObjectRef("k", 1, "e"))
    assert issubclass(TransientStepError, Exception)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("'text'", "returned a str, not a mapping"),
        ("{'x': object()}", "JSON cannot hold"),
        ("{'x': 'y' * 70_000}", "at most 65,536"),
    ],
)
def test_what_a_step_returns_must_be_a_small_json_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returned: str, message: str
) -> None:
    module = f"returns_{len(returned)}"
    (tmp_path / f"{module}.py").write_text(f"def step(s, t, o):\n    return {returned}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    source, target = _files(tmp_path, "x")
    caller = StepCaller(Step.python(f"{module}:step"), workers=1)
    with pytest.raises(ObjectRejectedError, match=message):
        caller(source, target, ObjectRef("k", 1, "e"))


# --- the pipeline around them -----------------------------------------------------------------


def _run(steps: PipelineSteps, inputs: dict[str, bytes]) -> Any:
    with jobs_world(array_size=3) as world:
        world.steps = steps
        world.put_inputs(inputs)
        world.run_all()
        summary = world.get_json(world.ctx.output_bucket, contract.summary_key(world.ctx.run_id))
        rejects = world.get_json(world.ctx.output_bucket, contract.rejects_key(world.ctx.run_id))
        items = world.items()
        return summary, rejects["rejects"], items


def test_your_steps_run_as_the_stages_with_every_input_accounted_for(
    usersteps: PipelineSteps,
) -> None:
    inputs = {f"doc{n}.txt": b"the cat sat on the mat" for n in range(5)}
    inputs |= {"rejected.txt": b"please REJECT this", "empty.txt": b""}
    summary, rejects, items = _run(usersteps, inputs)
    assert summary["objects"] == {"listed": 7, "processed": 5, "rejected": 2}
    assert [c["passed"] for c in summary["checks"]] == [True] * 10
    assert summary["aggregate"] == {
        "step": "usersteps:total",
        "result": {"files": 5, "distinct": 25},
    }
    assert {(r["key"], r["stage"]) for r in rejects} == {
        ("rejected.txt", "cpu"),
        ("empty.txt", "listing"),
    }
    assert "cpu step: ValueError: asked to be rejected" in [r["reason"] for r in rejects]
    # the library's keys beside the step's attributes; numbers as DynamoDB keeps them
    item = next(i for i in items if i[contract.TABLE_SORT_KEY]["S"] == "doc0.txt")
    assert item["distinct"] == {"N": "5"}
    assert item["ratio"] == {"N": "0.5"}
    assert {"shard", "output_key", "output_md5", "output_size"} <= set(item)


def test_a_run_fails_when_more_than_its_share_of_objects_is_rejected(
    usersteps: PipelineSteps,
) -> None:
    from dataclasses import replace

    strict = replace(usersteps, max_rejected_share=0.1)
    inputs = {"a.txt": b"fine words", "b.txt": b"REJECT", "c.txt": b"more words"}
    with pytest.raises(JobError, match=r"1 of 3 objects were rejected, more than .* 0.1"):
        _run(strict, inputs)


def test_a_check_that_breaks_or_a_malformed_record_is_a_failed_check(
    usersteps: PipelineSteps,
) -> None:
    from dataclasses import replace

    with jobs_world(array_size=2) as world:
        world.put_inputs(sample_inputs(6))
        world.run_through_c()
        # the steps' own check raising, or not importing: a failed check naming it
        with pytest.raises(JobError, match="usersteps:broken_check: RuntimeError: the check"):
            job_d.run(world.s3, world.dynamodb, world.ctx, 9, checks=["usersteps:broken_check"])
        with pytest.raises(JobError, match="nosuch:check: SpecError: check step"):
            job_d.run(world.s3, world.dynamodb, world.ctx, 9, checks=["nosuch:check"])
        # a JobB record whose entry lost a field: the check names the record and the field
        key = contract.cpu_index_key(world.ctx.run_id, 0)
        record = world.get_json(world.ctx.cpu_results_bucket, key)
        del record["objects"][0]["result_key"]
        world.s3.put_object(
            Bucket=world.ctx.cpu_results_bucket, Key=key, Body=json.dumps(record).encode()
        )
        with pytest.raises(JobError, match=r"a malformed record: JobB entry of '.*' has no field"):
            job_d.run(world.s3, world.dynamodb, world.ctx, 3)
    assert replace(usersteps) == usersteps


def test_the_default_steps_are_written_against_the_same_contract() -> None:
    for step in (DEFAULT_STEPS.cpu, DEFAULT_STEPS.memory):
        assert step.kind == "python"
        assert str(step.target).startswith("pipeline.jobs.default_steps:")
    assert DEFAULT_STEPS.check() is DEFAULT_STEPS
    assert DEFAULT_SPEC.steps == DEFAULT_STEPS


def test_steps_module_needs_no_cdk_or_boto3() -> None:
    import subprocess
    import sys

    code = textwrap.dedent(
        """
        import sys
        import pipeline.steps
        assert not any(m.startswith(("aws_cdk", "boto3", "botocore")) for m in sys.modules)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- one system: what is deployed is what runs -------------------------------------------------


def test_on_aws_steps_other_than_the_deployed_are_refused(usersteps: PipelineSteps) -> None:
    from helpers.batch import STACK

    with engine_batch() as aws:
        code, _, err = cli_in_process(aws, "--stack", STACK, "--steps", "usersteps:STEPS")
        assert code == 252
        assert err.startswith(
            "error: --steps name other steps than stack 'ArrayJobPipeline' runs (cpu "
            "pipeline.jobs.default_steps:digest_and_compress, memory "
        )
        assert "deploy yours with ArrayJobPipeline(steps=...)" in err
        # the deployed ones are accepted: the flag means "run these", as with --local
        code, _, err = cli_in_process(
            aws, "--stack", STACK, "--steps", "pipeline.steps:DEFAULT_STEPS", "--dry-run"
        )
        assert code == 0, err


@pytest.mark.slow
def test_a_resumed_local_run_keeps_its_own_steps(
    usersteps: PipelineSteps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_LOCAL_STATE_DIR", str(tmp_path / "state"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(4):
        (inputs / f"{number}.txt").write_text("one two three\n")
    arguments = ["--local", "--array-size", "2", "--input", str(inputs), "--run-id", "own"]
    code, _, _ = cli_in_process(
        None, *arguments, "--steps", "usersteps:STEPS", "--inject", "JobC:1=exit:1"
    )
    assert code == 1
    # other steps for the resume: refused in one line
    code, _, err = cli_in_process(
        None, "resume", "own", "--local", "--steps", "pipeline.steps:DEFAULT_STEPS"
    )
    assert code == 252
    assert err.startswith("error: --steps name other steps than the local services run")
    # without --steps: the run's own steps, not the library's
    code, out, err = cli_in_process(None, "resume", "own", "--local", "--failed-only", "--json")
    assert code == 0, err
    assert json.loads(out)["local"]["summary"]["aggregate"]["step"] == "usersteps:total"
