"""Least privilege: each job role may do exactly what its job needs, and no more.

A job's role is the one its job definition runs with (followed with a ``Capture``), its grants
those of the policies attached to that role, and the resources they name are known by the
environment variables that name them to the jobs: no logical ID is read for what it says."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match

from helpers.synth import Synthesized, captured_id, resource_given_to_jobs
from pipeline.spec import DEFAULT_SPEC, RESOURCES

# The pipeline's resources (keys of RESOURCES) -> the readable names EXPECTED uses.
_READABLE = {
    "input_bucket": "BucketA",
    "cpu_results_bucket": "BucketB",
    "memory_results_bucket": "BucketC",
    "output_bucket": "Output",
    "metadata_table": "Table",
    "notification_topic": "Topic",
}


def _readable_names(stack: Synthesized) -> dict[str, str]:
    """Logical ID -> readable name: each resource the jobs are given, by the variable that
    names it to them, and the key the notification topic is encrypted with."""
    names = {resource_given_to_jobs(stack.assertions, r.env): _READABLE[r.key] for r in RESOURCES}
    topic = next(logical_id for logical_id, name in names.items() if name == "Topic")
    key = Capture()
    stack.resource(topic).has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}}
    )
    names[captured_id(key)] = "Key"
    return names


def _name(value: Any, names: Mapping[str, str]) -> str:
    """A policy resource as e.g. ``BucketB/runs/*`` or ``Table``."""
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(_name(p, names) for p in value["Fn::Join"][1])
    if isinstance(value, dict):
        logical_id = value.get("Ref") or value["Fn::GetAtt"][0]
        assert logical_id in names, f"a grant on {logical_id}, which is no pipeline resource"
        return names[logical_id]
    return str(value)


def _job_role(stack: Synthesized, job_key: str) -> str:
    """The logical ID of the role the job's definition (known by its name) runs with."""
    role = Capture()
    stack.assertions.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": DEFAULT_SPEC.job(job_key).definition_name,
            "ContainerProperties": {"JobRoleArn": {"Fn::GetAtt": [role, "Arn"]}},
        },
    )
    return captured_id(role)


def _permissions(
    stack: Synthesized, job_key: str, names: Mapping[str, str] | None = None
) -> set[tuple[str, str, str]]:
    """(action, resource, condition) triples the policies attached to the job's role grant,
    resources named by ``names`` (``_readable_names`` of the stack when not given). They are
    compared grant by grant, not statement by statement: CDK merges statements that share
    resources or actions as it sees fit."""
    names = names or _readable_names(stack)
    role = _job_role(stack, job_key)
    policies = stack.assertions.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": role}])}}
    )
    assert policies, f"no policy is attached to {job_key}'s role"
    triples: set[tuple[str, str, str]] = set()
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"]
            resources = statement["Resource"]
            for action in [actions] if isinstance(actions, str) else actions:
                for resource in resources if isinstance(resources, list) else [resources]:
                    condition = json.dumps(
                        _named(statement.get("Condition", {}), names), sort_keys=True
                    )
                    triples.add((action, _name(resource, names), condition))
    return triples


def _named(value: Any, names: Mapping[str, str]) -> Any:
    """A condition with each reference to a pipeline resource (``{"Ref": logical ID}``) as
    the resource's readable name."""
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in names:
            return names[value["Ref"]]
        return {k: _named(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_named(v, names) for v in value]
    return value


_RUNS_ONLY = json.dumps({"StringLike": {"s3:prefix": ["runs/*"]}})


def _via(service: str, **context: str) -> str:
    """A condition: the key used through ``service`` (kms:ViaService) in this region, with
    these encryption context values."""
    region = {"Fn::Join": ["", [f"{service}.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}
    keys = {f"kms:EncryptionContext:{k.replace('__', ':')}": v for k, v in context.items()}
    return json.dumps({"StringEquals": {"kms:ViaService": region, **keys}}, sort_keys=True)


# DynamoDB's documented encryption context names the table; DescribeKey carries none.
_TABLE_KEY = {
    *(
        (action, "Key", _via("dynamodb", aws__dynamodb__tableName="Table"))
        for action in ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")
    ),
    ("kms:DescribeKey", "Key", _via("dynamodb")),
}
# A publisher's use of the topic's key, through SNS only.
_TOPIC_KEY = {(action, "Key", _via("sns")) for action in ("kms:Decrypt", "kms:GenerateDataKey")}

EXPECTED: dict[str, set[tuple[str, str, str]]] = {
    "JobA": {
        ("s3:ListBucket", "BucketA", "{}"),
        ("s3:GetObject", "BucketA/*", "{}"),
        ("s3:PutObject", "BucketB/runs/*", "{}"),
        ("s3:PutObject", "Output/runs/*", "{}"),
    },
    "JobB": {
        ("s3:GetObject", "BucketA/*", "{}"),
        ("s3:GetObject", "BucketB/runs/*", "{}"),
        ("s3:PutObject", "BucketB/runs/*", "{}"),
        ("s3:AbortMultipartUpload", "BucketB/runs/*", "{}"),
        ("s3:DeleteObject", "BucketB/runs/*", "{}"),  # a result rejected again by a retry
        ("s3:GetObject", "BucketC/runs/*", "{}"),  # the JobC record a retry re-runs from
    },
    "JobC": {
        ("s3:ListBucket", "BucketB", _RUNS_ONLY),
        ("s3:GetObject", "BucketB/runs/*", "{}"),
        ("s3:PutObject", "BucketC/runs/*", "{}"),
        ("s3:AbortMultipartUpload", "BucketC/runs/*", "{}"),
        ("dynamodb:BatchWriteItem", "Table", "{}"),
        ("dynamodb:PutItem", "Table", "{}"),
        *_TABLE_KEY,
    },
    "JobD": {
        ("s3:ListBucket", "BucketA", "{}"),
        ("s3:GetObject", "BucketA/*", "{}"),
        ("s3:ListBucket", "BucketB", _RUNS_ONLY),
        ("s3:ListBucket", "BucketC", _RUNS_ONLY),
        ("s3:ListBucket", "Output", _RUNS_ONLY),
        ("s3:GetObject", "BucketB/runs/*", "{}"),
        ("s3:PutObject", "BucketB/runs/*", "{}"),  # the shard view its checks share
        ("s3:GetObject", "BucketC/runs/*", "{}"),
        ("s3:GetObject", "Output/runs/*", "{}"),
        ("s3:PutObject", "Output/runs/*", "{}"),
        ("dynamodb:GetItem", "Table", "{}"),
        ("dynamodb:BatchGetItem", "Table", "{}"),
        ("dynamodb:Query", "Table", "{}"),
        *_TABLE_KEY,
    },
    "JobE": {
        ("s3:ListBucket", "BucketB", _RUNS_ONLY),
        ("s3:GetObject", "BucketB/runs/*", "{}"),  # JobD's shard view: the stages' records
        ("s3:DeleteObject", "BucketB/runs/*", "{}"),
        ("s3:ListBucket", "BucketC", _RUNS_ONLY),
        ("s3:GetObject", "BucketC/runs/*", "{}"),
        ("dynamodb:Query", "Table", "{}"),  # the run's items, for the aggregate step
        *_TABLE_KEY,
        ("s3:ListBucket", "Output", _RUNS_ONLY),
        ("s3:GetObject", "Output/runs/*", "{}"),
        ("s3:PutObject", "Output/runs/*", "{}"),
        ("sns:Publish", "Topic", "{}"),
        *_TOPIC_KEY,
    },
}


# With plain_requests=True every job may follow a plain request's dependsOn chain to its run:
# DescribeJobs has no resource-level permissions, so it is granted on "*".
_FIND_PLAIN_RUNS = ("batch:DescribeJobs", "*", "{}")


@pytest.mark.parametrize("job_key", sorted(EXPECTED))
def test_job_role_grants_exactly_what_the_job_needs(
    default_stack: Synthesized, job_key: str
) -> None:
    # GIVEN the stack with its default props (plain_requests off)
    # WHEN the grants of the job's role are read
    granted = _permissions(default_stack, job_key)
    # THEN they are exactly what the job does: no batch:DescribeJobs on every job
    assert granted == EXPECTED[job_key]


def test_each_job_definition_has_its_own_role(default_stack: Synthesized) -> None:
    # GIVEN the role each job definition runs with
    roles = {job.key: _job_role(default_stack, job.key) for job in DEFAULT_SPEC}
    # THEN no two share one, and each is described as its job's role
    assert len(set(roles.values())) == len(DEFAULT_SPEC.jobs)
    for job in DEFAULT_SPEC:
        default_stack.resource(roles[job.key]).has_resource_properties(
            "AWS::IAM::Role",
            {
                "Description": Match.string_like_regexp(
                    f"^Job role of {re.escape(job.definition_name)}:"
                )
            },
        )


# Confused-deputy protection: only ECS tasks of this account and region.
_ECS_TASKS_OF_THIS_ACCOUNT = {
    "Action": "sts:AssumeRole",
    "Effect": "Allow",
    "Principal": Match.exact({"Service": "ecs-tasks.amazonaws.com"}),
    "Condition": Match.exact(
        {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            "ArnLike": {
                "aws:SourceArn": {
                    "Fn::Join": [
                        "",
                        [
                            "arn:",
                            {"Ref": "AWS::Partition"},
                            ":ecs:",
                            {"Ref": "AWS::Region"},
                            ":",
                            {"Ref": "AWS::AccountId"},
                            ":*",
                        ],
                    ]
                }
            },
        }
    ),
}


def test_job_roles_trust_only_ecs_tasks(default_stack: Synthesized) -> None:
    for job in DEFAULT_SPEC:
        # GIVEN the role the job's definition runs with
        role = _job_role(default_stack, job.key)
        # THEN only this account's ECS tasks may assume it, and it has no managed policy
        default_stack.resource(role).has_resource_properties(
            "AWS::IAM::Role",
            {
                "AssumeRolePolicyDocument": {"Statement": [_ECS_TASKS_OF_THIS_ACCOUNT]},
                "ManagedPolicyArns": Match.absent(),
            },
        )


def test_no_job_role_can_write_the_input_bucket(default_stack: Synthesized) -> None:
    names = _readable_names(default_stack)
    on_bucket_a = {
        job_key: {
            (action, resource)
            for action, resource, _ in _permissions(default_stack, job_key, names)
            if resource.startswith("BucketA")
        }
        for job_key in EXPECTED
    }
    # the jobs that read the inputs are seen reading them ...
    for job_key in ("JobA", "JobB", "JobD"):
        assert ("s3:GetObject", "BucketA/*") in on_bucket_a[job_key], job_key
    # ... and no job may do more than read them
    for job_key, granted in on_bucket_a.items():
        writes = {(a, r) for a, r in granted if a not in ("s3:GetObject", "s3:ListBucket")}
        assert writes == set(), job_key


@pytest.mark.slow  # a synthesis of its own
def test_plain_requests_give_every_job_describe_jobs_and_nothing_else(tmp_path: Any) -> None:
    import aws_cdk as cdk

    from helpers.synth import new_app, synthesize
    from pipeline import ArrayJobPipeline

    # GIVEN a pipeline that lets the User Guide's requests as written find their run
    app = new_app(tmp_path)
    stack = cdk.Stack(app, "Plain")
    ArrayJobPipeline(stack, "Pipeline", array_size=10, plain_requests=True)
    plain = synthesize(app, stack)
    names = _readable_names(plain)
    # THEN each job role gets batch:DescribeJobs on every job, on top of its own grants
    for key in EXPECTED:
        assert _permissions(plain, key, names) == EXPECTED[key] | {_FIND_PLAIN_RUNS}


def test_another_action_on_every_resource_of_a_job_role_fails_synthesis(tmp_path: Any) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam

    from helpers.synth import new_app
    from pipeline import ArrayJobPipeline

    # GIVEN a pipeline whose job roles carry the acknowledged DescribeJobs on every job
    app = new_app(tmp_path)
    stack = cdk.Stack(app, "Widened")
    pipeline = ArrayJobPipeline(stack, "Pipeline", array_size=10, plain_requests=True)
    # WHEN another action on every resource is added to one of them
    pipeline.jobs.roles["JobB"].add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=["*"])
    )
    with pytest.raises(Exception, match=r"grants s3:GetObject on every resource; its cdk-nag"):
        app.synth()


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), (None, None)])
def test_the_apps_context_turns_plain_requests_on_by_name_only(
    value: str | None, expected: bool | None
) -> None:
    from pipeline.stacks.context import pipeline_props_from_context

    # GIVEN the repository app's context, with or without pipeline:plainRequests
    context = {} if value is None else {"pipeline:plainRequests": value}
    # WHEN the props are read from it
    props = pipeline_props_from_context(context.get)
    # THEN plain requests are on only when the key says so (the construct's default is off)
    assert props.get("plain_requests") == expected
