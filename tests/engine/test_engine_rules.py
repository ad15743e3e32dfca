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

from helpers.batch import QUEUE, EngineBatch, engine_batch

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


# --- one fast test per rule, each failing when the rule is broken --------------------------------


def _statuses(aws: EngineBatch, *job_ids: str) -> list[str]:
    jobs = _described(aws, *job_ids)
    return [jobs[job_id]["status"] for job_id in job_ids]


def test_n_to_n_pairs_child_i_with_child_i_only(aws: EngineBatch) -> None:
    # GIVEN two three-child arrays, the second N_TO_N on the first, placed by the test
    aws.hold_new_jobs()
    first = _submit(aws, "JobB", arrayProperties={"size": 3})
    paired = _submit(
        aws, "JobC", arrayProperties={"size": 3}, dependsOn=[{"jobId": first, "type": "N_TO_N"}]
    )
    # WHEN only the first array's last child succeeds
    aws.succeed(f"{first}:2")
    # THEN exactly its partner may run; the others still wait for theirs
    assert _statuses(aws, f"{paired}:0", f"{paired}:1", f"{paired}:2") == [
        "PENDING",
        "PENDING",
        "RUNNABLE",
    ]


def test_sequential_children_run_one_after_another(aws: EngineBatch) -> None:
    # GIVEN a three-child SEQUENTIAL array
    aws.hold_new_jobs()
    steps = _submit(aws, "JobD", arrayProperties={"size": 3}, dependsOn=[{"type": "SEQUENTIAL"}])
    # THEN only the first child may run
    assert _statuses(aws, f"{steps}:0", f"{steps}:1", f"{steps}:2") == [
        "RUNNABLE",
        "PENDING",
        "PENDING",
    ]
    # WHEN it succeeds, THEN the next may run, and only the next
    aws.succeed(f"{steps}:0")
    assert _statuses(aws, f"{steps}:1", f"{steps}:2") == ["RUNNABLE", "PENDING"]
    # WHEN that one fails, THEN the last fails on it without running
    aws.fail(f"{steps}:1", REASON, 1)
    last = _described(aws, f"{steps}:2")[f"{steps}:2"]
    assert (last["status"], last["statusReason"]) == ("FAILED", "Dependent Job failed")
    assert "startedAt" not in last


def test_a_failed_dependency_fails_its_dependents_at_once(aws: EngineBatch) -> None:
    # GIVEN a standard job and a two-child array waiting for it
    aws.hold_new_jobs()
    first = _submit(aws, "JobA")
    after = _submit(aws, "JobB", arrayProperties={"size": 2}, dependsOn=[{"jobId": first}])
    # WHEN the first job fails
    aws.fail(first, REASON, 2)
    # THEN the array and each child have failed already, naming the dependency, none started
    jobs = _described(aws, after, f"{after}:0", f"{after}:1")
    assert [(j["status"], j["statusReason"]) for j in jobs.values()] == [
        ("FAILED", "Dependent Job failed")
    ] * 3
    assert not any("startedAt" in j for j in jobs.values())


def test_list_jobs_pages_hold_max_results_each_and_every_job_once(aws: EngineBatch) -> None:
    # GIVEN seven queued jobs
    aws.hold_new_jobs()
    ids = {_submit(aws, "JobA") for _ in range(7)}
    # WHEN they are listed three at a time
    pages: list[list[str]] = []
    token: dict[str, str] = {}
    while True:
        page = aws.batch.list_jobs(jobQueue=QUEUE, jobStatus="RUNNABLE", maxResults=3, **token)
        pages.append([s["jobId"] for s in page["jobSummaryList"]])
        if "nextToken" not in page:
            break
        token = {"nextToken": page["nextToken"]}
    # THEN the pages hold 3, 3 and 1 jobs, and every job is on exactly one of them
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(j for p in pages for j in p) == sorted(ids)


