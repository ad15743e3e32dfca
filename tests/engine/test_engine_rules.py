"""AWS Batch's rules, as the engine keeps them and a Batch client sees them: array parents,
dependencies (STANDARD, N_TO_N, SEQUENTIAL), failures that reach dependents, retries, cancel and
terminate, ListJobs pages; each response in the shape botocore's model of the Batch API
declares. Every test is fast (the engine in process, jobs placed by the test) and fails when
the rule it names is broken."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import botocore.session
import pytest
from botocore.model import ListShape, MapShape, Shape, StringShape, StructureShape

from helpers.batch import EngineBatch, engine_batch

REASON = "Essential container in task exited"
BATCH_MODEL = botocore.session.get_session().get_service_model("batch")
# botocore's model marks JobDetail.startedAt required, while the service leaves it out until
# the job starts (startedAt is "when the job transitioned from the STARTING state to the
# RUNNING state", as the same model says): a job that never ran has none.
ABSENT_UNTIL_STARTED = {("JobDetail", "startedAt")}


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def shape_problems(operation: str, response: dict[str, Any]) -> list[str]:
    """Where ``response`` (a parsed response) strays from the operation's output shape: a key
    the shape does not declare, a required one missing, a value of another type, a status
    outside its enum."""
    body = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    output = BATCH_MODEL.operation_model(operation).output_shape
    assert output is not None
    return _problems(body, output, operation)


SCALARS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "double": (float, int),
    "float": (float, int),
    "timestamp": (datetime,),
}


def _problems(value: Any, shape: Shape, where: str) -> list[str]:
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a {shape.name}"]
        members = shape.members
        found = [f"{where}.{k}: not a member of {shape.name}" for k in value if k not in members]
        found += [
            f"{where}.{k}: required by {shape.name}, missing"
            for k in shape.required_members
            if k not in value and (shape.name, k) not in ABSENT_UNTIL_STARTED
        ]
        for key, member in value.items():
            if key in members:
                found += _problems(member, members[key], f"{where}.{key}")
        return found
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        return [p for i, v in enumerate(value) for p in _problems(v, shape.member, f"{where}[{i}]")]
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a map"]
        return [
            p
            for k, v in value.items()
            for p in [*_problems(k, shape.key, where), *_problems(v, shape.value, f"{where}.{k}")]
        ]
    kind = shape.type_name
    if not isinstance(value, SCALARS[kind]) or (kind != "boolean" and isinstance(value, bool)):
        return [f"{where}: {value!r} is not a {kind}"]
    if isinstance(shape, StringShape) and shape.enum and value not in shape.enum:
        return [f"{where}: {value!r} is not one of {shape.enum}"]
    return []


def _submit(aws: EngineBatch, key: str, **request: Any) -> str:
    job = aws.batch.submit_job(
        jobName=key, jobQueue=aws.queue_arn, jobDefinition=aws.definition_arns[key], **request
    )
    return str(job["jobId"])


def _described(aws: EngineBatch, *job_ids: str) -> dict[str, dict[str, Any]]:
    response = aws.batch.describe_jobs(jobs=list(job_ids))
    assert shape_problems("DescribeJobs", response) == []
    return {j["jobId"]: j for j in response["jobs"]}


def _listed(aws: EngineBatch, **request: Any) -> list[dict[str, Any]]:
    response = aws.batch.list_jobs(**request)
    assert shape_problems("ListJobs", response) == []
    return list(response["jobSummaryList"])


def test_a_failed_child_is_what_describe_jobs_and_list_jobs_show(aws: EngineBatch) -> None:
    # GIVEN a three-child array whose child 1 failed with exit code 2 (the others succeeded)
    aws.inject("JobB:1=exit:2")
    parent = _submit(aws, "JobB", arrayProperties={"size": 3})
    # WHEN the client describes the parent and that child, and lists the children by status
    described = _described(aws, parent, f"{parent}:1")
    failed = _listed(aws, arrayJobId=parent, jobStatus="FAILED")
    succeeded = _listed(aws, arrayJobId=parent, jobStatus="SUCCEEDED")
    # THEN (each response in botocore's shape) the parent, every child having ended, is FAILED
    # with its children counted by status, and has no attempt of its own
    job = described[parent]
    assert job["status"] == "FAILED"
    assert job["arrayProperties"] == {
        "size": 3,
        "statusSummary": {
            **dict.fromkeys(("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"), 0),
            "SUCCEEDED": 2,
            "FAILED": 1,
        },
    }
    assert job["attempts"] == []
    # AND the child failed with its reason and exit code, on the job and on its one attempt
    child = described[f"{parent}:1"]
    assert (child["status"], child["statusReason"]) == ("FAILED", REASON)
    assert child["arrayProperties"] == {"index": 1}
    assert child["container"]["exitCode"] == 2
    (attempt,) = child["attempts"]
    assert attempt["container"]["exitCode"] == 2
    assert attempt["container"]["logStreamName"] == child["container"]["logStreamName"]
    assert child["startedAt"] <= child["stoppedAt"] == attempt["stoppedAt"]
    # AND ListJobs by arrayJobId lists each child under its status, with its index
    assert [
        (s["jobId"], s["status"], s["statusReason"], s["container"], s["arrayProperties"])
        for s in failed
    ] == [(f"{parent}:1", "FAILED", REASON, {"exitCode": 2}, {"index": 1})]
    assert [(s["arrayProperties"], s["container"]) for s in succeeded] == [
        ({"index": 0}, {"exitCode": 0}),
        ({"index": 2}, {"exitCode": 0}),
    ]


def test_jobs_wait_pending_on_a_dependency_and_fail_when_it_fails(aws: EngineBatch) -> None:
    # GIVEN queued jobs: a two-child array, a job that depends on it, and one each of its
    # children depends on child for child (N_TO_N)
    aws.hold_new_jobs()
    array = _submit(aws, "JobB", arrayProperties={"size": 2})
    paired = _submit(
        aws, "JobC", arrayProperties={"size": 2}, dependsOn=[{"jobId": array, "type": "N_TO_N"}]
    )
    after = _submit(aws, "JobE", dependsOn=[{"jobId": array}])
    # THEN the array is PENDING with its children RUNNABLE, the jobs after it PENDING, and none
    # has started; ListJobs without a status lists the RUNNING jobs only: none
    jobs = _described(aws, array, paired, after)
    assert jobs[array]["status"] == "PENDING"
    assert jobs[array]["arrayProperties"]["statusSummary"]["RUNNABLE"] == 2
    assert jobs[paired]["arrayProperties"]["statusSummary"]["PENDING"] == 2
    assert jobs[after]["status"] == "PENDING"
    assert not any("startedAt" in j for j in jobs.values())
    assert _listed(aws, jobQueue=aws.queue_arn) == []
    pending = _listed(aws, jobQueue=aws.queue_arn, jobStatus="PENDING")
    assert {s["jobId"] for s in pending if ":" not in s["jobId"]} == {array, paired, after}
    # WHEN child 0 fails
    aws.fail_child(array, 0, REASON)
    # THEN the array is still PENDING (its child 1 has not ended) and so is the job after it,
    # while child 0 of the N_TO_N array fails on its dependency at once
    jobs = _described(aws, array, f"{paired}:0", after)
    assert jobs[array]["status"] == "PENDING"
    assert jobs[array]["arrayProperties"]["statusSummary"]["FAILED"] == 1
    assert jobs[after]["status"] == "PENDING"
    assert (jobs[f"{paired}:0"]["status"], jobs[f"{paired}:0"]["statusReason"]) == (
        "FAILED",
        "Dependent Job failed",
    )
    # WHEN child 1 succeeds
    aws.succeed(f"{array}:1")
    # THEN the array has FAILED, child 1 of the N_TO_N array may run, and the job after the
    # array fails on it without having started
    jobs = _described(aws, array, f"{paired}:1", after)
    assert jobs[array]["status"] == "FAILED"
    assert jobs[f"{paired}:1"]["status"] == "RUNNABLE"
    assert (jobs[after]["status"], jobs[after]["statusReason"]) == (
        "FAILED",
        "Dependent Job failed",
    )
    assert {k: jobs[after].get(k) for k in ("startedAt", "stoppedAt", "attempts")} == {
        "startedAt": None,
        "stoppedAt": None,
        "attempts": [],
    }
    assert "exitCode" not in jobs[after]["container"]


def test_cancel_and_terminate_end_jobs_as_the_api_reference_says(aws: EngineBatch) -> None:
    # GIVEN a running job and a job waiting for it
    aws.hold_new_jobs()
    first = _submit(aws, "JobA")
    second = _submit(aws, "JobB", arrayProperties={"size": 2}, dependsOn=[{"jobId": first}])
    aws.start(first)
    # WHEN both are cancelled
    aws.batch.cancel_job(jobId=first, reason="stop")
    aws.batch.cancel_job(jobId=second, reason="stop")
    # THEN the running job runs on, and the waiting one waits for it to end
    jobs = _described(aws, first, second)
    assert [jobs[first]["status"], jobs[second]["status"]] == ["RUNNING", "PENDING"]
    # WHEN the running job is terminated
    aws.batch.terminate_job(jobId=first, reason="user said so")
    # THEN it ends FAILED with the reason after its run, and the cancelled one FAILED with its
    # own reason, never having run
    jobs = _described(aws, first, second, f"{second}:0")
    assert (jobs[first]["status"], jobs[first]["statusReason"]) == ("FAILED", "user said so")
    assert jobs[first]["isTerminated"] is True
    assert jobs[first]["startedAt"] <= jobs[first]["stoppedAt"]
    assert (jobs[second]["status"], jobs[second]["statusReason"]) == ("FAILED", "stop")
    assert jobs[f"{second}:0"]["isCancelled"] is True
    assert "startedAt" not in jobs[f"{second}:0"]
