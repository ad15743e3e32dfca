"""A moto world for the job programs: the pipeline's buckets, table and topic, a sample input,
and a queue subscribed to the topic to read the notifications."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto import mock_aws

from pipeline import contract
from pipeline.jobs import job_a, job_b, job_c, job_d, job_e
from pipeline.jobs.aws_calls import S3_CONFIG
from pipeline.jobs.run_context import RunContext
from pipeline.local.sample import ODD_KEYS as ODD_KEYS
from pipeline.local.sample import sample_objects
from pipeline.steps import DEFAULT_STEPS, PipelineSteps

REGION = "us-east-1"
MAX_OBJECT_BYTES = 128 * 1024


@dataclass
class World:
    s3: Any
    dynamodb: Any
    sns: Any
    sqs: Any
    queue_url: str
    ctx: RunContext
    steps: PipelineSteps = DEFAULT_STEPS
    """The work the stages run (as their job definitions would set it)."""

    def put_inputs(self, objects: dict[str, bytes]) -> None:
        for key, body in objects.items():
            self.s3.put_object(Bucket=self.ctx.input_bucket, Key=key, Body=body)

    def run_through_c(self, *, workers: int = 1) -> None:
        """A -> B[i] -> C[i], in process, as Batch would order them."""
        job_a.run(self.s3, self.ctx)
        for shard in range(self.ctx.array_size):
            job_b.run(self.s3, self.ctx, shard, workers, step=self.steps.cpu)
        for shard in range(self.ctx.array_size):
            job_c.run(
                self.s3,
                self.dynamodb,
                self.ctx,
                shard,
                step=self.steps.memory,
                sleep=lambda _: None,
            )

    def run_until_e(self, *, workers: int = 1) -> None:
        """A -> B[i] -> C[i] -> D[0..9]."""
        self.run_through_c(workers=workers)
        for step in range(contract.VALIDATION_STEPS):
            job_d.run(
                self.s3,
                self.dynamodb,
                self.ctx,
                step,
                checks=self.steps.checks,
                max_rejected_share=self.steps.max_rejected_share,
                allow_empty_runs=self.steps.allow_empty_runs,
            )

    def object_reads(self) -> list[str]:
        """The keys of the GetObject calls made from now on, in order."""
        reads: list[str] = []
        self.s3.meta.events.register(
            "before-parameter-build.s3.GetObject", lambda params, **_: reads.append(params["Key"])
        )
        return reads

    def run_all(self, *, workers: int = 1) -> None:
        """A..D, then E."""
        self.run_until_e(workers=workers)
        self.run_e(recipient="ops@example.com")

    def run_e(self, *, recipient: str | None = None) -> dict[str, Any]:
        """JobE over the run's output bucket, as the deployed pipeline passes its
        parameters; what it returns (what its program logs)."""
        return job_e.run(
            self.s3,
            self.sns,
            self.dynamodb,
            self.ctx,
            source_bucket=self.ctx.output_bucket,
            recipient=recipient,
            aggregate=self.steps.aggregate,
        )

    def get_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        return [
            o["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]

    def items(self) -> list[dict[str, Any]]:
        paginator = self.dynamodb.get_paginator("query")
        return [
            item
            for page in paginator.paginate(
                TableName=self.ctx.metadata_table,
                KeyConditionExpression="run_id = :r",
                ExpressionAttributeValues={":r": {"S": self.ctx.run_id}},
            )
            for item in page["Items"]
        ]

    def notifications(self) -> list[dict[str, Any]]:
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def sample_inputs(count: int, seed: int = 7) -> dict[str, bytes]:
    """The local run's sample generator, with this world's size limit."""
    return sample_objects(count, max_object_bytes=MAX_OBJECT_BYTES, seed=seed)


@contextmanager
def jobs_world(array_size: int = 4, run_id: str = "20261125T000000-test01") -> Iterator[World]:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        s3 = session.client("s3", config=S3_CONFIG)
        names = {
            "input": "pipeline-input",
            "cpu": "pipeline-cpu-results",
            "memory": "pipeline-memory-results",
            "output": "pipeline-output",
        }
        for bucket in names.values():
            s3.create_bucket(Bucket=bucket)
        dynamodb = session.client("dynamodb")
        dynamodb.create_table(
            TableName="pipeline-metadata",
            BillingMode="PAY_PER_REQUEST",
            **contract.table_keys(),  # type: ignore[arg-type]
        )
        sns = session.client("sns")
        topic = sns.create_topic(Name="pipeline-notifications")["TopicArn"]
        sqs = session.client("sqs")
        queue_url = sqs.create_queue(QueueName="notifications")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        ctx = RunContext(
            run_id=run_id,
            array_size=array_size,
            input_bucket=names["input"],
            cpu_results_bucket=names["cpu"],
            memory_results_bucket=names["memory"],
            output_bucket=names["output"],
            metadata_table="pipeline-metadata",
            notification_topic_arn=topic,
            max_object_bytes=MAX_OBJECT_BYTES,
        )
        yield World(s3, dynamodb, sns, sqs, queue_url, ctx)
