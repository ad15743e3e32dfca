"""The IAM statements every submitter of this pipeline's runs needs, written once: the
command line's grantee (``ArrayJobPipeline.grant_submit_jobs``) and the starter function
(``RunStarter``) each add what only they do."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_iam as iam

from pipeline.spec import PIPELINE_TAG


def run_statements(
    queue: batch.IJobQueue, queue_name: str, definition_arns: Sequence[str]
) -> list[iam.PolicyStatement]:
    """Submit, tag, stop and describe this pipeline's jobs.

    SubmitJob needs the queue, the definition and the new job ("Actions, resources, and
    condition keys for AWS Batch"); tag-on-create needs TagResource on the job, with the tags
    in the request, which must carry this pipeline's tag; CancelJob and TerminateJob reach only
    jobs carrying it. DescribeJobs, ListJobs and the other Describe calls support no
    resource-level permissions.
    """
    jobs_arn = Stack.of(queue).format_arn(service="batch", resource="job", resource_name="*")
    return [
        iam.PolicyStatement(
            actions=["batch:SubmitJob", "batch:TagResource"],
            resources=[queue.job_queue_arn, *definition_arns, jobs_arn],
            conditions={"StringEquals": {f"aws:RequestTag/{PIPELINE_TAG}": queue_name}},
        ),
        iam.PolicyStatement(
            actions=["batch:CancelJob", "batch:TerminateJob"],
            resources=[jobs_arn],
            conditions={"StringEquals": {f"aws:ResourceTag/{PIPELINE_TAG}": queue_name}},
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
