"""pipeline/runs/failures.py: a run's first failure in one line, and the failure report that
groups failed children by how they ended, with index ranges and a log excerpt per group. Jobs
fail on the engine's Batch (:func:`helpers.batch.engine_batch`) as the test places them, and
a child whose dependency failed is failed by the engine itself ("Dependent Job failed"); the
calls the code makes are recorded through botocore hooks, and a ListJobs that has not caught up
is :func:`helpers.batch.lag_listings`. Log tails come from moto's CloudWatch Logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from helpers.batch import EngineBatch, engine_batch, lag_listings
from helpers.engine_steps import sent, submit
from pipeline.batch_facts import DEPENDENCY_FAILED, ESSENTIAL_CONTAINER_EXITED
from pipeline.runs.failures import (
    REPORT_PAGE,
    Failure,
    FailureGroup,
    cloudwatch_log_reader,
    error_text,
    failure_report,
    first_failure,
    index_ranges,
)
from pipeline.runs.progress import describe_jobs


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        harness.hold_new_jobs()  # the test places every job
        yield harness


# --- the first failure ----------------------------------------------------------------------


def test_the_first_failure_is_the_earliest_failed_job_in_run_order(aws: EngineBatch) -> None:
    # GIVEN JobA that succeeded, a standard JobB after it that failed, and a JobC after JobB
    # (which Batch fails without running it)
    job_a = submit(aws, "JobA")
    aws.succeed(job_a)
    job_b = submit(aws, "JobB", depends_on=[{"jobId": job_a}])
    aws.fail(job_b, "boom", 2, log_stream="s")
    job_c = submit(aws, "JobC", depends_on=[{"jobId": job_b}])
    progress = describe_jobs(aws.reader, {"JobA": job_a, "JobB": job_b, "JobC": job_c})
    assert [(p.status, p.status_reason) for p in progress[1:]] == [
        ("FAILED", "boom"),
        ("FAILED", DEPENDENCY_FAILED),
    ]
    # WHEN the run's first failure is asked for
    failure = first_failure(aws.batch, progress)
    # THEN it is JobB's, with its exit code, reason and log stream
    assert failure == Failure("JobB", job_b, None, "boom", 2, "s")
    assert failure.describe() == f"JobB failed ({job_b}); exit code 2; reason: boom"
    assert (failure.log_name, failure.log_stream) == ("JobB", "s")
    assert first_failure(aws.batch, progress[:1]) is None


def test_an_arrays_first_failure_is_its_first_failed_child_in_two_calls(aws: EngineBatch) -> None:
    # GIVEN an array of 10 whose children 3 and 5 failed while the others wait
    parent = submit(aws, "JobB", size=10)
    aws.fail_child(parent, 5, "x", 2)
    aws.fail_child(parent, 3, "bad input", 1, log_stream_name="stream-3")
    progress = describe_jobs(aws.reader, {"JobB": parent})
    calls = sent(aws.batch, "ListJobs", "DescribeJobs")
    # WHEN the run's first failure is asked for
    failure = first_failure(aws.batch, progress)
    # THEN it is the first failed child Batch lists, found in one ListJobs and one DescribeJobs
    assert failure == Failure("JobB", f"{parent}:3", 3, "bad input", 1, "stream-3")
    assert failure.describe() == (f"JobB[3] failed ({parent}:3); exit code 1; reason: bad input")
    assert [name for name, _ in calls] == ["ListJobs", "DescribeJobs"]
    assert calls[0][1] == {"arrayJobId": parent, "jobStatus": "FAILED", "maxResults": 1}


def test_an_array_whose_failed_children_are_not_listed_yet_is_named_as_a_whole(
    aws: EngineBatch,
) -> None:
    # GIVEN an array whose child 0 failed, which ListJobs does not list yet
    parent = submit(aws, "JobB", size=2)
    aws.fail_child(parent, 0)
    aws.succeed(f"{parent}:1")
    (progress,) = describe_jobs(aws.reader, {"JobB": parent})
    lag_listings(aws.batch, 1)
    # WHEN the run's first failure is asked for
    failure = first_failure(aws.batch, [progress])
    # THEN the array is named, with the parent's own reason
    assert progress.status_reason
    assert failure == Failure("JobB", parent, None, progress.status_reason, None, None)
    assert failure.describe() == f"JobB failed ({parent}); reason: {progress.status_reason}"


def test_a_failure_as_json_carries_its_line() -> None:
    failure = Failure("JobB", "b:3", 3, "bad", 0, None)
    assert failure.as_json() == {
        "job": "JobB",
        "jobId": "b:3",
        "arrayIndex": 3,
        "statusReason": "bad",
        "exitCode": 0,
        "logStream": None,
        "text": "JobB[3] failed (b:3); exit code 0; reason: bad",
    }


def test_an_aws_error_in_one_line() -> None:
    error = ClientError({"Error": {"Code": "Throttled", "Message": "slow down"}}, "SubmitJob")
    assert error_text(error) == "Throttled: slow down"
    assert error_text(ClientError({}, "SubmitJob")) == "Error:"
    assert error_text(ValueError("plain")) == "plain"


# --- the report -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("indices", "text"),
    [
        ([], ""),
        ([4], "4"),
        ([3, 0, 1, 2, 7, 9, 10, 11, 12], "0-3, 7, 9-12"),
        ([5, 6], "5-6"),
    ],
)
def test_indices_read_as_ranges(indices: list[int], text: str) -> None:
    assert index_ranges(indices) == text


def test_failed_children_are_grouped_by_how_they_ended_largest_group_first(
    aws: EngineBatch,
) -> None:
    # GIVEN an array (JobC, N_TO_N on JobB) with five failed children: 7, 8 and 9 exited 1,
    # 1 and 2 never ran because their JobB partners failed
    job_b = submit(aws, "JobB", size=10)
    job_c = submit(aws, "JobC", size=10, depends_on=[{"jobId": job_b, "type": "N_TO_N"}])
    for index in range(10):
        if index in (1, 2):
            aws.fail_child(job_b, index)
        else:
            aws.succeed(f"{job_b}:{index}")
    for index in range(10):
        if index in (7, 8, 9):
            aws.fail_child(job_c, index, "bad input", 1, log_stream_name=f"stream-{index}")
        elif index not in (1, 2):
            aws.succeed(f"{job_c}:{index}")
    progress = describe_jobs(aws.reader, {"JobC": job_c})
    calls = sent(aws.batch, "ListJobs", "DescribeJobs")
    reads: list[tuple[str, str | None]] = []

    def read_log(job_id: str, stream: str | None) -> list[str]:
        reads.append((job_id, stream))
        return [f"line {n}" for n in range(12)]

    # WHEN the report is made
    groups = failure_report(aws.batch, progress, read_log=read_log, log_lines=3)
    # THEN the larger group first, each with its ranges, one example and its log's last lines
    assert groups == [
        FailureGroup(
            "JobC",
            1,
            "bad input",
            (7, 8, 9),
            f"{job_c}:7",
            "stream-7",
            ("line 9", "line 10", "line 11"),
        ),
        FailureGroup("JobC", None, DEPENDENCY_FAILED, (1, 2), f"{job_c}:1", None, ()),
    ]
    # AND only the children that ran have a log to read: one read for the group
    assert reads == [(f"{job_c}:7", "stream-7")]
    assert [g.describe() for g in groups] == [
        "JobC[7-9]: 3 failed, exit code 1, reason: bad input",
        "JobC[1-2]: 2 failed, no exit code, reason: Dependent Job failed",
    ]
    assert [g.not_run for g in groups] == [False, True]
    # AND one ListJobs page of REPORT_PAGE and one DescribeJobs call
    assert calls[0][1]["maxResults"] == REPORT_PAGE
    assert [name for name, _ in calls] == ["ListJobs", "DescribeJobs"]


def test_a_standard_job_is_its_own_group(aws: EngineBatch) -> None:
    # GIVEN a standard JobA that exited 3, and an array still running
    job_a = submit(aws, "JobA")
    aws.fail(job_a, exit_code=3, log_stream="s")
    job_b = submit(aws, "JobB", size=2)
    aws.start(job_b)
    progress = describe_jobs(aws.reader, {"JobA": job_a, "JobB": job_b})
    # WHEN the report is made
    (group,) = failure_report(aws.batch, progress)
    # THEN the job is its own group, of one
    assert (group.where(), group.count, group.indices) == ("JobA", 1, ())
    assert group.describe() == f"JobA: 1 failed, exit code 3, reason: {ESSENTIAL_CONTAINER_EXITED}"
    assert replace(group, status_reason=None).describe().endswith("reason: none")
    assert group.as_json() == {
        "job": "JobA",
        "exitCode": 3,
        "statusReason": ESSENTIAL_CONTAINER_EXITED,
        "count": 1,
        "indices": "",
        "exampleJobId": job_a,
        "logStream": "s",
        "logTail": [],
        "notRun": False,
    }


# --- CloudWatch Logs ------------------------------------------------------------------------


@pytest.fixture
def logs() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("logs", region_name="us-east-1")
        client.create_log_group(logGroupName="/jobs")
        client.create_log_stream(logGroupName="/jobs", logStreamName="s")
        now = int(time.time() * 1000)  # CloudWatch refuses events more than 14 days old
        client.put_log_events(
            logGroupName="/jobs",
            logStreamName="s",
            logEvents=[{"timestamp": now + n, "message": f"line {n}\n"} for n in range(15)],
        )
        yield client


def test_a_logs_last_lines_are_read_in_one_call(logs: Any) -> None:
    read = cloudwatch_log_reader(logs, "/jobs", lines=4)
    assert read("job", "s") == ["line 11", "line 12", "line 13", "line 14"]
    assert read("job", None) == []


def test_a_log_that_cannot_be_read_says_so_in_the_excerpt(logs: Any) -> None:
    read = cloudwatch_log_reader(logs, "/jobs")
    (line,) = read("job", "gone")
    assert line.startswith("(log gone unavailable: ResourceNotFoundException")
