"""The local AWS Batch engine in this process, behind a boto3 Batch client: the same client,
request shapes and error codes as the endpoint serves over HTTP, without a socket or a
server process (the HTTP path is tested end to end elsewhere)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.local.batch.definitions import Place
from pipeline.local.batch.faults import Fault, FaultKey
from pipeline.local.batch.models import LocalBatch
from pipeline.local.batch.responses import BatchService
from pipeline.local.batch.scheduler import Scheduler
from pipeline.local.services import in_process_clients

TERMINAL = ("SUCCEEDED", "FAILED")


@dataclass
class LocalBatchHarness:
    backend: LocalBatch
    scheduler: Scheduler
    client: Any
    """A boto3 Batch client whose requests go to the engine in this process."""

    def register(
        self,
        name: str,
        command: Sequence[str],
        *,
        vcpus: float = 1,
        attempts: int = 1,
        rules: Sequence[Mapping[str, str]] = (),
        timeout: int | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> str:
        request: dict[str, Any] = {
            "jobDefinitionName": name,
            "type": "container",
            "containerProperties": {
                "image": "local",
                "command": list(command),
                "resourceRequirements": [
                    {"type": "VCPU", "value": f"{vcpus:g}"},
                    {"type": "MEMORY", "value": "128"},
                ],
            },
            "retryStrategy": {"attempts": attempts, "evaluateOnExit": list(rules)},
            "parameters": dict(parameters or {}),
        }
        if timeout:
            request["timeout"] = {"attemptDurationSeconds": timeout}
        return str(self.client.register_job_definition(**request)["jobDefinitionArn"])

    def submit(self, name: str, definition: str, queue: str = "Q", **request: Any) -> str:
        return str(
            self.client.submit_job(
                jobName=name, jobQueue=queue, jobDefinition=definition, **request
            )["jobId"]
        )

    def describe(self, job_id: str) -> dict[str, Any]:
        (job,) = self.client.describe_jobs(jobs=[job_id])["jobs"]
        return dict(job)

    def wait_for(
        self, job_id: str, statuses: Sequence[str] = TERMINAL, *, seconds: float = 60
    ) -> dict[str, Any]:
        """The job once its status is one of ``statuses``; fails, naming the job and what it
        waited for, after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            job = self.describe(job_id)
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, (
                f"job {job_id} was {job['status']} after {seconds} s, waiting for {statuses}"
            )
            time.sleep(0.02)

    def children(self, parent_id: str) -> list[dict[str, Any]]:
        size = self.describe(parent_id)["arrayProperties"]["size"]
        ids = [f"{parent_id}:{i}" for i in range(size)]
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 100):
            found += self.client.describe_jobs(jobs=ids[start : start + 100])["jobs"]
        return sorted(found, key=lambda c: c["arrayProperties"]["index"])


class ManualClock:
    """A clock that moves only when told to: a timeout passes when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def local_batch(
    work: Path,
    *,
    vcpus: int = 2,
    queue: str = "Q",
    faults: Mapping[FaultKey, Fault] | None = None,
    fork: bool = True,
    environment: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[LocalBatchHarness]:
    """An engine with one compute environment and one queue, ``queue``; its scheduler measures
    timeouts with ``clock``."""
    import os

    backend = LocalBatch(Place("123456789012", "us-east-1"), faults=faults)
    service = BatchService(backend)
    client = in_process_clients(service, ("batch",))["batch"]
    client.create_compute_environment(computeEnvironmentName="local", type="UNMANAGED")
    client.create_job_queue(
        jobQueueName=queue,
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "local"}],
    )
    scheduler = Scheduler(
        backend,
        environment=dict(os.environ if environment is None else environment),
        work=work,
        vcpu_budget=vcpus,
        fork=fork,
        clock=clock,
    )
    try:
        yield LocalBatchHarness(backend, scheduler, client)
    finally:
        scheduler.close()


PYTHON = sys.executable
