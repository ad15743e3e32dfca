"""The AWS services of a local run: moto's server on a free loopback port, with the pipeline's
buckets, table and topic, and what the topic sent captured through a queue.

The server is a process of its own (:mod:`pipeline.local.server`), started for the run and
ended with it, so its state is the run's only.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipeline.local.server import STATS_PATH
from pipeline.spec import (
    BUCKET_KEYS,
    JOB_IMAGES_DIR,
    MAX_OBJECT_BYTES,
    RESOURCES,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
)

LOCAL_MAX_OBJECT_BYTES = 1024 * 1024
"""The local size limit, so the sample's oversize object is rejected as a real one would be."""
REGION = "us-east-1"
ACCOUNT = "123456789012"
"""moto's default account: the local resources' ARNs carry it."""
STACK = "arrayjobpipeline"


def resource_names(stack: str = STACK) -> dict[str, str]:
    """Names (and the topic's ARN) of the local buckets, table and topic, derived from the
    stack name as CloudFormation derives the deployed ones (without its random suffix)."""
    names = {r.key: f"{stack}-{r.key.replace('_', '-')}-local" for r in RESOURCES}
    names["notification_topic"] = f"arn:aws:sns:{REGION}:{ACCOUNT}:{names['notification_topic']}"
    return names


def job_environment(endpoint: str) -> dict[str, str]:
    """What every local job process gets besides its definition's environment: this
    machine's environment with AWS pointed at the local server and the job programs
    importable as in the image."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(JOB_IMAGES_DIR),
    )
    env[MAX_OBJECT_BYTES] = str(LOCAL_MAX_OBJECT_BYTES)
    return env


@dataclass
class LocalAws:
    """moto's server and the pipeline's resources on it."""

    endpoint: str
    names: dict[str, str]
    queue_url: str
    clients: dict[str, Any]

    def seed(self, inputs: Mapping[str, bytes]) -> None:
        """Put the run's input objects into BucketA."""
        for key, body in inputs.items():
            self.clients["s3"].put_object(Bucket=self.names["input_bucket"], Key=key, Body=body)

    def notifications(self) -> list[dict[str, Any]]:
        sqs = self.clients["sqs"]
        response = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in response.get("Messages", [])]


@contextmanager
def local_aws() -> Iterator[LocalAws]:
    """Start moto's server (:mod:`pipeline.local.server`, a process of its own) on a free
    loopback port with the pipeline's resources; stop it at the end, whatever happens."""
    import boto3

    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.local.server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the command, which stops it
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            raise RuntimeError("the embedded AWS services did not start (pipeline.local.server)")
        endpoint = f"http://127.0.0.1:{json.loads(line)['port']}"
        session = boto3.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION
        )
        clients: dict[str, Any] = {
            name: session.client(name, endpoint_url=endpoint)
            for name in ("s3", "dynamodb", "sns", "sqs")
        }
        names = resource_names()
        for key in BUCKET_KEYS:
            clients["s3"].create_bucket(Bucket=names[key])
        clients["dynamodb"].create_table(
            TableName=names["metadata_table"],
            KeySchema=[
                {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
                {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": TABLE_PARTITION_KEY, "AttributeType": "S"},
                {"AttributeName": TABLE_SORT_KEY, "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        topic_name = names["notification_topic"].rsplit(":", 1)[1]
        topic_arn = clients["sns"].create_topic(Name=topic_name)["TopicArn"]
        assert topic_arn == names["notification_topic"], topic_arn
        # What an email subscriber would receive, captured through a queue.
        queue_url = clients["sqs"].create_queue(QueueName="notifications")["QueueUrl"]
        queue_arn = clients["sqs"].get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        clients["sns"].subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        yield LocalAws(endpoint, names, queue_url, clients)
    finally:
        with contextlib.suppress(OSError):
            assert server.stdin is not None
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def server_stats(endpoint: str) -> dict[str, float]:
    """Requests the local server has answered, and the seconds it spent on them."""
    with urllib.request.urlopen(f"{endpoint}{STATS_PATH}", timeout=10) as response:
        return dict(json.loads(response.read()))
