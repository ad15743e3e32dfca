"""The failure rule's event pattern, judged by an EventBridge that is not ours: moto's.

A rule with the pattern sends to an SQS queue; "Batch Job State Change" events are put, shaped
as the AWS Batch User Guide's example ("Job state change events": the envelope, and a detail
that is the job's DescribeJobs ``JobDetail``); what reached the queue is what the topic would
get. The pattern is the construct's: the function it synthesizes its rule from, and (in the
slow test) the rule's ``EventPattern`` read from the synthesized stack.

Each event left out differs from one delivered in one field (the status, the queue, an array
index, the status reason, the source or the detail type), so each part of the pattern, and
each operator it uses (``exists``, ``anything-but``, ``$or``), decides an event on its own.
moto's EventBridge evaluates all three; the first test checks that it evaluates patterns at
all, and the last that these events tell a broken pattern from the right one.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from helpers.synth import Synthesized, resolve
from pipeline.batch_facts import DEPENDENCY_FAILED
from pipeline.failure_events import failure_event_pattern

REGION = "us-east-1"
ACCOUNT = "123456789012"
QUEUE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/ProdQueue"
OTHER_QUEUE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/OtherQueue"
PARENT = str(uuid.uuid5(uuid.NAMESPACE_URL, "JobB-parent"))


@dataclass(frozen=True)
class Change:
    """One job state change, as AWS Batch reports it to EventBridge."""

    job_id: str
    job_name: str
    status: str
    status_reason: str | None = None
    queue: str = QUEUE_ARN
    array: dict[str, Any] | None = None
    source: str = "aws.batch"
    detail_type: str = "Batch Job State Change"

    def entry(self) -> dict[str, Any]:
        """The PutEvents entry of this change."""
        job_arn = f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{self.job_id}"
        definition = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{self.job_name}:1"
        detail: dict[str, Any] = {
            "jobArn": job_arn,
            "jobName": self.job_name,
            "jobId": self.job_id,
            "jobQueue": self.queue,
            "status": self.status,
            "attempts": [],
            "createdAt": 1_764_115_200_000,
            "retryStrategy": {"attempts": 3, "evaluateOnExit": []},
            "dependsOn": [],
            "jobDefinition": definition,
            "parameters": {},
            "container": {
                "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/job-image:latest",
                "command": ["python", "-m", "pipeline.jobs"],
                "volumes": [],
                "environment": [],
                "mountPoints": [],
                "ulimits": [],
                "networkInterfaces": [],
                "resourceRequirements": [
                    {"value": "1", "type": "VCPU"},
                    {"value": "2048", "type": "MEMORY"},
                ],
                "secrets": [],
            },
            "tags": {"resourceArn": job_arn},
            "propagateTags": True,
            "platformCapabilities": [],
        }
        if self.status_reason is not None:
            detail["statusReason"] = self.status_reason
        if self.array is not None:
            detail["arrayProperties"] = self.array
        return {
            "Source": self.source,
            "DetailType": self.detail_type,
            "Resources": [job_arn],
            "Detail": json.dumps(detail),
        }


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


EXITED = "Essential container in task exited"
REPORTED: dict[str, Change] = {
    "a standard job failed": Change(_id("a standard job failed"), "JobA", "FAILED", EXITED),
    "an array parent failed": Change(
        PARENT,
        "JobB",
        "FAILED",
        "Array Child Job failed",
        array={"size": 10_000, "statusSummary": {"SUCCEEDED": 9_963, "FAILED": 37}},
    ),
    "a job failed with no reason given": Change(_id("no reason"), "JobE", "FAILED"),
    "a job stopped by the user": Change(
        _id("stopped"), "JobD", "FAILED", "cancelled by user: run 20261126T020000-3fa2c1"
    ),
}
"""Changes a subscriber must hear of: one message each. Each change has a job ID of its own,
so what arrived says which change it was."""
LEFT_OUT: dict[str, Change] = {
    "a standard job succeeded": Change(_id("succeeded"), "JobA", "SUCCEEDED"),
    "a standard job started running": Change(_id("running"), "JobA", "RUNNING"),
    "a job of another queue failed": Change(
        _id("other queue"), "JobA", "FAILED", EXITED, OTHER_QUEUE_ARN
    ),
    "an array child failed (its parent reports it)": Change(
        f"{PARENT}:7", "JobB", "FAILED", EXITED, array={"index": 7}
    ),
    "a job failed because a job it depends on failed": Change(
        _id("dependency"), "JobC", "FAILED", DEPENDENCY_FAILED
    ),
    "an ECS task stopped": Change(_id("ecs"), "JobA", "FAILED", EXITED, source="aws.ecs"),
    "a service job failed": Change(
        _id("service job"),
        "JobA",
        "FAILED",
        EXITED,
        detail_type="Batch Service Job State Change",
    ),
}
"""Changes that repeat news a subscriber already has, or are not failures of this queue."""


Put = Callable[[dict[str, Any], list[Change]], set[str]]


@pytest.fixture
def put() -> Iterator[Put]:
    """put(pattern, changes) -> the job IDs of the changes a rule with ``pattern`` delivered."""
    with mock_aws():
        events = boto3.client("events", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        rules: list[str] = []

        def put(pattern: dict[str, Any], changes: list[Change]) -> set[str]:
            name = f"rule-{len(rules)}"
            rules.append(name)
            url = sqs.create_queue(QueueName=name)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            events.put_rule(Name=name, EventPattern=json.dumps(pattern))
            events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
            for start in range(0, len(changes), 10):  # PutEvents takes 10 entries a call
                entries = [c.entry() for c in changes[start : start + 10]]
                assert events.put_events(Entries=entries)["FailedEntryCount"] == 0
            delivered: list[str] = []
            while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
                "Messages", []
            ):
                for message in messages:
                    delivered.append(json.loads(message["Body"])["detail"]["jobId"])
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            events.remove_targets(Rule=name, Ids=["queue"])
            events.delete_rule(Name=name)
            assert len(delivered) == len(set(delivered)), f"delivered twice: {delivered}"
            return set(delivered)

        yield put


def _ids(changes: dict[str, Change]) -> set[str]:
    return {c.job_id for c in changes.values()}


ALL = [*REPORTED.values(), *LEFT_OUT.values()]


def test_moto_evaluates_patterns_it_is_given(put: Put) -> None:
    # GIVEN a rule whose pattern no change matches, and one that every Batch change matches
    never = {"source": ["aws.batch"], "detail": {"status": ["NO-SUCH-STATUS"]}}
    every = {"source": ["aws.batch"]}
    # WHEN the changes are put, THEN the first delivers nothing and the second every Batch one
    assert put(never, ALL) == set()
    assert put(every, ALL) == {c.job_id for c in ALL if c.source == "aws.batch"}


def test_the_rule_delivers_exactly_the_failures_a_subscriber_must_hear_of(put: Put) -> None:
    # GIVEN the rule's pattern for this queue
    pattern = failure_event_pattern(QUEUE_ARN)
    # WHEN every change is put
    delivered = put(pattern, ALL)
    # THEN exactly the failures to report arrived, each once
    assert delivered == _ids(REPORTED), {
        name: change.job_id in delivered for name, change in {**REPORTED, **LEFT_OUT}.items()
    }


def _broken(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    pattern = copy.deepcopy(failure_event_pattern(QUEUE_ARN))
    mutate(pattern)
    return pattern


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(failure_event_pattern("ProdQueue"), id="the queue's name, not its ARN"),
        pytest.param(failure_event_pattern(OTHER_QUEUE_ARN), id="another queue's ARN"),
        pytest.param(
            _broken(lambda p: p["detail"].pop("arrayProperties")), id="array children kept"
        ),
        pytest.param(_broken(lambda p: p["detail"].pop("$or")), id="dependency failures kept"),
        pytest.param(
            _broken(lambda p: p["detail"]["$or"].pop()), id="failures with no reason dropped"
        ),
    ],
)
def test_these_changes_tell_a_broken_pattern_from_the_rule(
    put: Put, broken: dict[str, Any]
) -> None:
    # GIVEN a pattern broken in one place, WHEN every change is put, THEN what arrives differs
    assert put(broken, ALL) != _ids(REPORTED)


@pytest.mark.slow  # reads the synthesized default stack, which may have to be synthesized
def test_the_synthesized_rule_delivers_the_same_failures(
    put: Put, default_stack: Synthesized
) -> None:
    # GIVEN the JobFailed rule's pattern as the default stack synthesizes it, its queue's ARN
    # resolved as CloudFormation would
    rule = default_stack.one("AWS::Events::Rule", "JobFailed")["Properties"]
    (queue_id,) = default_stack.resources("AWS::Batch::JobQueue")

    def queue_attribute(logical_id: str, attribute: str | None) -> str:
        assert logical_id == queue_id, f"the pattern refers to {logical_id}, not the queue"
        # Ref of an AWS::Batch::JobQueue is its ARN.
        values = {None: QUEUE_ARN, "JobQueueArn": QUEUE_ARN, "JobQueueName": "ProdQueue"}
        return values[attribute]

    def resolved(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            (key,) = node
            if key == "Ref" or key.startswith("Fn::"):
                return resolve(node, queue_attribute)
        if isinstance(node, dict):
            return {k: resolved(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolved(v) for v in node]
        return node

    pattern = resolved(rule["EventPattern"])
    # WHEN every change is put, THEN exactly the failures to report arrive
    assert put(pattern, ALL) == _ids(REPORTED)
