"""Buckets brought with their own KMS keys: each job role, and a grantee of the output, may use
a bucket's key only through S3 and only for that bucket's objects (its documented encryption
context), to decrypt what it reads and generate data keys where it writes."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match

from helpers.synth import Synthesized, logical_id_of, new_app, synthesize
from pipeline.spec import DEFAULT_SPEC

pytestmark = pytest.mark.slow  # one synthesis of a consumer app, with cdk-nag registered

KEYS = {
    "inputs": "arn:aws:kms:us-east-1:111122223333:key/1111aaaa-0000-0000-0000-000000000000",
    "outputs": "arn:aws:kms:us-east-1:111122223333:key/2222bbbb-0000-0000-0000-000000000000",
}
_ANALYST = {"Description": "analysts: read the output"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """A consumer's pipeline on an input and an output bucket of its own, each under its own
    key, whose output an analyst role may read (synthesized under AwsSolutions and NIST)."""
    import aws_cdk as cdk
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_kms as kms
    from aws_cdk import aws_s3 as s3

    from pipeline import ArrayJobPipeline

    app = new_app(tmp_path_factory.mktemp("keyed"), nist=True)
    stack = cdk.Stack(app, "Keyed")
    buckets = {
        name: s3.Bucket.from_bucket_attributes(
            stack,
            name,
            bucket_name=f"team-{name}",
            encryption_key=kms.Key.from_key_arn(stack, f"{name}Key", KEYS[name]),
        )
        for name in KEYS
    }
    pipeline = ArrayJobPipeline(
        stack,
        "Pipeline",
        array_size=10,
        existing_input_bucket=buckets["inputs"],
        existing_output_bucket=buckets["outputs"],
    )
    analyst = iam.Role(
        stack, "Analyst", assumed_by=iam.AccountRootPrincipal(), description=_ANALYST["Description"]
    )
    pipeline.grant_read_output(analyst)
    return synthesize(app, stack)


def _role_of(keyed: Synthesized, job_key: str) -> str:
    from aws_cdk.assertions import Capture

    from helpers.synth import captured_id

    role = Capture()
    keyed.assertions.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": DEFAULT_SPEC.job(job_key).definition_name,
            "ContainerProperties": {"JobRoleArn": {"Fn::GetAtt": [role, "Arn"]}},
        },
    )
    return captured_id(role)


def _key_uses(keyed: Synthesized, role: str) -> dict[str, list[dict[str, Any]]]:
    """Bucket name -> the statements attached to ``role`` that use that bucket's key."""
    policies = keyed.assertions.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": role}])}}
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for name, arn in KEYS.items():
                if statement["Resource"] == arn:
                    found.setdefault(name, []).append(statement)
    return found


def _through_s3_for(bucket: str) -> dict[str, Any]:
    def arn(suffix: str) -> dict[str, Any]:
        return {
            "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::team-{bucket}{suffix}"]]
        }

    return {
        "StringLike": {"kms:ViaService": "s3.*.amazonaws.com"},
        "ArnLike": {"kms:EncryptionContext:aws:s3:arn": [arn(""), arn("/*")]},
    }


def test_a_job_uses_a_brought_buckets_key_through_s3_for_that_bucket_only(
    keyed: Synthesized,
) -> None:
    # GIVEN JobA, which lists and reads BucketA and writes its rejects to the output bucket
    uses = _key_uses(keyed, _role_of(keyed, "JobA"))
    # THEN it may decrypt BucketA's objects, and encrypt and decrypt the output's, each
    # through S3 and for that bucket's objects only
    assert uses == {
        "inputs": [
            {
                "Action": "kms:Decrypt",
                "Effect": "Allow",
                "Resource": KEYS["inputs"],
                "Condition": _through_s3_for("inputs"),
            }
        ],
        "outputs": [
            {
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Effect": "Allow",
                "Resource": KEYS["outputs"],
                "Condition": _through_s3_for("outputs"),
            }
        ],
    }


def test_a_job_gets_no_key_of_a_bucket_it_does_not_touch(keyed: Synthesized) -> None:
    # GIVEN JobB, which reads BucketA and writes to BucketB only
    uses = _key_uses(keyed, _role_of(keyed, "JobB"))
    # THEN it has BucketA's key to decrypt, and not the output bucket's
    assert set(uses) == {"inputs"}
    assert [s["Action"] for s in uses["inputs"]] == ["kms:Decrypt"]


def test_grant_read_output_decrypts_the_output_through_s3_only(keyed: Synthesized) -> None:
    # GIVEN the analyst granted grant_read_output
    analyst = logical_id_of(keyed.assertions, "AWS::IAM::Role", _ANALYST)
    uses = _key_uses(keyed, analyst)
    # THEN it may decrypt the output bucket's objects through S3, and use no other key
    assert uses == {
        "outputs": [
            {
                "Action": "kms:Decrypt",
                "Effect": "Allow",
                "Resource": KEYS["outputs"],
                "Condition": _through_s3_for("outputs"),
            }
        ]
    }
