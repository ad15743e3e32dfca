"""Nothing lost, nothing silently wrong: each bad input is one line on stderr with the exit
code the README's table gives, the same rule wherever a value is used, and faults a
production account sees every week handled (throttling, a JobE run twice, DESTROY)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from helpers.batch import STACK, EngineBatch, cli_in_process, engine_batch
from helpers.paths import REPO
from helpers.synth import new_app
from pipeline import contract
from pipeline.contract import source_bucket_name
from pipeline.errors import SpecError
from pipeline.spec import RETRY_RULES


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_LOCAL_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


# The README's bad-input table, row by row: (arguments, exit code, start of the one line).
BAD_INPUT: list[tuple[list[str], int, str]] = [
    (["--max-vcpu-hours", "nan"], 252, "error: argument --max-vcpu-hours: 'nan' must be a finite"),
    (["--max-vcpu-hours", "0"], 252, "error: argument --max-vcpu-hours: '0' must be a finite"),
    (["--max-vcpu-hours", "-1"], 252, "error: argument --max-vcpu-hours: '-1' must be a finite"),
    (["--max-vcpu-hours", "inf"], 252, "error: argument --max-vcpu-hours: 'inf' must be a finite"),
    (["--poll-interval", "-1"], 252, "error: argument --poll-interval: '-1' must be a finite"),
    (["--poll-interval", "0"], 252, "error: argument --poll-interval: '0' must be a finite"),
    (["--array-size", "1"], 252, "error: --array-size must be from 2 to 10,000; got 1"),
    (
        ["--source-bucket", "s3://bucket/prefix", "--dry-run"],
        252,
        "error: --source-bucket: SourceBucket names a bucket, not a prefix",
    ),
    (
        ["--source-bucket", "bucket", "--dry-run"],
        252,
        "error: --source-bucket: SourceBucket must be an s3:// URL",
    ),
    (
        ["--local", "--inject", "JobB:9=exit:2", "--array-size", "4"],
        252,
        "error: --inject 'JobB:9=exit:2': JobB has children 0 to 3 in this run",
    ),
    (
        ["--local", "--inject", "JobA:1=exit:2"],
        252,
        "error: --inject 'JobA:1=exit:2': JobA is not an array job",
    ),
    (
        ["--local", "--inject", "JobB:1=exit:256"],
        252,
        "error: --inject 'JobB:1=exit:256': fault 'exit:256' must be exit:CODE (CODE from 1 to",
    ),
    (
        ["--local", "--output", "/proc/no-such-place"],
        252,
        "error: --output '/proc/no-such-place' cannot be written",
    ),
    (["--local", "--max-object-bytes", "0"], 252, "error: --max-object-bytes must be a whole"),
    (["--stack", "X", "--local"], 252, "error: --local runs on this machine; drop --stack"),
    (["--inject", "JobB:1=exit:2"], 252, "error: --inject works with --local only"),
    (
        ["--input-prefix", "in/_READY", "--dry-run"],
        252,
        "error: --input-prefix: the input prefix 'in/_READY' names a ready marker",
    ),
    (["--on-upload", "in/"], 252, "error: --on-upload works with --local only"),
    (["--on-schedule"], 252, "error: --on-schedule works with --local only"),
    (
        ["--local", "--on-upload", "in"],
        252,
        "error: --on-upload 'in' must be a folder prefix ending in '/'",
    ),
    (
        ["--local", "--on-upload", "--array-size", "4"],
        252,
        "error: --on-upload starts a run with the pipeline's defaults, as the deployed trigger "
        "does; drop --array-size",
    ),
    (
        ["--local", "--on-upload", "in/", "--on-schedule"],
        252,
        "error: --on-upload and --on-schedule are two triggers; pick one",
    ),
    (["status", "--limit", "0"], 252, "error: --limit must be at least 1"),
    (
        ["--objects-per-child", "0", "--dry-run"],
        252,
        "error: --objects-per-child must be a whole number above 0; got 0",
    ),
    (
        ["--array-size", "4", "--objects-per-child", "10", "--dry-run"],
        252,
        "error: --objects-per-child sizes a run to its input, and --array-size gives its "
        "size: give one of them",
    ),
    (
        ["--array-size", "many"],
        252,
        "error: argument --array-size: 'many' is not a whole number or auto",
    ),
    (
        ["--seconds-per-object", "2"],
        252,
        "error: --seconds-per-object predicts a run's time and cost in a dry run; add --dry-run",
    ),
    (
        ["--seconds-per-object", "0", "--dry-run"],
        252,
        "error: argument --seconds-per-object: '0' must be a finite number above 0",
    ),
    (
        ["--estimate-from", "r1", "--seconds-per-object", "1", "--dry-run"],
        252,
        "error: --estimate-from and --seconds-per-object are two sources of the time per "
        "object; give one",
    ),
    (
        ["--local", "--on-upload", "--objects-per-child", "5"],
        252,
        "error: --on-upload starts a run with the pipeline's defaults, as the deployed trigger "
        "does; drop --objects-per-child",
    ),
    (
        ["frobnicate"],
        252,
        "error: unknown command 'frobnicate': give one of run, status, cancel, resume, report, "
        "diagnose, prune, logs",
    ),
]


def test_the_version_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = cli_in_process(None, "--version")  # argparse writes it to sys.stdout
    assert code == 0
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    said = capsys.readouterr().out.strip()
    assert said.endswith(f" {version}") or said.endswith(" (not installed)"), said


@pytest.mark.parametrize(
    ("argv", "code", "message"), BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT]
)
def test_bad_input_is_one_line_and_its_exit_code(
    argv: list[str], code: int, message: str, state: Path
) -> None:
    exit_code, out, err = cli_in_process(None, *argv)
    assert (exit_code, out) == (code, "")
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_the_workflows_own_source_bucket_is_accepted() -> None:
    # s3://JobD-Output-Bucket: a placeholder with capitals, as legacy bucket names may have
    code, out, err = cli_in_process(
        None,
        "--dry-run",
        "--json",
        "--source-bucket",
        "s3://JobD-Output-Bucket",
        "--recipient",
        "pipeline-notifications@mycompany.com",
    )
    assert code == 0, err
    job_e = json.loads(out)[4]
    assert job_e["parameters"] == {
        "SourceBucket": "s3://JobD-Output-Bucket",
        "Recipient": "pipeline-notifications@mycompany.com",
    }


@pytest.mark.parametrize(
    "url",
    [
        "s3://my-output-bucket",
        "s3://my-output-bucket/",
        "s3://JobD-Output-Bucket",
        "s3://legacy_bucket_name",
        "s3://bucket/prefix",
        "s3://a",
        "s3://-bad",
        "https://my-bucket",
        "s3://two..dots",
    ],
)
def test_the_source_bucket_rule_is_the_same_in_the_cli_and_in_jobe(url: str) -> None:
    from pipeline.jobs.aws_calls import JobError
    from pipeline.jobs.job_e import parse_source_bucket
    from pipeline.runs.requests import run_config

    def cli_accepts() -> bool:
        try:
            run_config(array_size=2, source_bucket=url)
        except SpecError:
            return False
        return True

    def job_accepts() -> bool:
        try:
            parse_source_bucket(url, "default")
        except JobError:
            return False
        return True

    assert cli_accepts() == job_accepts()
    if cli_accepts():
        assert parse_source_bucket(url, "default") == source_bucket_name(url)


def test_a_source_bucket_jobe_cannot_read_is_refused_before_submitting(aws: EngineBatch) -> None:
    aws.count_calls()
    code, _, err = cli_in_process(aws, "--stack", STACK, "--source-bucket", "s3://someone-elses")
    assert code == 252
    assert err.startswith(
        "error: --source-bucket s3://someone-elses is not this pipeline's output bucket"
    )
    assert "SubmitJob" not in aws.calls


def test_a_run_id_in_use_is_refused_unless_resumed(aws: EngineBatch) -> None:
    assert cli_in_process(aws, "--stack", STACK, "--array-size", "2", "--run-id", "taken")[0] == 0
    aws.count_calls()
    code, _, err = cli_in_process(aws, "--stack", STACK, "--array-size", "2", "--run-id", "taken")
    assert code == 252
    assert err == (
        "error: run taken already has jobs in "
        f"{aws.queue_arn}; pick another --run-id, or continue that run with `resume taken`\n"
    )
    assert "SubmitJob" not in aws.calls


def _saved_run(state: Path, run_id: str) -> Path:
    """A folder as a run that submitted a job leaves it (its Batch journal has a record)."""
    folder = state / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "batch.jsonl").write_text('{"kind": "call"}\n')
    return folder


def test_a_saved_local_run_id_is_refused(state: Path) -> None:
    _saved_run(state, "kept")
    code, _, err = cli_in_process(None, "--local", "--run-id", "kept")
    assert code == 252
    assert err == (
        f"error: a local run 'kept' exists in {state / 'runs'}; pick another --run-id, "
        "or continue it with `resume kept --local`\n"
    )
    assert (state / "runs" / "kept").is_dir()  # what was there is left alone


def test_prune_removes_nothing_when_one_named_run_is_unknown(state: Path) -> None:
    kept = _saved_run(state, "kept")
    code, _, err = cli_in_process(None, "prune", "kept", "missing", "--local")
    assert code == 252
    assert err == f"error: no local run 'missing' in {state / 'runs'}; nothing was removed\n"
    assert kept.is_dir()
    # AND naming only runs that exist removes them
    code, _out, err = cli_in_process(None, "prune", "kept", "--local")
    assert code == 0, err
    assert not kept.exists()


def test_a_run_whose_jobs_journal_is_lost_is_called_damaged(state: Path) -> None:
    # GIVEN a run folder that kept its buckets' journal and logs but lost its Batch journal
    folder = state / "runs" / "lost"
    (folder / "logs").mkdir(parents=True)
    (folder / "services.journal").write_text('{"kind": "put"}\n')
    # THEN a look at it, or a resume, is one line with exit code 255 naming the way out
    for command in ("status", "resume"):
        code, _, err = cli_in_process(None, command, "lost", "--local")
        assert code == 255, err
        assert err == (
            f"error: the saved run 'lost' is damaged: its jobs' journal "
            f"({folder / 'batch.jsonl'}) is missing; remove the run with `prune lost --local`\n"
        )


def test_closed_stdout_ends_quietly() -> None:
    # pipefail: the exit code is the command's, not head's
    result = subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"{sys.executable} -m pipeline.submit --dry-run --json | head -c 10",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == '[\n  {\n    "'[:10]
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr


# --- faults ------------------------------------------------------------------------------------


def test_throttling_beyond_the_budget_exits_with_the_transient_code() -> None:
    from pipeline.jobs import job_c
    from pipeline.jobs.program import run_main

    class Throttled:
        def batch_write_item(self, **request: Any) -> dict[str, Any]:
            return {"UnprocessedItems": request["RequestItems"]}

    items = [{contract.TABLE_SORT_KEY: {"S": "key-0"}}]

    def work() -> None:
        job_c.write_items(Throttled(), "table", items, sleep=lambda _: None)  # type: ignore[arg-type]

    assert run_main("JobC", work) == contract.EXIT_TRANSIENT


def test_the_retry_rules_retry_the_transient_code_and_nothing_else() -> None:
    from pipeline.batch_facts import retry_action

    assert (
        retry_action(RETRY_RULES, status_reason="Essential container in task exited", exit_code=75)
        == "RETRY"
    )
    assert (
        retry_action(RETRY_RULES, status_reason="Essential container in task exited", exit_code=1)
        == "EXIT"
    )
    assert (
        retry_action(RETRY_RULES, status_reason="Essential container in task exited", exit_code=2)
        == "EXIT"
    )


def test_local_batch_retries_a_transient_exit(tmp_path: Path) -> None:
    from helpers.batch import engine_with_processes

    marker = tmp_path / "tried"
    script = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
        "sys.exit(0 if p.exists() else (p.touch() or 75))"
    )
    rules = [rule.as_evaluate_on_exit() for rule in RETRY_RULES]
    with engine_with_processes(tmp_path / "work", vcpus=1) as batch:
        batch.register(
            "flaky", (sys.executable, "-c", script, str(marker)), attempts=3, rules=rules
        )
        job = batch.wait_for(batch.submit("flaky", "flaky"))
    assert job["status"] == "SUCCEEDED"
    assert [a["container"].get("exitCode") for a in job["attempts"]] == [75, 0]


@pytest.mark.slow  # a few seconds: in the full suite, not the fast loop
def test_jobe_run_twice_sends_one_notification_and_keeps_the_summary() -> None:
    from helpers.jobs_world import jobs_world, sample_inputs

    with jobs_world(array_size=2) as world:
        world.put_inputs(sample_inputs(20))
        world.run_until_e()

        first = world.run_e()
        summary = world.get_json(world.ctx.output_bucket, contract.summary_key(world.ctx.run_id))
        second = world.run_e()
        again = world.get_json(world.ctx.output_bucket, contract.summary_key(world.ctx.run_id))
        notifications = world.notifications()
    assert (first["notified"], second["notified"]) == (True, False)
    assert len(notifications) == 1
    assert again == summary
    assert summary["intermediates_removed"] > 0


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        # another JobE job (a second resume, say) is publishing the run's notification
        ({"job": "other-job", "claimed_at": 0.0}, 0),
        # another JobE job claimed it long ago and died, or gave its claim up
        ({"job": "other-job", "claimed_at": -1000.0}, 1),
        # this job's earlier attempt claimed it and died before the marker got its message ID
        ({"job": "this-job", "claimed_at": 0.0}, 1),
        # the notification went out already
        ({"job": "this-job", "message_id": "m-1"}, 0),
    ],
)
def test_jobe_publishes_once_however_its_attempts_overlap(
    monkeypatch: pytest.MonkeyPatch, marker: dict[str, Any], expected: int
) -> None:
    import time

    from helpers.jobs_world import jobs_world, sample_inputs

    monkeypatch.setenv("AWS_BATCH_JOB_ID", "this-job")
    with jobs_world(array_size=2) as world:
        world.put_inputs(sample_inputs(6))
        world.run_until_e()
        # GIVEN the run's notification marker as another attempt or job left it (claimed_at
        # relative to now)
        if "claimed_at" in marker:
            marker = {**marker, "claimed_at": time.time() + marker["claimed_at"]}
        key = contract.notified_key(world.ctx.run_id)
        world.s3.put_object(Bucket=world.ctx.output_bucket, Key=key, Body=json.dumps(marker))
        # WHEN JobE runs
        result = world.run_e()
        notifications = world.notifications()
        final = world.get_json(world.ctx.output_bucket, key)
    # THEN it publishes only where no one else did or is doing so
    assert len(notifications) == expected
    assert result["notified"] is bool(expected)
    assert ("message_id" in final) is ("message_id" in marker or bool(expected))


def test_jobe_that_fails_to_publish_gives_its_claim_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    from helpers.jobs_world import jobs_world, sample_inputs
    from pipeline.jobs.aws_calls import JobError

    with jobs_world(array_size=2) as world:
        world.put_inputs(sample_inputs(6))
        world.run_until_e()

        # GIVEN a JobE whose publish is refused (a key policy that denies SNS, say)
        def refuse(**_: Any) -> None:
            raise ClientError({"Error": {"Code": "KMSAccessDenied", "Message": "no"}}, "Publish")

        monkeypatch.setenv("AWS_BATCH_JOB_ID", "first-job")
        world.sns.meta.events.register("before-call.sns.Publish", refuse)
        with pytest.raises(JobError, match="KMSAccessDenied"):
            world.run_e()
        world.sns.meta.events.unregister("before-call.sns.Publish", refuse)
        # WHEN the cause is fixed and the run resumed (a new JobE job, at once)
        monkeypatch.setenv("AWS_BATCH_JOB_ID", "resumed-job")
        result = world.run_e()
        # THEN the resumed JobE publishes
        assert result["notified"] is True
        assert len(world.notifications()) == 1


def test_jobe_that_loses_the_claim_between_read_and_write_does_not_publish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from helpers.jobs_world import jobs_world, sample_inputs
    from pipeline.jobs import job_e

    monkeypatch.setenv("AWS_BATCH_JOB_ID", "this-job")
    with jobs_world(array_size=2) as world:
        world.put_inputs(sample_inputs(6))
        world.run_until_e()
        key = contract.notified_key(world.ctx.run_id)
        bucket = world.ctx.output_bucket
        other = boto3.client("s3", region_name="us-east-1")

        # GIVEN another JobE that claims the marker just before this one's conditional write
        # (a botocore hook on this client's PutObject of the marker, before it is sent)
        def claim_first(params: dict[str, Any], **_: Any) -> None:
            if params.get("Key") == key and params.get("IfNoneMatch") == "*":
                other.put_object(Bucket=bucket, Key=key, Body=b'{"job":"other-job"}')

        world.s3.meta.events.register("provide-client-params.s3.PutObject", claim_first)
        # WHEN this JobE runs, THEN S3 refuses its claim and it does not publish
        result = job_e.run(
            world.s3, world.sns, world.dynamodb, world.ctx, source_bucket=bucket, recipient=None
        )
        assert result["notified"] is False
        assert world.notifications() == []
        assert world.get_json(bucket, key) == {"job": "other-job"}


@pytest.mark.slow  # two whole syntheses with the auto-delete custom resource: ~11 s
def test_destroy_never_deletes_the_input_bucket(tmp_path: Path) -> None:
    import aws_cdk as cdk

    from pipeline import ArrayJobPipeline

    def buckets(**props: Any) -> dict[str, str]:
        app = new_app(tmp_path / str(len(props)))
        stack = cdk.Stack(app, "Destroyed")
        ArrayJobPipeline(
            stack, "P", array_size=10, removal_policy=cdk.RemovalPolicy.DESTROY, **props
        )
        template = app.synth().get_stack_by_name("Destroyed").template
        return {
            logical_id: resource["DeletionPolicy"]
            for logical_id, resource in template["Resources"].items()
            if resource["Type"] == "AWS::S3::Bucket"
        }

    default = buckets()
    assert next(v for k, v in default.items() if "BucketA" in k) == "Retain"
    assert next(v for k, v in default.items() if "OutputBucket" in k) == "Delete"
    asked = buckets(delete_input_bucket_with_stack=True)
    assert next(v for k, v in asked.items() if "BucketA" in k) == "Delete"
