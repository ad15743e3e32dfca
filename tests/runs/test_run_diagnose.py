"""pipeline/runs/diagnose.py: why a run's jobs wait in RUNNABLE, one finding per reason, from
the queue, its compute environments, the instance types and the front of the queue. The Batch
here is a small stand-in with boto3's method names and shapes."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.memory_batch import MemoryBatch
from pipeline.document import PipelineDocument
from pipeline.runs.diagnose import Finding, diagnose, waiting_jobs
from pipeline.runs.progress import JobProgress
from pipeline.spec import DEFAULT_SPEC, RUN_TAG

DOCUMENT = PipelineDocument("ProdQueue", {j.key: j.definition_name for j in DEFAULT_SPEC})


class Queue(MemoryBatch):
    """A run's jobs in ``states`` on a queue with these environments and front of queue."""

    def __init__(
        self,
        states: dict[str, str],
        *,
        queue: dict[str, Any] | None = None,
        environments: list[dict[str, Any]] | None = None,
        front: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.jobs = {
            f"id-{key}": {
                "jobId": f"id-{key}",
                "jobName": key,
                "status": status,
                "tags": {RUN_TAG: "r1"},
            }
            for key, status in states.items()
        }
        self.environments = environments or []
        self.queue = queue or {}
        self.front = front

    def describe_job_queues(self, *, jobQueues: list[str]) -> dict[str, Any]:  # noqa: N803
        assert jobQueues == ["ProdQueue"]
        order = [
            {"computeEnvironment": e.get("computeEnvironmentName", "ce-x")}
            for e in self.environments
        ]
        return {
            "jobQueues": [
                {"jobQueueName": "ProdQueue", "computeEnvironmentOrder": order, **self.queue}
            ]
        }

    def describe_compute_environments(self, *, computeEnvironments: list[str]) -> dict[str, Any]:  # noqa: N803
        assert computeEnvironments == [
            e.get("computeEnvironmentName", "ce-x") for e in self.environments
        ]
        return {"computeEnvironments": self.environments}

    def get_job_queue_snapshot(self, *, jobQueue: str) -> dict[str, Any]:  # noqa: N803
        assert jobQueue == "ProdQueue"
        if self.front is None:
            raise ClientError({"Error": {"Code": "ClientException", "Message": "no"}}, "Get")
        return {"frontOfQueue": {"jobs": [{"jobArn": arn} for arn in self.front]}}


def _environment(name: str, **fields: Any) -> dict[str, Any]:
    resources = fields.pop("resources", {})
    return {
        "computeEnvironmentName": name,
        "state": "ENABLED",
        "status": "VALID",
        "computeResources": {
            "maxvCpus": 256,
            "desiredvCpus": 0,
            "instanceTypes": ["r6i.8xlarge"],
            **resources,
        },
        **fields,
    }


def test_jobs_waiting_are_runnable_ones_and_arrays_with_runnable_children() -> None:
    run = {
        "JobA": JobProgress("JobA", "a", "SUCCEEDED"),
        "JobB": JobProgress("JobB", "b", "PENDING", children={"RUNNABLE": 2}),
        "JobC": JobProgress("JobC", "c", "RUNNABLE"),
        "JobD": JobProgress("JobD", "d", "PENDING", children={"RUNNABLE": 0}),
    }
    assert [j.key for j in waiting_jobs(run)] == ["JobB", "JobC"]


def test_a_run_with_nothing_waiting_has_no_findings() -> None:
    assert diagnose(Queue({"JobA": "RUNNING"}), DOCUMENT, "r1") == []  # type: ignore[arg-type]


def test_a_disabled_queue_and_environment_are_named_with_what_to_do() -> None:
    batch = Queue(
        {"JobA": "RUNNABLE"},
        queue={"state": "DISABLED"},
        environments=[_environment("ce-1", state="DISABLED")],
    )
    findings = diagnose(batch, DOCUMENT, "r1")  # type: ignore[arg-type]
    assert [(f.job, f.kind) for f in findings] == [
        ("JobA", "queue-disabled"),
        ("JobA", "environment-disabled"),
    ]
    assert findings[0].reason == "job queue ProdQueue is DISABLED"
    assert findings[1].action == "enable it (UpdateComputeEnvironment state=ENABLED)"


def test_an_invalid_environment_says_its_reason() -> None:
    batch = Queue(
        {"JobA": "RUNNABLE"},
        environments=[_environment("ce-1", status="INVALID", statusReason="bad role")],
    )
    (finding,) = diagnose(batch, DOCUMENT, "r1")  # type: ignore[arg-type]
    assert (finding.kind, finding.reason) == (
        "environment-invalid",
        "compute environment ce-1 is INVALID: bad role",
    )


def test_an_environment_at_its_maxvcpus_is_named_below_it_not() -> None:
    full = Queue(
        {"JobA": "RUNNABLE"},
        environments=[_environment("ce-1", resources={"maxvCpus": 64, "desiredvCpus": 64})],
    )
    (finding,) = diagnose(full, DOCUMENT, "r1")  # type: ignore[arg-type]
    assert finding.reason == "compute environment ce-1 is at its maxvCpus (64) with jobs running"
    room = Queue(
        {"JobA": "RUNNABLE"},
        environments=[_environment("ce-1", resources={"maxvCpus": 64, "desiredvCpus": 63})],
    )
    assert diagnose(room, DOCUMENT, "r1") == []  # type: ignore[arg-type]


def test_spot_capacity_is_named_only_for_spot_environments_saying_so() -> None:
    reason = "Insufficient capacity for the requested Spot instances"
    spot = Queue(
        {"JobA": "RUNNABLE"},
        environments=[_environment("ce-1", statusReason=reason, resources={"type": "SPOT"})],
    )
    (finding,) = diagnose(spot, DOCUMENT, "r1")  # type: ignore[arg-type]
    assert (finding.kind, finding.reason) == (
        "spot",
        f"Spot capacity is unavailable to ce-1: {reason}",
    )
    on_demand = Queue(
        {"JobA": "RUNNABLE"},
        environments=[_environment("ce-1", statusReason=reason, resources={"type": "EC2"})],
    )
    assert diagnose(on_demand, DOCUMENT, "r1") == []  # type: ignore[arg-type]


def test_a_job_no_instance_type_fits_is_named_with_the_types() -> None:
    # GIVEN JobB (32 vCPUs) waiting on a queue of 16- and 8-vCPU instances, THEN it fits none
    batch = Queue(
        {"JobB": "RUNNABLE"},
        environments=[
            _environment("ce-1", resources={"instanceTypes": ["r6i.4xlarge", "r6i.2xlarge"]})
        ],
    )
    (finding,) = diagnose(batch, DOCUMENT, "r1")  # type: ignore[arg-type]
    assert finding.kind == "no-fit"
    assert finding.reason == (
        "no instance type of the queue fits 32 vCPU and 4,096 MiB (types: r6i.2xlarge, r6i.4xlarge)"
    )


def test_a_job_at_the_front_of_a_healthy_queue_is_told_nothing_is_wrong() -> None:
    batch = Queue(
        {"JobA": "RUNNABLE", "JobC": "RUNNABLE"},
        environments=[_environment("ce-1")],
        front=["arn:job/other", "arn:job/id-JobC", "arn:job/id-JobA:3"],
    )
    findings = diagnose(batch, DOCUMENT, "r1")  # type: ignore[arg-type]
    assert [(f.job, f.reason) for f in findings] == [
        ("JobA", "position 3 of 3 at the front of the queue"),
        ("JobC", "position 2 of 3 at the front of the queue"),
    ]
    assert findings[1].action == (
        "it waits behind 1 job(s) of higher priority or earlier submission; nothing is wrong"
    )
    assert findings[1].as_json() == {
        "job": "JobC",
        "kind": "queue-position",
        "reason": "position 2 of 3 at the front of the queue",
        "action": findings[1].action,
    }


def test_a_job_at_the_front_of_a_queue_with_a_problem_points_at_it() -> None:
    batch = Queue(
        {"JobA": "RUNNABLE"},
        queue={"state": "DISABLED"},
        environments=[_environment("ce-1")],
        front=["arn:job/id-JobA"],
    )
    findings = diagnose(batch, DOCUMENT, "r1")  # type: ignore[arg-type]
    assert findings[-1] == Finding(
        "JobA",
        "queue-position",
        "position 1 of 1 at the front of the queue",
        "see the reasons above",
    )


def test_each_finding_says_what_to_do() -> None:
    # GIVEN a disabled queue, and an environment that is disabled, invalid without a reason,
    # at its maxvCpus, nameless, and on Fargate Spot that reports a Spot failure
    environment = _environment(
        "ignored",
        state="DISABLED",
        status="INVALID",
        resources={"maxvCpus": 8, "desiredvCpus": 8, "type": "FARGATE_SPOT"},
    )
    del environment["computeEnvironmentName"]
    batch = Queue({"JobA": "RUNNABLE"}, queue={"state": "DISABLED"}, environments=[environment])
    # WHEN the run is diagnosed
    findings = diagnose(batch, DOCUMENT, "r1")  # type: ignore[arg-type]
    # THEN each reason comes with its action
    assert [(f.kind, f.reason, f.action) for f in findings] == [
        (
            "queue-disabled",
            "job queue ProdQueue is DISABLED",
            "enable it (UpdateJobQueue state=ENABLED)",
        ),
        (
            "environment-disabled",
            "compute environment ? is DISABLED",
            "enable it (UpdateComputeEnvironment state=ENABLED)",
        ),
        (
            "environment-invalid",
            "compute environment ? is INVALID: no reason given",
            "fix what the reason names (instance role, subnets, security groups, launch "
            "template), then update the environment",
        ),
        (
            "max-vcpus",
            "compute environment ? is at its maxvCpus (8) with jobs running",
            "wait for them, or raise maxvCpus (the max_vcpus prop)",
        ),
    ]


@pytest.mark.parametrize(
    ("kind", "reason", "found"),
    [
        ("FARGATE_SPOT", "Spot fleet request failed", True),
        ("SPOT", "Insufficient capacity", True),
        ("SPOT", "The instance role is missing", False),
    ],
)
def test_spot_is_named_when_its_environment_says_capacity_or_spot(
    kind: str, reason: str, found: bool
) -> None:
    batch = Queue(
        {"JobA": "RUNNABLE"},
        environments=[_environment("ce-1", statusReason=reason, resources={"type": kind})],
    )
    findings = diagnose(batch, DOCUMENT, "r1")  # type: ignore[arg-type]
    expected = Finding(
        "JobA",
        "spot",
        f"Spot capacity is unavailable to ce-1: {reason}",
        "allow more instance types or subnets (Availability Zones), or run On-Demand",
    )
    assert findings == ([expected] if found else [])
