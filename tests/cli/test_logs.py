"""``logs RUN_ID [JOB[:INDEX]]`` on AWS: a failed child's log, every attempt of it, read from
the CloudWatch Logs stream Batch reports for it (the engine as the deployed pipeline's Batch,
moto's CloudWatch Logs); and what a user gets wrong about it, refused in one line."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from helpers.batch import REGION, STACK, EngineBatch, engine_batch
from pipeline.backends.aws import Aws
from pipeline.cli.commands import main
from pipeline.runs.discovery import document_from_stack

RUN = "sales-run"
STREAM = "JobB-CPU-Intensive-Processing/default/4f1c"


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _cli(aws: EngineBatch, logs: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        list(argv),
        connector=lambda *_: Aws(aws.batch, aws.cloudformation, logs),
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def failed_run(aws: EngineBatch) -> Any:
    """Run ``sales-run`` of 4 children whose child 2 failed, its log in CloudWatch Logs under
    the stream Batch reports for it; the logs client."""
    aws.hold_new_jobs()
    code, _, err = _cli(aws, None, "--stack", STACK, "--array-size", "4", "--run-id", RUN)
    assert code == 0, err
    job_a, job_b = aws.run_job(RUN, "JobA"), aws.run_job(RUN, "JobB")
    aws.succeed(job_a)
    for index in (0, 1, 3):
        aws.succeed(f"{job_b}:{index}")
    aws.fail_child(job_b, 2, exit_code=1, log_stream_name=STREAM)
    logs = boto3.client("logs", region_name=REGION)
    group = document_from_stack(aws.cloudformation, STACK).log_group
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=STREAM)
    now = int(time.time() * 1000)  # CloudWatch Logs takes no event older than 14 days
    events = ["JobB: working on shard 2", "JobB: error: input 'day-3.csv' changed after JobA"]
    logs.put_log_events(
        logGroupName=group,
        logStreamName=STREAM,
        logEvents=[{"timestamp": now + n, "message": m} for n, m in enumerate(events)],
    )
    return logs


def test_logs_of_a_failed_child_prints_its_attempt_from_cloudwatch(
    aws: EngineBatch, failed_run: Any
) -> None:
    # GIVEN a run whose JobB child 2 failed
    # WHEN its log is asked for
    code, out, err = _cli(aws, failed_run, "logs", RUN, "JobB:2", "--stack", STACK)
    # THEN its one attempt is printed, headed by how it ended, from the stream Batch named
    assert code == 0, err
    assert out.splitlines() == [
        "--- JobB:2 attempt 1 (FAILED, exit code 1: Essential container in task exited) ---",
        "JobB: working on shard 2",
        "JobB: error: input 'day-3.csv' changed after JobA",
    ]


def test_logs_without_a_job_lists_how_to_name_each(aws: EngineBatch, failed_run: Any) -> None:
    code, out, _ = _cli(aws, failed_run, "logs", RUN, "--stack", STACK)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"run {RUN}: `python -m pipeline.submit logs {RUN} JOB[:INDEX] --stack {STACK}` prints one:"
    )
    job_b = next(line for line in lines if line.lstrip().startswith("JobB"))
    assert "4 children, failed: 2" in job_b
    assert job_b.endswith(f"python -m pipeline.submit logs {RUN} JobB:2 --stack {STACK}")


@pytest.mark.parametrize(
    ("named", "message"),
    [
        (
            "JobB",
            "error: JobB is an array of 4 children; name one: JobB:INDEX (0 to 3); failed: 2",
        ),
        ("JobB:9", "error: JobB has children 0 to 3 in this run; got 9"),
        ("JobA:1", "error: JobA is not an array job; drop ':1'"),
        (
            "JobZ",
            "error: 'JobZ' names no job of the pipeline; give one of JobA, JobB, JobC, JobD, "
            "JobE, with ':INDEX' for a child of an array (JobB:3)",
        ),
    ],
)
def test_a_job_the_run_does_not_have_is_one_line(
    aws: EngineBatch, failed_run: Any, named: str, message: str
) -> None:
    code, out, err = _cli(aws, failed_run, "logs", RUN, named, "--stack", STACK)
    assert (code, out) == (252, "")
    assert err == message + "\n"


def test_follow_and_json_do_not_go_together(aws: EngineBatch) -> None:
    code, _, err = _cli(aws, None, "logs", RUN, "JobA", "--follow", "--json", "--stack", STACK)
    assert code == 252
    assert err == "error: --follow prints a log as it grows; drop --json\n"


def test_status_names_the_object_a_long_running_child_is_on(aws: EngineBatch) -> None:
    from datetime import UTC, datetime, timedelta

    from pipeline import contract

    # GIVEN a run whose JobB child 1 started five minutes ago and has been on one object for
    # three, as its log says (the runner names an object after a minute on it)
    aws.hold_new_jobs()
    code, _, err = _cli(aws, None, "--stack", STACK, "--array-size", "2", "--run-id", RUN)
    assert code == 0, err
    aws.succeed(aws.run_job(RUN, "JobA"))
    aws.clock.set(datetime.now(UTC) - timedelta(minutes=5))
    job_b = aws.run_job(RUN, "JobB")
    aws.start(f"{job_b}:1", log_stream=STREAM)
    logs = boto3.client("logs", region_name=REGION)
    group = document_from_stack(aws.cloudformation, STACK).log_group
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=STREAM)
    since = time.time() - 180
    line = contract.slow_object_line("cpu", "sales/day 3.csv", since, 60)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=STREAM,
        logEvents=[{"timestamp": int(time.time() * 1000), "message": line}],
    )
    # WHEN the run's status is asked for
    code, out, err = _cli(aws, logs, "status", RUN, "--stack", STACK)
    # THEN it says the child is running, and on which object, for how long
    assert code == 0, err
    assert "  JobB:1 has been on 'sales/day 3.csv' for 3 min" in out.splitlines()
    assert f"run {RUN} RUNNING" in out
    _, as_json, _ = _cli(aws, logs, "status", RUN, "--stack", STACK, "--json")
    assert json.loads(as_json)["busy"] == [
        {
            "job": "JobB",
            "index": 1,
            "stage": "cpu",
            "objectKey": "sales/day 3.csv",
            "since": float(f"{since:.0f}"),
        }
    ]


def test_follow_prints_a_running_childs_log_as_it_grows_until_it_ends(aws: EngineBatch) -> None:
    # GIVEN a run whose JobB child 0 runs, with one line in its log so far
    aws.hold_new_jobs()
    code, _, err = _cli(aws, None, "--stack", STACK, "--array-size", "2", "--run-id", RUN)
    assert code == 0, err
    aws.succeed(aws.run_job(RUN, "JobA"))
    child = f"{aws.run_job(RUN, 'JobB')}:0"
    aws.start(child, log_stream=STREAM)
    logs = boto3.client("logs", region_name=REGION)
    group = document_from_stack(aws.cloudformation, STACK).log_group
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=STREAM)

    def say(message: str) -> None:
        event = {"timestamp": int(time.time() * 1000), "message": message}
        logs.put_log_events(logGroupName=group, logStreamName=STREAM, logEvents=[event])

    say("one")
    reads: list[int] = []

    def later(**_: Any) -> None:
        reads.append(1)
        if len(reads) == 2:  # once its log was read to the end, it writes more, then ends
            say("two")
            aws.placement.end(child, 0)

    logs.meta.events.register("after-call.logs.GetLogEvents", later)
    # WHEN its log is followed
    code, out, err = _cli(
        aws, logs, "logs", RUN, "JobB:0", "--follow", "--poll-interval", "0.01", "--stack", STACK
    )
    # THEN the lines come as they were written, and the command ends with the child
    assert code == 0, err
    assert out.splitlines() == ["--- JobB:0 attempt 1 (RUNNING) ---", "one", "two"]
