"""`--array-size auto` (a new run's default): the command lists the run's input and sizes
JobB and JobC to it; the dry run and pre-flight say the size and why; and the dry run's
prediction from `--seconds-per-object` or `--estimate-from`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from helpers.batch import (
    STACK,
    EngineBatch,
    cli_in_process,
    engine_batch,
    stack_document,
    stack_template,
)
from pipeline import contract
from pipeline.jobs import job_a
from pipeline.jobs.aws_calls import S3_CONFIG
from pipeline.jobs.run_context import RunContext
from pipeline.local.run_folder import RunFolder, runs_dir
from pipeline.spec import DEFAULT_SPEC

OBJECTS = {f"in/day-{n:03d}.csv": b"x" * (1 + n % 7) for n in range(300)}


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _submitted(aws: EngineBatch) -> dict[str, dict[str, Any]]:
    """The requests the code under test sends, by job name, as they are sent."""
    sent: dict[str, dict[str, Any]] = {}
    aws.batch.meta.events.register(
        "before-parameter-build.batch.SubmitJob",
        lambda params, **_: sent.__setitem__(params["jobName"], dict(params)),
    )
    return sent


def test_300_objects_give_three_children_and_no_child_without_an_object(
    aws: EngineBatch,
) -> None:
    # GIVEN BucketA holding 300 inputs under in/, and the stack deployed at 10,000 children
    s3 = aws.with_input(OBJECTS)
    sent = _submitted(aws)
    # WHEN a run of in/ is started with --array-size auto
    code, _, err = cli_in_process(
        aws, "--stack", STACK, "--input-prefix", "in/", "--array-size", "auto"
    )
    assert code == 0, err
    # THEN JobB and JobC have 300 / 100 = 3 children, and pre-flight said why
    assert sent["JobB"]["arrayProperties"] == {"size": 3}
    assert sent["JobC"]["arrayProperties"] == {"size": 3}
    assert (
        "submitting; array size 3: 300 objects, 100 per child on average (auto: a child per "
        "100 objects, at most 10,000 deployed)"
    ) in err
    # AND JobA's own program, run as that JobA request says, gives every child a shard
    # with objects in it
    overrides = sent["JobA"]["containerOverrides"]["environment"]
    ctx = RunContext.from_env({e["name"]: e["value"] for e in overrides})
    job_a.run(boto3.client("s3", region_name="us-east-1", config=S3_CONFIG), ctx)
    manifests = [
        json.loads(
            s3.get_object(
                Bucket=ctx.cpu_results_bucket, Key=contract.manifest_key(ctx.run_id, index)
            )["Body"].read()
        )
        for index in range(3)
    ]
    assert all(m["objects"] for m in manifests)
    assert sum(len(m["objects"]) for m in manifests) == 300


def test_a_run_given_no_size_is_sized_as_with_auto(aws: EngineBatch) -> None:
    aws.with_input(OBJECTS)
    sent = _submitted(aws)
    code, _, err = cli_in_process(aws, "--stack", STACK, "--objects-per-child", "30")
    assert code == 0, err
    assert sent["JobB"]["arrayProperties"] == {"size": 10}
    # and a size given is exact, whatever the input
    code, _, err = cli_in_process(aws, "--stack", STACK, "--array-size", "50")
    assert code == 0, err
    assert sent["JobB"]["arrayProperties"] == {"size": 50}
    assert "submitting; array size 50: as given" in err


def test_more_objects_than_the_deployed_size_give_the_deployed_size(aws: EngineBatch) -> None:
    # GIVEN a stack deployed with 4 children, and 12 objects at one per child
    small = stack_document(aws.queue_arn, aws.definition_arns, DEFAULT_SPEC.with_array_size(4))
    aws.cloudformation.create_stack(
        StackName="Small",
        TemplateBody=stack_template(aws.queue_arn, aws.definition_arns, document=small.as_json()),
    )
    aws.with_input({f"f{n}": b"1" for n in range(12)})
    sent = _submitted(aws)
    # WHEN a run is sized to them
    code, _, err = cli_in_process(aws, "--stack", "Small", "--objects-per-child", "1")
    # THEN it gets the deployed size
    assert code == 0, err
    assert sent["JobB"]["arrayProperties"] == {"size": 4}
    assert (
        "array size 4: at least 12 objects (auto: a child per object would make more than the "
        "4 deployed)"
    ) in err


def test_the_dry_run_says_the_size_and_predicts_on_the_queues_environments(
    aws: EngineBatch,
) -> None:
    # GIVEN 300 inputs and the stack's queue on a managed environment of c6i.16xlarge
    aws.with_input(OBJECTS)
    aws.managed_queue("c6i.16xlarge")
    # WHEN the dry run is given a time per object
    code, out, err = cli_in_process(
        aws,
        *("--stack", STACK, "--queue", "Managed", "--dry-run", "--json"),
        *("--seconds-per-object", "2"),
    )
    # THEN the requests are the chosen size, and stderr says the size, then the prediction
    # with its assumptions
    assert code == 0, err
    requests = json.loads(out)
    assert requests[1]["arrayProperties"] == {"size": 3}
    assert "\narray size 3: 300 objects, 100 per child on average (auto:" in err
    assert "prediction (array size 3, 300 objects, on Managed's compute environments):" in err
    assert "  assuming per object: JobB 2 s, JobC 2 s (given for each of JobB and JobC" in err
    assert "  assuming a child's container starts in 30 s" in err
    assert "~$" in err


def test_a_dry_run_without_a_stack_is_not_listed_and_says_so() -> None:
    code, _, err = cli_in_process(None, "--dry-run", "--seconds-per-object", "2")
    assert code == 0, err
    assert "array size 10,000: the deployed size (the input was not listed" in err
    assert "no prediction: the input was not listed, so its objects are not known" in err


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_LOCAL_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_a_local_dry_run_counts_its_input_without_starting_anything(
    state: Path, tmp_path: Path
) -> None:
    # the generated sample: 300 objects, of which JobA rejects 3; 8 children deployed locally
    code, _, err = cli_in_process(None, "--local", "--dry-run")
    assert code == 0, err
    assert (
        "array size 2: 297 objects, 148.5 per child on average (auto: a child per 100 objects, "
        "at most 8 deployed)"
    ) in err
    # a folder of 20 files at one per child: more than the 8 deployed locally
    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(20):
        (folder / f"f{number}.txt").write_text("data\n")
    code, out, err = cli_in_process(
        None,
        *("--local", "--dry-run", "--json", "--input", str(folder)),
        "--objects-per-child",
        "1",
    )
    assert code == 0, err
    assert json.loads(out)[1]["arrayProperties"] == {"size": 8}
    assert "array size 8: at least 20 objects (auto: a child per object would make more" in err
    assert not runs_dir().exists() or not any(runs_dir().iterdir())  # nothing was started


def _saved_run(run_id: str, summary: dict[str, Any] | None) -> None:
    """A local run's folder as a finished run leaves it: its jobs' journal, and its summary
    when it succeeded."""
    folder = RunFolder.of(run_id)
    folder.path.mkdir(parents=True)
    folder.batch_journal.write_text('{"a": "record"}\n')
    if summary is not None:
        folder.summary_file.write_text(json.dumps(summary))


def test_a_local_dry_run_predicts_from_a_saved_runs_times(state: Path) -> None:
    # GIVEN a local run of the default steps that processed 297 objects, JobB in 29.7 s
    _saved_run(
        "measured",
        {
            "objects": {"listed": 300, "processed": 297, "rejected": 3},
            "rejects_by_stage": {"listing": 3},
            "seconds_by_job": {"JobA": 0.3, "JobB": 29.7, "JobC": 5.94, "JobD": 2.97},
        },
    )
    # WHEN the dry run of the same input estimates from it
    code, _, err = cli_in_process(None, "--local", "--dry-run", "--estimate-from", "measured")
    # THEN it predicts that input on AWS as the construct deploys it, with the measured times
    assert code == 0, err
    assert "prediction (array size 2, 297 objects, on the library's default compute" in err
    assert "JobB 0.1 s, JobC 0.02 s, JobD 0.01 s (measured by local run measured (297" in err


def test_bad_prediction_and_size_flags_are_one_line(state: Path) -> None:
    _saved_run("unfinished", None)
    for argv, message, end in (
        (
            ("--local", "--dry-run", "--estimate-from", "nope"),
            "error: --estimate-from: no local run 'nope' in ",
            "; `status --local` lists them\n",
        ),
        (
            ("--local", "--dry-run", "--estimate-from", "unfinished"),
            "error: --estimate-from: local run unfinished has no summary (it has not succeeded), "
            "so it measured no time per object; give one that succeeded, or --seconds-per-object",
            "",
        ),
    ):
        code, out, err = cli_in_process(None, *argv)
        assert (code, out) == (252, ""), err
        assert err.startswith(message), err
        assert err.endswith(end), err
        assert err.count("\n") == 1


def test_an_input_that_cannot_be_listed_is_one_line_and_nothing_is_submitted(
    aws: EngineBatch,
) -> None:
    # GIVEN an S3 client to list with, and no BucketA (or no s3:ListBucket on it)
    aws.s3 = boto3.client("s3", region_name="us-east-1")
    aws.count_calls()
    # WHEN a run is given no size
    code, out, err = cli_in_process(aws, "--stack", STACK)
    # THEN it says what S3 answered and what to do, and submits nothing
    assert (code, out) == (254, "")
    assert err == (
        "error: listing s3://pipeline-input-bucket/ to size the run to its input failed "
        "(NoSuchBucket: The specified bucket does not exist): give --array-size, or allow "
        "s3:ListBucket on the bucket\n"
    )
    assert "SubmitJob" not in aws.calls
