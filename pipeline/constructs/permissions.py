"""The IAM statements every submitter of this pipeline's runs needs, written once: the
command line's grantee (``ArrayJobPipeline.grant_submit_jobs``) and the starter function
(``RunStarter``) each add what only they do."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

from pipeline.spec import JOB_TAG_KEYS, PIPELINE_TAG


def run_statements(
    queue: batch.IJobQueue, queue_name: str, definition_arns: Sequence[str]
) -> list[iam.PolicyStatement]:
    """Submit, tag, stop and describe this pipeline's jobs.

    Each condition key sits only where the Service Authorization Reference ("Actions,
    resources, and condition keys for AWS Batch") lists it:

    - SubmitJob authorizes the queue, the job definition and the new job. The tag keys
      (``aws:RequestTag``, ``aws:TagKeys``) are evaluated on the ``job`` resource type only,
      so the queue and the definitions (exact revisions) are allowed in a statement without
      them, and the new job in one that requires this pipeline's tag and only this library's
      tag keys.
    - Tag-on-create needs TagResource on the new job, held to the same request tags. Batch
      has no condition key that tells tag-on-create from a later TagResource call, so the
      same statement would let a grantee put this pipeline's tag on an existing job: the
      Deny below refuses that for any job that already carries another pipeline's tag, and
      the ``aws:TagKeys`` limit keeps every other tag key (which someone else's tag-based
      policy might trust) out of reach. What stays possible is tagging a job that carries
      no pipeline tag at all, which then counts as this pipeline's for CancelJob and
      TerminateJob; see the security page of the docs.
    - CancelJob and TerminateJob reach only jobs carrying this pipeline's tag
      (``aws:ResourceTag`` on the ``job`` resource type).
    - DescribeJobs, ListJobs and the other Describe calls support no resource-level
      permissions.
    """
    jobs_arn = Stack.of(queue).format_arn(service="batch", resource="job", resource_name="*")
    pipeline_tag = f"aws:ResourceTag/{PIPELINE_TAG}"
    return [
        iam.PolicyStatement(
            actions=["batch:SubmitJob"],
            resources=[queue.job_queue_arn, *definition_arns],
        ),
        iam.PolicyStatement(
            actions=["batch:SubmitJob", "batch:TagResource"],
            resources=[jobs_arn],
            conditions={
                "StringEquals": {f"aws:RequestTag/{PIPELINE_TAG}": queue_name},
                "ForAllValues:StringEquals": {"aws:TagKeys": list(JOB_TAG_KEYS)},
            },
        ),
        iam.PolicyStatement(
            effect=iam.Effect.DENY,
            actions=["batch:TagResource"],
            resources=[jobs_arn],
            conditions={
                "StringNotEquals": {pipeline_tag: queue_name},
                "Null": {pipeline_tag: "false"},
            },
        ),
        iam.PolicyStatement(
            actions=["batch:CancelJob", "batch:TerminateJob"],
            resources=[jobs_arn],
            conditions={"StringEquals": {pipeline_tag: queue_name}},
        ),
        iam.PolicyStatement(
            actions=[
                "batch:DescribeJobs",
                "batch:ListJobs",
                "batch:DescribeJobDefinitions",
                "batch:DescribeJobQueues",
                "batch:DescribeComputeEnvironments",
            ],
            resources=["*"],
        ),
    ]


def list_input_statement(input_bucket: s3.IBucket) -> iam.PolicyStatement:
    """List BucketA's keys, to size a run to its input (:mod:`pipeline.runs.autosize`).

    ListObjectsV2 needs ``s3:ListBucket`` on the bucket and names no other permission (Amazon
    S3 API Reference, ListObjectsV2, "Permissions"): it answers each object's key, size, ETag
    and storage class, never its contents, which need ``s3:GetObject`` on the object (and,
    for a brought bucket encrypted with SSE-KMS, the key, used to read an object's data;
    no key is granted here, and listing reads no object's data). An
    ``s3:prefix`` condition can hold a listing to given prefixes (Amazon S3 User Guide,
    "Identity-based policy examples for Amazon S3"), but a run may process any prefix: a
    ready marker's, wherever it is written; ``--input-prefix``; the whole bucket on a
    schedule. So the statement names the bucket and no prefix: JobA's own listing has the
    same reach."""
    return iam.PolicyStatement(actions=["s3:ListBucket"], resources=[input_bucket.bucket_arn])
