"""pipeline/runs/diagnose.py: why a run's jobs wait in RUNNABLE, one finding per reason, from
the queue, its compute environments, the instance types and the front of the queue. The Batch
is the engine's (tests/helpers/batch.py): a run is submitted to ProdQueue and held there, the
queue is moved onto compute environments made for the test (tests/helpers/queues.py), and
DescribeJobQueues, DescribeComputeEnvironments and GetJobQueueSnapshot are the engine's answers.
An environment's health (INVALID, a Spot capacity reason), which the engine does not model, is
put on its answer as AWS reports it (``report_health``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.batch import EngineBatch, engine_batch
from helpers.queues import managed_environment, report_health
from pipeline.document import PipelineDocument
from pipeline.runs.chain import submit_pipeline
from pipeline.runs.diagnose import Finding, diagnose, waiting_jobs
from pipeline.runs.progress import JobProgress, SubmittedRun
from pipeline.runs.requests import run_config
from pipeline.spec import DEFAULT_SPEC

DOCUMENT = PipelineDocument("ProdQueue", {j.key: j.definition_name for j in DEFAULT_SPEC})
NOTHING_WRONG = (
    "it waits behind 0 job(s) of higher priority or earlier submission; nothing is wrong"
)


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _run(aws: EngineBatch, run_id: str = "r1") -> SubmittedRun:
    """A run of two children in ProdQueue, its jobs held where the engine puts them: JobA
    RUNNABLE, the rest PENDING on it."""
    aws.hold_new_jobs()
    config = run_config(array_size=2, run_id=run_id)
    return submit_pipeline(aws.batch, DOCUMENT, config, sleep=lambda _: None)


def _on(aws: EngineBatch, *environments: str) -> None:
    """ProdQueue moves onto these compute environments (ARNs), in that order."""
    aws.reader.update_job_queue(
        jobQueue="ProdQueue",
        computeEnvironmentOrder=[
            {"order": order, "computeEnvironment": arn}
            for order, arn in enumerate(environments, start=1)
        ],
    )


def _disable_queue(aws: EngineBatch) -> None:
    aws.reader.update_job_queue(jobQueue="ProdQueue", state="DISABLED")


def _position(job: str, position: int, of: int, action: str = NOTHING_WRONG) -> Finding:
    return Finding(
        job, "queue-position", f"position {position} of {of} at the front of the queue", action
    )


def test_jobs_waiting_are_runnable_ones_and_arrays_with_runnable_children() -> None:
    run = {
        "JobA": JobProgress("JobA", "a", "SUCCEEDED"),
        "JobB": JobProgress("JobB", "b", "PENDING", children={"RUNNABLE": 2}),
        "JobC": JobProgress("JobC", "c", "RUNNABLE"),
        "JobD": JobProgress("JobD", "d", "PENDING", children={"RUNNABLE": 0}),
    }
    assert [j.key for j in waiting_jobs(run)] == ["JobB", "JobC"]


def test_a_run_with_nothing_waiting_has_no_findings(aws: EngineBatch) -> None:
    # GIVEN a run whose JobA runs (the rest wait on it, PENDING), and another run's JobA
    # waiting to be placed
    _run(aws, "other")
    run = _run(aws)
    aws.start(run.job_ids["JobA"])
    # THEN nothing of the run waits to be placed
    assert diagnose(aws.batch, DOCUMENT, "r1") == []


def test_a_disabled_queue_and_environment_are_named_with_what_to_do(aws: EngineBatch) -> None:
    # GIVEN a run whose JobA waits to be placed, and then its queue and the queue's compute
    # environment disabled
    _on(aws, managed_environment(aws.reader, "ce-1"))
    _run(aws)
    _disable_queue(aws)
    aws.reader.update_compute_environment(computeEnvironment="ce-1", state="DISABLED")
    # WHEN the run is diagnosed
    findings = diagnose(aws.batch, DOCUMENT, "r1")
    # THEN both are named, with what to do, and JobA's place in the queue points at them
    assert [(f.job, f.kind) for f in findings] == [
        ("JobA", "queue-disabled"),
        ("JobA", "environment-disabled"),
        ("JobA", "queue-position"),
    ]
    assert findings[0].reason == "job queue ProdQueue is DISABLED"
    assert findings[1].action == "enable it (UpdateComputeEnvironment state=ENABLED)"
    assert findings[2].action == "see the reasons above"


def test_an_invalid_environment_says_its_reason(aws: EngineBatch) -> None:
    _on(aws, managed_environment(aws.reader, "ce-1"))
    report_health(aws.batch, "ce-1", "INVALID", "bad role")
    _run(aws)
    finding, position = diagnose(aws.batch, DOCUMENT, "r1")
    assert (finding.kind, finding.reason) == (
        "environment-invalid",
        "compute environment ce-1 is INVALID: bad role",
    )
    assert position == _position("JobA", 1, 1, "see the reasons above")


def test_an_environment_at_its_maxvcpus_is_named_below_it_not(aws: EngineBatch) -> None:
    # GIVEN a run waiting on an environment whose desired vCPUs reached its maxvCpus
    _on(aws, managed_environment(aws.reader, "ce-1", max_vcpus=64, desiredvCpus=64))
    _run(aws)
    finding, _ = diagnose(aws.batch, DOCUMENT, "r1")
    assert finding.reason == "compute environment ce-1 is at its maxvCpus (64) with jobs running"
    # WHEN the environment has room again THEN only the job's place in the queue is left
    aws.reader.update_compute_environment(
        computeEnvironment="ce-1", computeResources={"desiredvCpus": 63}
    )
    assert diagnose(aws.batch, DOCUMENT, "r1") == [_position("JobA", 1, 1)]


def test_spot_capacity_is_named_only_for_spot_environments_saying_so(aws: EngineBatch) -> None:
    # GIVEN a queue on a Spot and an On-Demand environment, both reporting a capacity shortage
    reason = "Insufficient capacity for the requested Spot instances"
    spot = managed_environment(aws.reader, "ce-1", type="SPOT")
    on_demand = managed_environment(aws.reader, "ce-2", type="EC2")
    _on(aws, spot, on_demand)
    report_health(aws.batch, "ce-1", "VALID", reason)
    report_health(aws.batch, "ce-2", "VALID", reason)
    _run(aws)
    # WHEN the run is diagnosed THEN only the Spot environment is named
    finding, _ = diagnose(aws.batch, DOCUMENT, "r1")
    assert (finding.kind, finding.reason) == (
        "spot",
        f"Spot capacity is unavailable to ce-1: {reason}",
    )


def test_a_job_no_instance_type_fits_is_named_with_the_types(aws: EngineBatch) -> None:
    # GIVEN JobB (32 vCPUs) waiting on a queue of 16- and 8-vCPU instances, THEN it fits none
    _on(aws, managed_environment(aws.reader, "ce-1", ["r6i.4xlarge", "r6i.2xlarge"]))
    run = _run(aws)
    aws.succeed(run.job_ids["JobA"])
    finding, position = diagnose(aws.batch, DOCUMENT, "r1")
    assert finding.kind == "no-fit"
    assert finding.reason == (
        "no instance type of the queue fits 32 vCPU and 4,096 MiB (types: r6i.2xlarge, r6i.4xlarge)"
    )
    assert (position.job, position.reason) == ("JobB", "position 1 of 2 at the front of the queue")


def test_a_job_at_the_front_of_a_healthy_queue_is_told_nothing_is_wrong(aws: EngineBatch) -> None:
    # GIVEN another run's JobA waiting to be placed, then a run whose JobA succeeded and whose
    # JobB child 0 succeeded: JobB's child 1 and JobC's child 0 wait behind the other JobA
    _on(aws, managed_environment(aws.reader, "ce-1"))
    _run(aws, "other")
    run = _run(aws)
    aws.succeed(run.job_ids["JobA"])
    aws.succeed(f"{run.job_ids['JobB']}:0")
    # WHEN the run is diagnosed
    findings = diagnose(aws.batch, DOCUMENT, "r1")
    # THEN each waiting job is told its place at the front of the queue, and that nothing is
    # wrong
    assert [(f.job, f.reason) for f in findings] == [
        ("JobB", "position 2 of 3 at the front of the queue"),
        ("JobC", "position 3 of 3 at the front of the queue"),
    ]
    assert findings[1].action == (
        "it waits behind 2 job(s) of higher priority or earlier submission; nothing is wrong"
    )
    assert findings[1].as_json() == {
        "job": "JobC",
        "kind": "queue-position",
        "reason": "position 3 of 3 at the front of the queue",
        "action": findings[1].action,
    }


def test_a_job_at_the_front_of_a_queue_with_a_problem_points_at_it(aws: EngineBatch) -> None:
    _on(aws, managed_environment(aws.reader, "ce-1"))
    _run(aws)
    _disable_queue(aws)
    findings = diagnose(aws.batch, DOCUMENT, "r1")
    assert findings[-1] == _position("JobA", 1, 1, "see the reasons above")


def test_each_finding_says_what_to_do(aws: EngineBatch) -> None:
    # GIVEN a disabled queue, and an environment that is disabled, invalid without a reason,
    # at its maxvCpus, and on Fargate Spot without a Spot failure
    _on(
        aws,
        managed_environment(
            aws.reader, "ce-1", max_vcpus=8, desiredvCpus=8, type="FARGATE_SPOT", state="DISABLED"
        ),
    )
    report_health(aws.batch, "ce-1", "INVALID", None)
    _run(aws)
    _disable_queue(aws)
    # WHEN the run is diagnosed
    findings = diagnose(aws.batch, DOCUMENT, "r1")
    # THEN each reason comes with its action
    assert [(f.kind, f.reason, f.action) for f in findings] == [
        (
            "queue-disabled",
            "job queue ProdQueue is DISABLED",
            "enable it (UpdateJobQueue state=ENABLED)",
        ),
        (
            "environment-disabled",
            "compute environment ce-1 is DISABLED",
            "enable it (UpdateComputeEnvironment state=ENABLED)",
        ),
        (
            "environment-invalid",
            "compute environment ce-1 is INVALID: no reason given",
            "fix what the reason names (instance role, subnets, security groups, launch "
            "template), then update the environment",
        ),
        (
            "max-vcpus",
            "compute environment ce-1 is at its maxvCpus (8) with jobs running",
            "wait for them, or raise maxvCpus (the max_vcpus prop)",
        ),
        (
            "queue-position",
            "position 1 of 1 at the front of the queue",
            "see the reasons above",
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
    aws: EngineBatch, kind: str, reason: str, found: bool
) -> None:
    _on(aws, managed_environment(aws.reader, "ce-1", type=kind))
    report_health(aws.batch, "ce-1", "VALID", reason)
    _run(aws)
    findings = diagnose(aws.batch, DOCUMENT, "r1")
    expected = Finding(
        "JobA",
        "spot",
        f"Spot capacity is unavailable to ce-1: {reason}",
        "allow more instance types or subnets (Availability Zones), or run On-Demand",
    )
    assert findings == (
        [expected, _position("JobA", 1, 1, "see the reasons above")]
        if found
        else [_position("JobA", 1, 1)]
    )