def test_a_failed_attempt_is_retried_as_the_retry_strategy_says(aws: EngineBatch) -> None:
    # GIVEN a job of three attempts whose rules retry exit code 75 and nothing else
    definition = aws.reader.register_job_definition(
        jobDefinitionName="retried",
        type="container",
        containerProperties={"image": "i", "command": ["true"], "vcpus": 1, "memory": 128},
        retryStrategy={
            "attempts": 3,
            "evaluateOnExit": [
                {"action": "RETRY", "onExitCode": "75"},
                {"action": "EXIT", "onExitCode": "*"},
            ],
        },
    )["jobDefinitionArn"]
    aws.hold_new_jobs()
    transient = aws.batch.submit_job(jobName="t", jobQueue=QUEUE, jobDefinition=definition)
    final = aws.batch.submit_job(jobName="f", jobQueue=QUEUE, jobDefinition=definition)
    # WHEN each fails once, one with the retried code and one with another
    aws.fail(transient["jobId"], REASON, 75)
    aws.fail(final["jobId"], REASON, 1)
    # THEN the first is queued again for its second attempt, the second has failed
    jobs = _described(aws, transient["jobId"], final["jobId"])
    assert (jobs[transient["jobId"]]["status"], len(jobs[transient["jobId"]]["attempts"])) == (
        "RUNNABLE",
        1,
    )
    assert (jobs[final["jobId"]]["status"], len(jobs[final["jobId"]]["attempts"])) == (
        "FAILED",
        1,
    )


def test_a_timed_out_attempt_is_never_retried(aws: EngineBatch) -> None:
    # GIVEN a job of three attempts whose first attempt runs out of time
    definition = aws.reader.register_job_definition(
        jobDefinitionName="slow",
        type="container",
        containerProperties={"image": "i", "command": ["true"], "vcpus": 1, "memory": 128},
        retryStrategy={"attempts": 3},
    )["jobDefinitionArn"]
    aws.inject("slow=timeout")
    # WHEN it is submitted
    job = aws.batch.submit_job(jobName="slow", jobQueue=QUEUE, jobDefinition=definition)
    # THEN it failed on its one attempt, as Batch never retries a timed-out attempt
    described = _described(aws, job["jobId"])[job["jobId"]]
    assert (described["status"], described["statusReason"]) == (
        "FAILED",
        "Job attempt duration exceeded timeout",
    )
    assert len(described["attempts"]) == 1


def test_describe_jobs_takes_at_most_100_ids(aws: EngineBatch) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as error:
        aws.batch.describe_jobs(jobs=[f"job-{i}" for i in range(101)])
    assert error.value.response["Error"]["Code"] == "ClientException"


def test_describe_jobs_shows_the_deprecated_vcpus_and_memory_as_given(aws: EngineBatch) -> None:
    # GIVEN a definition registered with the deprecated vcpus and memory, and one without
    old_style = aws.reader.register_job_definition(
        jobDefinitionName="old-style",
        type="container",
        containerProperties={"image": "busybox", "command": ["true"], "vcpus": 1, "memory": 128},
    )["jobDefinitionArn"]
    aws.hold_new_jobs()
    # WHEN jobs of it are submitted, one overriding vcpus the deprecated way, and a job of a
    # definition that uses resourceRequirements only
    plain = aws.batch.submit_job(jobName="p", jobQueue=QUEUE, jobDefinition=old_style)["jobId"]
    overridden = aws.batch.submit_job(
        jobName="o", jobQueue=QUEUE, jobDefinition=old_style, containerOverrides={"vcpus": 2}
    )["jobId"]
    modern = _submit(aws, "JobA")
    jobs = _described(aws, plain, overridden, modern)
    # THEN (as AWS's describe-jobs example shows them) the container reports vcpus and memory
    # as given, the override winning, beside the requirements the job runs with
    assert {k: jobs[plain]["container"][k] for k in ("vcpus", "memory")} == {
        "vcpus": 1,
        "memory": 128,
    }
    assert {k: jobs[overridden]["container"][k] for k in ("vcpus", "memory")} == {
        "vcpus": 2,
        "memory": 128,
    }
    assert jobs[overridden]["container"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "2"},
        {"type": "MEMORY", "value": "128"},
    ]
    # AND a job whose definition gave neither shows neither
    assert not {"vcpus", "memory"} & set(jobs[modern]["container"])


def test_an_attempt_names_its_container_instance_and_network_interfaces(aws: EngineBatch) -> None:
    # GIVEN a job that ran
    job = _submit(aws, "JobA")
    described = _described(aws, job)[job]
    # THEN its attempt names the ECS container instance it ran on, in the queue's compute
    # environment's cluster, and its (no) network interfaces, as AttemptContainerDetail has them
    (attempt,) = described["attempts"]
    container = attempt["container"]
    (environment,) = aws.reader.describe_compute_environments()["computeEnvironments"]
    cluster = environment["ecsClusterArn"].split(":cluster/", 1)
    assert container["containerInstanceArn"].startswith(
        f"{cluster[0]}:container-instance/{cluster[1]}/"
    )
    assert container["networkInterfaces"] == []
    # AND the job's container is its latest attempt's: the same task and instance
    assert described["container"]["taskArn"] == container["taskArn"]
    assert described["container"]["containerInstanceArn"] == container["containerInstanceArn"]
