"""The engine's API as clients meet it: AWS Batch's answers to malformed requests (400
``ClientException`` with a message, never a 500), its validation of SubmitJob,
CreateComputeEnvironment and CreateJobQueue, deleting queues and environments with AWS's
preconditions, and the fields and variables AWS documents."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.batch import QUEUE, EngineBatch, engine_batch
from pipeline.local.batch.in_process import call_app
from pipeline.local.batch.responses import BatchService


@pytest.fixture
def aws() -> Iterator[EngineBatch]:
    with engine_batch() as harness:
        yield harness


def _raw(aws: EngineBatch, path: str, body: bytes) -> tuple[int, dict[str, str], Any]:
    """A request as any client may send it, malformed or not: no client-side checks."""
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "CONTENT_TYPE": "application/json"}
    status, headers, answer = call_app(BatchService(aws.engine), environ, body)
    return status, headers, json.loads(answer)


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/v1/listjobs", b'{"jobQueue": "ProdQueue", "nextToken": "not-a-token"}', "nextToken"),
        ("/v1/listjobs", b'{"jobQueue": "ProdQueue", "maxResults": "ten"}', "maxResults"),
        ("/v1/describejobs", b'{"jobs": "one-id"}', "jobs"),
        ("/v1/describejobs", b"[1, 2]", "must be a JSON object"),
        ("/v1/describejobs", b"{not json", "not JSON"),
        (
            "/v1/submitjob",
            b'{"jobName": "a", "jobQueue": "ProdQueue", "jobDefinition": "JobA-list-and-validate",'
            b' "arrayProperties": {"size": "3"}}',
            "arrayProperties.size",
        ),
        ("/v1/submitjob", b'{"jobName": "a"}', "jobQueue"),
    ],
)
def test_a_malformed_request_is_a_400_client_exception_naming_what_is_wrong(
    aws: EngineBatch, path: str, body: bytes, says: str
) -> None:
    status, headers, answer = _raw(aws, path, body)
    assert status == 400
    assert headers["x-amzn-ErrorType"] == answer["__type"] == "ClientException"
    assert says in answer["message"]


def _refused(call: Any, **request: Any) -> str:
    with pytest.raises(ClientError) as error:
        call(**request)
    assert error.value.response["Error"]["Code"] == "ClientException"
    return str(error.value.response["Error"]["Message"])


def _submit(aws: EngineBatch, **request: Any) -> str:
    base = {"jobName": "a", "jobQueue": QUEUE, "jobDefinition": "JobA-list-and-validate"}
    return _refused(aws.batch.submit_job, **{**base, **request})


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        ({"timeout": {"attemptDurationSeconds": 5}}, "at least 60 seconds"),
        ({"retryStrategy": {"attempts": 50}}, "between 1 and 10"),
        ({"retryStrategy": {"attempts": 2, "evaluateOnExit": [{"action": "RETRY"}] * 6}}, "5"),
        ({"tags": {"aws:owner": "me"}}, "aws: prefix is reserved"),
        ({"tags": {f"k{i}": "v" for i in range(51)}}, "at most 50 tags"),
        (
            {"containerOverrides": {"environment": [{"name": "AWS_BATCH_JOB_ID", "value": "x"}]}},
            "reserved",
        ),
        ({"arrayProperties": {"size": 1}}, "between 2 and 10000"),
        ({"dependsOn": [{"type": "N_TO_N"}]}, "names the jobId"),
        ({"jobName": "-starts-badly"}, "letters, numbers"),
    ],
)
def test_submit_job_refuses_what_aws_batch_refuses(
    aws: EngineBatch, request_: dict[str, Any], says: str
) -> None:
    assert says in _submit(aws, **request_)


def _environment(name: str, kind: str = "EC2", **resources: Any) -> dict[str, Any]:
    """A MANAGED environment as AWS Batch takes it: EC2 and SPOT ones name their instance
    role, Fargate ones take none."""
    role = {} if kind.startswith("FARGATE") else {"instanceRole": "ecsInstanceRole"}
    return {
        "computeEnvironmentName": name,
        "type": "MANAGED",
        "computeResources": {
            "type": kind,
            "maxvCpus": 16,
            "subnets": ["subnet-1"],
            "securityGroupIds": ["sg-1"],
            **role,
            **resources,
        },
    }


def test_compute_environments_are_refused_as_aws_batch_refuses_them(aws: EngineBatch) -> None:
    create = aws.batch.create_compute_environment
    assert "needs computeResources" in _refused(
        create, computeEnvironmentName="bare", type="MANAGED"
    )
    assert "minvCpus (32) must not be above maxvCpus (16)" in _refused(
        create, **_environment("upside-down", minvCpus=32)
    )


def test_a_queue_orders_at_most_three_environments_of_one_kind(aws: EngineBatch) -> None:
    for name, kind in [
        ("e1", "EC2"),
        ("e2", "SPOT"),
        ("e3", "EC2"),
        ("e4", "EC2"),
        ("f", "FARGATE"),
    ]:
        aws.batch.create_compute_environment(**_environment(name, kind))
    create = aws.batch.create_job_queue

    def order(*names: str) -> list[dict[str, Any]]:
        return [{"order": i, "computeEnvironment": n} for i, n in enumerate(names, start=1)]

    assert "1 to 3" in _refused(
        create,
        jobQueueName="four",
        priority=1,
        computeEnvironmentOrder=order("e1", "e2", "e3", "e4"),
    )
    assert "mixes EC2 and Fargate" in _refused(
        create, jobQueueName="mixed", priority=1, computeEnvironmentOrder=order("e1", "f")
    )
    assert create(jobQueueName="three", priority=1, computeEnvironmentOrder=order("e1", "e2", "e3"))


def test_queues_and_environments_are_deleted_once_disabled_and_unused(aws: EngineBatch) -> None:
    # GIVEN a queue on one environment, with a job waiting in it
    aws.hold_new_jobs()
    aws.batch.create_compute_environment(**_environment("scratch"))
    aws.batch.create_job_queue(
        jobQueueName="scratch-queue",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "scratch"}],
    )
    waiting = aws.batch.submit_job(
        jobName="w", jobQueue="scratch-queue", jobDefinition="JobA-list-and-validate"
    )["jobId"]
    # THEN neither goes while enabled, nor the environment while a queue uses it
    assert "must be DISABLED" in _refused(aws.batch.delete_job_queue, jobQueue="scratch-queue")
    aws.batch.update_compute_environment(computeEnvironment="scratch", state="DISABLED")
    assert "still used by job queue scratch-queue" in _refused(
        aws.batch.delete_compute_environment, computeEnvironment="scratch"
    )
    # WHEN the queue is disabled and deleted, THEN its job ended, and the environment can go
    aws.batch.update_job_queue(jobQueue="scratch-queue", state="DISABLED")
    aws.batch.delete_job_queue(jobQueue="scratch-queue")
    aws.batch.delete_compute_environment(computeEnvironment="scratch")
    assert aws.describe(waiting)["status"] == "FAILED"
    names = [q["jobQueueName"] for q in aws.batch.describe_job_queues()["jobQueues"]]
    assert names == [QUEUE]
    environments = aws.batch.describe_compute_environments()["computeEnvironments"]
    assert "scratch" not in [e["computeEnvironmentName"] for e in environments]


def test_a_job_is_described_with_its_definitions_fields_and_its_retry_rules(
    aws: EngineBatch,
) -> None:
    job = aws.batch.submit_job(
        jobName="described",
        jobQueue=QUEUE,
        jobDefinition="JobA-list-and-validate",
        retryStrategy={"attempts": 2, "evaluateOnExit": [{"action": "EXIT", "onExitCode": "1"}]},
    )
    described = aws.describe(job["jobId"])
    assert described["retryStrategy"] == {
        "attempts": 2,
        "evaluateOnExit": [{"action": "EXIT", "onExitCode": "1"}],
    }
    container = described["container"]
    assert container["user"] == "10001"
    assert container["jobRoleArn"].endswith("JobARole")
    assert container["readonlyRootFilesystem"] is True
    assert container["volumes"] == []
    environment = aws.batch.describe_compute_environments()["computeEnvironments"][0]
    assert environment["ecsClusterArn"].startswith("arn:aws:ecs:us-east-1:")


def test_cancel_and_terminate_of_an_unknown_job_succeed_as_on_aws(aws: EngineBatch) -> None:
    # WHEN a job ID the endpoint never held is cancelled and terminated
    cancelled = aws.batch.cancel_job(jobId="no-such-job", reason="cleanup")
    terminated = aws.batch.terminate_job(jobId="no-such-job", reason="cleanup")
    # THEN both answer 200 with an empty body, as AWS Batch answers (aws/aws-cli#2551)
    for answer in (cancelled, terminated):
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert {k: v for k, v in answer.items() if k != "ResponseMetadata"} == {}
    # AND a request that names no job at all is still refused
    for path in ("/v1/canceljob", "/v1/terminatejob"):
        status, _, answer = _raw(aws, path, b'{"jobId": "", "reason": "cleanup"}')
        assert (status, answer["__type"]) == (400, "ClientException")
        assert "jobId is required" in answer["message"]


def test_a_managed_ec2_environment_needs_its_instance_role(aws: EngineBatch) -> None:
    create = aws.batch.create_compute_environment
    # WHEN an EC2 or SPOT environment names no instance role THEN it is refused, saying so
    for kind in ("EC2", "SPOT"):
        request = _environment(f"no-role-{kind}", kind)
        del request["computeResources"]["instanceRole"]
        assert "computeResources.instanceRole is required" in _refused(create, **request)
    # AND a Fargate environment, which takes none, is created without one
    assert create(**_environment("fargate", "FARGATE"))["computeEnvironmentName"] == "fargate"


def _described_environment(aws: EngineBatch, name: str) -> dict[str, Any]:
    (found,) = aws.batch.describe_compute_environments(computeEnvironments=[name])[
        "computeEnvironments"
    ]
    return dict(found)


ROLE = "arn:aws:iam::123456789012:role/"


def test_update_compute_environment_applies_every_updatable_member(aws: EngineBatch) -> None:
    # GIVEN an unmanaged environment with a regular service role, and a managed one without
    aws.batch.create_compute_environment(
        computeEnvironmentName="own", type="UNMANAGED", serviceRole=f"{ROLE}r1"
    )
    aws.batch.create_compute_environment(
        **_environment("managed", allocationStrategy="BEST_FIT_PROGRESSIVE", minvCpus=0)
    )
    # WHEN each is updated with what UpdateComputeEnvironment documents as updatable
    aws.batch.update_compute_environment(
        computeEnvironment="own", serviceRole=f"{ROLE}r2", unmanagedvCpus=4, state="DISABLED"
    )
    aws.batch.update_compute_environment(
        computeEnvironment="managed",
        computeResources={"minvCpus": 2, "maxvCpus": 32, "desiredvCpus": 4, "subnets": ["s-2"]},
        updatePolicy={"terminateJobsOnUpdate": True},
    )
    # THEN each describes what it was given
    own = _described_environment(aws, "own")
    assert (own["serviceRole"], own["unmanagedvCpus"], own["state"]) == (
        f"{ROLE}r2",
        4,
        "DISABLED",
    )
    managed = _described_environment(aws, "managed")
    resources = managed["computeResources"]
    assert (resources["minvCpus"], resources["maxvCpus"], resources["desiredvCpus"]) == (2, 32, 4)
    assert resources["subnets"] == ["s-2"]
    assert resources["instanceRole"] == "ecsInstanceRole"
    assert managed["updatePolicy"] == {"terminateJobsOnUpdate": True}
    # AND the managed one, created without a role, uses Batch's service-linked role
    assert managed["serviceRole"] == (
        f"{ROLE}aws-service-role/batch.amazonaws.com/AWSServiceRoleForBatch"
    )


@pytest.mark.parametrize(
    ("name", "update", "says"),
    [
        ("managed", {"unmanagedvCpus": 4}, "unmanagedvCpus is for UNMANAGED"),
        ("own", {"computeResources": {"maxvCpus": 4}}, "UNMANAGED compute environment has no"),
        ("own", {"serviceRole": "", "state": "DISABLED"}, "cannot change between"),
        ("managed", {"serviceRole": f"{ROLE}regular"}, "cannot change between"),
        ("managed", {"computeResources": {"instanceTypes": ["c5"]}}, "infrastructure update"),
        ("fargate", {"computeResources": {"instanceTypes": ["c5"]}}, "on a Fargate compute"),
        ("managed", {"computeResources": {"minvCpus": 64}}, "must not be above maxvCpus"),
        (
            "own",
            {"eksConfiguration": {"accessEntry": {"desiredState": "ENABLED"}}},
            "eksConfiguration is for EKS",
        ),
    ],
)
def test_update_compute_environment_refuses_what_aws_batch_refuses(
    aws: EngineBatch, name: str, update: dict[str, Any], says: str
) -> None:
    # GIVEN an unmanaged environment with a regular role, a managed EC2 one on BEST_FIT (the
    # default strategy) with the service-linked role, and a Fargate one
    aws.batch.create_compute_environment(
        computeEnvironmentName="own", type="UNMANAGED", serviceRole=f"{ROLE}r1"
    )
    aws.batch.create_compute_environment(**_environment("managed"))
    aws.batch.create_compute_environment(**_environment("fargate", "FARGATE"))
    before = _described_environment(aws, name)
    # WHEN an update AWS Batch refuses is sent THEN it is refused, saying why, and nothing of
    # it was applied
    assert says in _refused(aws.batch.update_compute_environment, computeEnvironment=name, **update)
    assert _described_environment(aws, name) == before


def test_describe_job_definitions_takes_revisions_not_bare_names(aws: EngineBatch) -> None:
    # GIVEN a definition with two revisions
    for _ in range(2):
        aws.batch.register_job_definition(
            jobDefinitionName="twice", type="container", containerProperties={"image": "i"}
        )
    arn = aws.batch.describe_job_definitions(jobDefinitions=["twice:1"])["jobDefinitions"][0][
        "jobDefinitionArn"
    ]

    def revisions(**request: Any) -> list[int]:
        found = aws.batch.describe_job_definitions(**request)["jobDefinitions"]
        return [int(d["revision"]) for d in found]

    # THEN jobDefinitions takes name:revision and ARNs, and a bare name finds nothing there
    # (boto3#2908), while jobDefinitionName lists every revision
    assert revisions(jobDefinitions=["twice:2"]) == [2]
    assert revisions(jobDefinitions=[arn]) == [1]
    assert revisions(jobDefinitions=["twice"]) == []
    assert revisions(jobDefinitionName="twice") == [1, 2]


def test_a_queue_keeps_its_compute_environment_orders_as_given(aws: EngineBatch) -> None:
    # GIVEN two environments ordered 123 and 7
    for name in ("later", "sooner"):
        aws.batch.create_compute_environment(**_environment(name))
    aws.batch.create_job_queue(
        jobQueueName="ordered",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 123, "computeEnvironment": "later"},
            {"order": 7, "computeEnvironment": "sooner"},
        ],
    )

    def order() -> list[tuple[int, str]]:
        (queue,) = aws.batch.describe_job_queues(jobQueues=["ordered"])["jobQueues"]
        return [
            (o["order"], o["computeEnvironment"].rsplit("/", 1)[-1])
            for o in queue["computeEnvironmentOrder"]
        ]

    # THEN the queue describes them with those orders, lowest first
    assert order() == [(7, "sooner"), (123, "later")]
    # WHEN the order is updated THEN the new orders are kept as given too
    aws.batch.update_job_queue(
        jobQueue="ordered", computeEnvironmentOrder=[{"order": 50, "computeEnvironment": "later"}]
    )
    assert order() == [(50, "later")]
