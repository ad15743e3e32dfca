"""Failure reports on the engine's Batch and moto's CloudWatch Logs: 10,000 children, 37 failed
two ways."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from helpers.batch import REGION, EngineBatch, engine_batch
from pipeline.document import PipelineDocument
from pipeline.runs.chain import submit_pipeline
from pipeline.runs.failures import cloudwatch_log_reader, failure_report, index_ranges
from pipeline.runs.progress import describe_jobs
from pipeline.runs.requests import run_config

LOG_GROUP = "/aws/batch/array-pipeline"
OOM = "OutOfMemoryError: Container killed due to memory usage"
APP = "Essential container in task exited"


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _logs(aws: EngineBatch, job_ids: list[str]) -> Any:
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=LOG_GROUP)
    for job_id in job_ids:
        (job,) = aws.batch.describe_jobs(jobs=[job_id])["jobs"]
        stream = job["container"]["logStreamName"]  # the stream DescribeJobs names for it
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        now = int(time.time() * 1000)  # CloudWatch Logs rejects events older than 14 days
        logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=stream,
            logEvents=[
                {"timestamp": now - 30 + i, "message": f"{job_id} line {i}"} for i in range(30)
            ],
        )
    return logs


def _counted(client: Any) -> dict[str, int]:
    calls: dict[str, int] = {}

    def count(event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        calls[operation] = calls.get(operation, 0) + 1

    client.meta.events.register("before-call", count)
    return calls


@pytest.mark.slow  # a few seconds: in the full suite, not the fast loop
@pytest.mark.parametrize("extra_failures", [0, 150])
def test_37_failures_in_two_groups(aws: EngineBatch, extra_failures: int) -> None:
    # GIVEN a 10,000-child JobB with 20 children failing one way and 17 another
    app_failures = [*range(100, 110), *range(200, 210)]
    oom_failures = [*range(5000, 5015), 7777, 9999]
    aws.inject(*(f"JobB:{i}=exit:1" for i in app_failures))
    aws.inject(*(f"JobB:{i}=out-of-memory" for i in oom_failures))
    # (a larger failure beyond the first page must not cost more calls)
    aws.inject(*(f"JobB:{i}=exit:1" for i in range(1000, 1000 + extra_failures)))
    run = submit_pipeline(
        aws.batch,
        PipelineDocument(aws.queue_arn, aws.definition_arns),
        run_config(array_size=10_000),
    )
    parent = run.job_ids["JobB"]
    logs = _logs(aws, [f"{parent}:{app_failures[0]}", f"{parent}:{oom_failures[0]}"])
    progress = describe_jobs(aws.batch, {"JobB": parent})
    batch_calls, log_calls = _counted(aws.batch), _counted(logs)
    # WHEN the report is made
    groups = failure_report(
        aws.batch, progress, read_log=cloudwatch_log_reader(logs, LOG_GROUP), log_lines=5
    )
    # THEN two groups, with their counts, index ranges and one log excerpt each
    if extra_failures == 0:
        assert [(g.exit_code, g.status_reason, g.count) for g in groups] == [
            (1, APP, 20),
            (137, OOM, 17),
        ]
        assert groups[0].describe() == (
            f"JobB[100-109, 200-209]: 20 failed, exit code 1, reason: {APP}"
        )
        assert index_ranges(groups[1].indices) == "5000-5014, 7777, 9999"
        assert groups[0].log_tail == tuple(f"{parent}:100 line {i}" for i in range(25, 30))
        assert len(groups[1].log_tail) == 5
        assert log_calls == {"GetLogEvents": 2}
    # AND a fixed number of Batch calls, whatever the number of failures
    assert batch_calls == {"ListJobs": 1, "DescribeJobs": 1}
    assert sum(g.count for g in groups) == min(37 + extra_failures, 100)
    assert progress[0].children["FAILED"] == 37 + extra_failures


def test_index_ranges() -> None:
    assert index_ranges([3]) == "3"
    assert index_ranges([5, 1, 2, 3, 9, 10]) == "1-3, 5, 9-10"
    assert index_ranges([]) == ""
