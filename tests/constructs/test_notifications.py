"""The failure notification's pattern and message, judged by an EventBridge that is not ours:
moto's. A rule with the pattern and the message as its input transformer sends to a queue;
events are put; what reached the queue is what a subscriber would get."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pipeline.failure_events import INPUT_PATHS, failure_event_pattern, message_template

QUEUE = "arn:aws:batch:us-east-1:123456789012:job-queue/ProdQueue"


@pytest.fixture
def delivered() -> Iterator[Any]:
    """put(detail) -> the messages the rule delivered for that event."""
    with mock_aws():
        events = boto3.client("events", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="target")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(Name="failed", EventPattern=json.dumps(failure_event_pattern(QUEUE)))
        events.put_targets(
            Rule="failed",
            Targets=[
                {
                    "Id": "t",
                    "Arn": arn,
                    "InputTransformer": {
                        "InputPathsMap": dict(INPUT_PATHS),
                        "InputTemplate": json.dumps(message_template()),
                    },
                }
            ],
        )

        def put(detail: dict[str, Any], source: str = "aws.batch") -> list[str]:
            entry = {
                "Source": source,
                "DetailType": "Batch Job State Change",
                "Detail": json.dumps(
                    {"jobQueue": QUEUE, "status": "FAILED", "jobName": "JobB", "jobId": "abc"}
                    | detail
                ),
            }
            assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            for message in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            return [json.loads(m["Body"]) for m in messages]

        yield put


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ({"statusReason": "Essential container in task exited"}, 1),  # standard job
        (
            {
                "statusReason": "Array Child Job failed",
                "arrayProperties": {"size": 10_000, "statusSummary": {"FAILED": 37}},
            },
            1,
        ),  # parent
        ({}, 1),  # no reason given: still reported
        ({"statusReason": "x", "arrayProperties": {"index": 3}}, 0),  # a child: parent says it
        ({"statusReason": "Dependent Job failed"}, 0),  # repeats an earlier failure
        ({"statusReason": "x", "status": "SUCCEEDED"}, 0),
        ({"statusReason": "x", "jobQueue": QUEUE.replace("ProdQueue", "OtherQueue")}, 0),
    ],
)
def test_pattern_delivers_one_notification_per_failure(
    delivered: Any, detail: dict[str, Any], expected: int
) -> None:
    assert len(delivered(detail)) == expected


def test_other_sources_are_not_delivered(delivered: Any) -> None:
    assert delivered({"statusReason": "x"}, source="aws.ecs") == []


def test_message_names_the_job_reason_and_links_to_the_console(delivered: Any) -> None:
    (text,) = delivered(
        {
            "statusReason": "Array Child Job failed",
            "arrayProperties": {"size": 10_000, "statusSummary": {"FAILED": 37}},
        }
    )
    assert "AWS Batch job JobB (abc) FAILED. Reason: Array Child Job failed." in text
    assert "Array size: 10000; failed children: 37." in text
    assert "console.aws.amazon.com/batch/home?region=us-east-1#jobs/detail/abc" in text
