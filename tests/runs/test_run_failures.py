"""pipeline/runs/failures.py: a run's first failure in one line, and the failure report that
groups failed children by how they ended, with index ranges and a log excerpt per group. The
Batch here is a small stand-in with boto3's method names and shapes that records its calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from pipeline.batch_facts import DEPENDENCY_FAILED
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
from pipeline.runs.progress import JobProgress


class FailedChildrenBatch:
    """An array job ``b`` whose failed children are listed one page of ``maxResults``."""

    def __init__(self, children: dict[int, dict[str, Any]]) -> None:
        self.children = {
            f"b:{index}": {"jobId": f"b:{index}", "status": "FAILED", **fields}
            for index, fields in children.items()
        }
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def list_jobs(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("ListJobs", request))
        assert request["jobStatus"] == "FAILED"
        ids = list(self.children)[: request["maxResults"]]
        return {"jobSummaryList": [{"jobId": i} for i in ids]}

    def describe_jobs(self, *, jobs: list[str]) -> dict[str, Any]:
        self.calls.append(("DescribeJobs", {"jobs": jobs}))
        return {"jobs": [self.children[j] for j in jobs]}


def _array(failed: int, status: str = "FAILED") -> JobProgress:
    return JobProgress(
        "JobB", "b", status, array_size=10, children={"FAILED": failed, "SUCCEEDED": 10 - failed}
    )


def _child(code: int | None, reason: str, stream: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"logStreamName": stream} if stream else {}
    if code is not None:
        container["exitCode"] = code
    return {"statusReason": reason, "container": container}


# --- the first failure ----------------------------------------------------------------------


def test_the_first_failure_is_the_earliest_failed_job_in_run_order() -> None:
    progress = [
        JobProgress("JobA", "a", "SUCCEEDED"),
        JobProgress("JobB", "b", "FAILED", status_reason="boom", exit_code=2, log_stream="s"),
        JobProgress("JobC", "c", "FAILED", status_reason=DEPENDENCY_FAILED),
    ]
    failure = first_failure(FailedChildrenBatch({}), progress)  # type: ignore[arg-type]
    assert failure == Failure("JobB", "b", None, "boom", 2, "s")
    assert failure.describe() == "JobB failed (b); exit code 2; reason: boom; log stream: s"
    assert first_failure(FailedChildrenBatch({}), progress[:1]) is None  # type: ignore[arg-type]


def test_an_arrays_first_failure_is_its_first_failed_child_in_two_calls() -> None:
    batch = FailedChildrenBatch({3: _child(1, "bad input", "stream-3"), 5: _child(2, "x")})
    failure = first_failure(batch, [_array(2, "RUNNING")])  # type: ignore[arg-type]
    assert failure == Failure("JobB", "b:3", 3, "bad input", 1, "stream-3")
    assert failure.describe() == (
        "JobB[3] failed (b:3); exit code 1; reason: bad input; log stream: stream-3"
    )
    assert [name for name, _ in batch.calls] == ["ListJobs", "DescribeJobs"]
    assert batch.calls[0][1] == {"arrayJobId": "b", "jobStatus": "FAILED", "maxResults": 1}


def test_an_array_whose_failed_children_are_not_listed_yet_is_named_as_a_whole() -> None:
    job = JobProgress("JobB", "b", "FAILED", array_size=10, children={"FAILED": 1})
    failure = first_failure(FailedChildrenBatch({}), [job])  # type: ignore[arg-type]
    assert failure == Failure("JobB", "b", None, None, None, None)
    assert failure.describe() == "JobB failed (b)"


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


def test_failed_children_are_grouped_by_how_they_ended_largest_group_first() -> None:
    # GIVEN an array with five failed children: three exit 1, two never ran
    batch = FailedChildrenBatch(
        {
            7: _child(None, DEPENDENCY_FAILED),
            0: _child(1, "bad input", "stream-0"),
            1: _child(1, "bad input", "stream-1"),
            8: _child(None, DEPENDENCY_FAILED),
            2: _child(1, "bad input", "stream-2"),
        }
    )
    reads: list[tuple[str, str | None]] = []

    def read_log(job_id: str, stream: str | None) -> list[str]:
        reads.append((job_id, stream))
        return [f"line {n}" for n in range(12)]

    # WHEN the report is made
    groups = failure_report(batch, [_array(5)], read_log=read_log, log_lines=3)  # type: ignore[arg-type]
    # THEN the larger group first, each with its ranges, one example and its log's last lines
    assert groups == [
        FailureGroup(
            "JobB", 1, "bad input", (0, 1, 2), "b:0", "stream-0", ("line 9", "line 10", "line 11")
        ),
        FailureGroup("JobB", None, DEPENDENCY_FAILED, (7, 8), "b:7", None, ()),
    ]
    # AND only the children that ran have a log to read: one read for the group
    assert reads == [("b:0", "stream-0")]
    assert [g.describe() for g in groups] == [
        "JobB[0-2]: 3 failed, exit code 1, reason: bad input",
        "JobB[7-8]: 2 failed, no exit code, reason: Dependent Job failed",
    ]
    assert [g.not_run for g in groups] == [False, True]
    # AND one ListJobs page of REPORT_PAGE and one DescribeJobs call
    assert batch.calls[0][1]["maxResults"] == REPORT_PAGE
    assert [name for name, _ in batch.calls] == ["ListJobs", "DescribeJobs"]


def test_a_standard_job_is_its_own_group() -> None:
    job = JobProgress("JobA", "a", "FAILED", status_reason=None, exit_code=3, log_stream="s")
    (group,) = failure_report(FailedChildrenBatch({}), [job, JobProgress("JobB", "b", "RUNNING")])  # type: ignore[arg-type]
    assert (group.where(), group.count, group.indices) == ("JobA", 1, ())
    assert group.describe() == "JobA: 1 failed, exit code 3, reason: none"
    assert group.as_json() == {
        "job": "JobA",
        "exitCode": 3,
        "statusReason": None,
        "count": 1,
        "indices": "",
        "exampleJobId": "a",
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
