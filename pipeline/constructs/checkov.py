"""checkov findings the pipeline does not fix, each with its reason, in one place.

Every other checkov check passes on the synthesized template. These are written into the
template as CloudFormation ``Metadata.checkov.skip`` entries on the matching resources, so
anyone who runs checkov on a stack with this pipeline sees the same skips and reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnResource, Stack
from constructs import IConstruct


@dataclass(frozen=True)
class CheckovSkip:
    check: str
    resource_type: str
    path_suffix: str
    """Matches resources whose construct path ends with this (``Storage/BucketB/Resource``)."""
    reason: str


_LOGS_BUCKET_LOOP = (
    "This is the access-log bucket of the pipeline's buckets; logging it into itself would loop."
)
_CDK_PROVIDER = (
    "CDK's own custom-resource provider for restrictDefaultSecurityGroup (runs once per "
    "deployment, no data, no network access needed): a DLQ, a VPC and reserved concurrency "
    "would add cost and failure modes to a deploy-time helper."
)

_STARTER_DLQ = (
    "The starter's asynchronous invocations are not retried (a second attempt could start a "
    "second run) and go to its on-failure destination, the pipeline's topic, which carries "
    "more than a DLQ would (the error, the event); trigger events EventBridge cannot deliver "
    "go to the notifications' dead-letter queue."
)
_STARTER_VPC = (
    "The starter calls only the Batch and SNS APIs (TLS, IAM-signed) and reads no data; in a "
    "VPC it would need interface endpoints or a NAT gateway, an idle cost of dollars a day "
    "for a function that runs a few times a day."
)
_STARTER_CONCURRENCY = (
    "Invoked only by the pipeline's schedule and ready markers. Reserving concurrency fails "
    "deployment in accounts whose concurrency quota is 10 (new accounts); overlapping starts "
    "are resolved by the starter itself (the later run stops and reports itself skipped)."
)

CHECKOV_SKIPS: tuple[CheckovSkip, ...] = (
    CheckovSkip("CKV_AWS_18", "AWS::S3::Bucket", "Storage/AccessLogs/Resource", _LOGS_BUCKET_LOOP),
    CheckovSkip(
        "CKV_AWS_21",
        "AWS::S3::Bucket",
        "Storage/AccessLogs/Resource",
        "Access logs are written once under unique keys and expire after a year; versions "
        "would add nothing but storage.",
    ),
    CheckovSkip(
        "CKV_AWS_21",
        "AWS::S3::Bucket",
        "Storage/BucketA/Resource",
        "BucketA holds the user's inputs, often large: versioning is the opt-in prop "
        "input_versioning (noncurrent versions then expire after 30 days).",
    ),
    CheckovSkip(
        "CKV_AWS_21",
        "AWS::S3::Bucket",
        "Storage/BucketB/Resource",
        "Intermediates: manifests and JobB results, rewritten identically by a retried child "
        "and expired after intermediate_expiration; JobE deletes them after a good run.",
    ),
    CheckovSkip(
        "CKV_AWS_21",
        "AWS::S3::Bucket",
        "Storage/BucketC/Resource",
        "JobC's outputs are derived: a retried child writes the same bytes under the same key, "
        "and JobD verifies them by digest (its per-shard done records, bookkeeping, also carry "
        "the child's seconds); reports and summaries (the output bucket) are versioned.",
    ),
    CheckovSkip(
        "CKV_AWS_115", "AWS::Lambda::Function", "Starter/Function/Resource", _STARTER_CONCURRENCY
    ),
    CheckovSkip("CKV_AWS_116", "AWS::Lambda::Function", "Starter/Function/Resource", _STARTER_DLQ),
    CheckovSkip("CKV_AWS_117", "AWS::Lambda::Function", "Starter/Function/Resource", _STARTER_VPC),
    CheckovSkip("CKV_AWS_115", "AWS::Lambda::Function", "/Handler", _CDK_PROVIDER),
    CheckovSkip("CKV_AWS_116", "AWS::Lambda::Function", "/Handler", _CDK_PROVIDER),
    CheckovSkip("CKV_AWS_117", "AWS::Lambda::Function", "/Handler", _CDK_PROVIDER),
)


def apply_checkov_skips(scope: IConstruct) -> None:
    """Write the skips onto the matching resources under ``scope`` and CDK's provider
    functions in its stack."""
    stack = Stack.of(scope)
    for construct in stack.node.find_all():
        if not isinstance(construct, CfnResource):
            continue
        inside = construct.node.path.startswith(scope.node.path + "/")
        provider = construct.node.path.startswith(f"{stack.node.path}/Custom::")
        if not (inside or provider):
            continue
        skips = [
            {"id": skip.check, "comment": skip.reason}
            for skip in CHECKOV_SKIPS
            if construct.cfn_resource_type == skip.resource_type
            and construct.node.path.endswith(skip.path_suffix)
            and (inside or skip.path_suffix == "/Handler")
        ]
        if skips:
            existing = construct.get_metadata("checkov") or {}
            known = {s["id"] for s in existing.get("skip", [])}
            merged = existing.get("skip", []) + [s for s in skips if s["id"] not in known]
            construct.add_metadata("checkov", {"skip": merged})
