"""Least privilege: each job role may do exactly what its job needs, and no more."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Synthesized

# Logical-ID fragments of the pipeline's resources -> readable names used below.
_NAMES = {
    "StorageBucketA": "BucketA",
    "StorageBucketB": "BucketB",
    "StorageBucketC": "BucketC",
    "StorageOutputBucket": "Output",
    "StorageMetadataTable": "Table",
    "StorageNotificationTopic": "Topic",
    "EncryptionKey": "Key",
}


def _name(value: Any) -> str:
    """A policy resource as e.g. ``BucketB/runs/*`` or ``Table``."""
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(_name(p) for p in value["Fn::Join"][1])
    if isinstance(value, dict):
        logical_id = value.get("Ref") or value["Fn::GetAtt"][0]
        return next(v for k, v in _NAMES.items() if k in logical_id)
    return str(value)


def _permissions(stack: Synthesized, role_fragment: str) -> set[tuple[str, str, str]]:
    """(action, resource, condition) triples granted to the role whose ID contains the fragment."""
    triples: set[tuple[str, str, str]] = set()
    for policy in stack.resources("AWS::IAM::Policy").values():
        roles = [r["Ref"] for r in policy["Properties"]["Roles"]]
        if not any(role_fragment in r for r in roles):
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"]
            resources = statement["Resource"]
            for action in [actions] if isinstance(actions, str) else actions:
                for resource in resources if isinstance(resources, list) else [resources]:
                    condition = json.dumps(statement.get("Condition", {}), sort_keys=True)
                    triples.add((action, _name(resource), condition))
    return triples


_RUNS_ONLY = json.dumps({"StringLike": {"s3:prefix": ["runs/*"]}})
_VIA_DYNAMODB = json.dumps(
    {
        "StringEquals": {
            "kms:ViaService": {
                "Fn::Join": ["", ["dynamodb.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]
            }
        }
    },
    sort_keys=True,
)
_TABLE_KEY = {
    (action, "Key", _VIA_DYNAMODB)
    for action in ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey")
}

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
        ("kms:Decrypt", "Key", "{}"),
        ("kms:GenerateDataKey", "Key", "{}"),
    },
}


# Every job may follow a plain request's dependsOn chain to its run (plain_requests=True):
# DescribeJobs has no resource-level permissions, so it is granted on "*".
_FIND_PLAIN_RUNS = ("batch:DescribeJobs", "*", "{}")


@pytest.mark.parametrize("job_key", sorted(EXPECTED))
def test_job_role_grants_exactly_what_the_job_needs(
    default_stack: Synthesized, job_key: str
) -> None:
    granted = _permissions(default_stack, f"Jobs{job_key}Role")
    assert granted == EXPECTED[job_key] | {_FIND_PLAIN_RUNS}


def test_each_job_definition_has_its_own_role(default_stack: Synthesized) -> None:
    roles = {
        d["Properties"]["JobDefinitionName"]: d["Properties"]["ContainerProperties"]["JobRoleArn"][
            "Fn::GetAtt"
        ][0]
        for d in default_stack.resources("AWS::Batch::JobDefinition").values()
    }
    assert len(set(roles.values())) == 5
    for name, role in roles.items():
        assert name.split("-")[0] in role


def test_job_roles_trust_only_ecs_tasks(default_stack: Synthesized) -> None:
    for logical_id, role in default_stack.resources("AWS::IAM::Role").items():
        if "Jobs" not in logical_id:
            continue
        statements = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert [s["Principal"] for s in statements] == [{"Service": "ecs-tasks.amazonaws.com"}]
        # confused-deputy protection: only ECS tasks of this account and region
        (condition,) = [s["Condition"] for s in statements]
        assert condition["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        assert "ecs:" in json.dumps(condition["ArnLike"]["aws:SourceArn"])
        assert "ManagedPolicyArns" not in role["Properties"], logical_id


def test_no_job_role_can_write_the_input_bucket(default_stack: Synthesized) -> None:
    for job_key in EXPECTED:
        writes = {
            (a, r)
            for a, r, _ in _permissions(default_stack, f"Jobs{job_key}Role")
            if r.startswith("BucketA") and a != "s3:GetObject" and a != "s3:ListBucket"
        }
        assert writes == set(), job_key


def test_without_plain_requests_no_job_may_describe_jobs(tmp_path: Any) -> None:
    import aws_cdk as cdk
    from conftest import new_app, synthesize

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path)
    stack = cdk.Stack(app, "Closed")
    ArrayJobPipeline(stack, "Pipeline", array_size=10, plain_requests=False)
    closed = synthesize(app, stack)
    for key in EXPECTED:
        assert _permissions(closed, f"Jobs{key}Role") == EXPECTED[key]


def test_another_action_on_every_resource_of_a_job_role_fails_synthesis(tmp_path: Any) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam
    from conftest import new_app

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path)
    stack = cdk.Stack(app, "Widened")
    pipeline = ArrayJobPipeline(stack, "Pipeline", array_size=10)
    pipeline.jobs.roles["JobB"].add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=["*"])
    )
    with pytest.raises(Exception, match=r"grants s3:GetObject on every resource; its cdk-nag"):
        app.synth()
