"""The failure notification's pattern and message, as the rule and the local run use them."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.notifications import failure_event_pattern, matches, render

QUEUE = "arn:aws:batch:us-east-1:123456789012:job-queue/ProdQueue"


def event(**detail: Any) -> dict[str, Any]:
    return {
        "source": "aws.batch",
        "detail-type": "Batch Job State Change",
        "region": "eu-west-1",
        "detail": {
            "jobQueue": QUEUE,
            "status": "FAILED",
            "jobName": "JobB",
            "jobId": "abc",
            **detail,
        },
    }


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ({"statusReason": "Essential container in task exited"}, True),  # standard job
        (
            {
                "statusReason": "Array Child Job failed",
                "arrayProperties": {"size": 10_000, "statusSummary": {"FAILED": 37}},
            },
            True,
        ),  # parent
        ({}, True),  # no reason given: still reported
        ({"statusReason": "x", "arrayProperties": {"index": 3}}, False),  # a child: parent says it
        ({"statusReason": "Dependent Job failed"}, False),  # repeats an earlier failure
        ({"statusReason": "x", "status": "SUCCEEDED"}, False),
        ({"statusReason": "x", "jobQueue": QUEUE.replace("ProdQueue", "OtherQueue")}, False),
    ],
)
def test_pattern_matches_one_notification_per_failure(
    detail: dict[str, Any], expected: bool
) -> None:
    assert matches(failure_event_pattern(QUEUE), event(**detail)) is expected


def test_other_sources_do_not_match() -> None:
    other = event(statusReason="x") | {"source": "aws.ecs"}
    assert not matches(failure_event_pattern(QUEUE), other)


def test_message_names_the_job_reason_and_links_to_the_console() -> None:
    text = render(
        event(
            statusReason="Array Child Job failed",
            arrayProperties={"size": 10_000, "statusSummary": {"FAILED": 37}},
        )
    )
    assert "AWS Batch job JobB (abc) FAILED. Reason: Array Child Job failed." in text
    assert "Array size: 10000; failed children: 37." in text
    assert (
        "https://eu-west-1.console.aws.amazon.com/batch/home?region=eu-west-1#jobs/detail/abc"
        in text
    )
