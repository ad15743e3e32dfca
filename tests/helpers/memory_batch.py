"""An in-memory Batch with boto3's method names and shapes, for the run engine's tests: jobs it
accepted keep the status a test gives them; stops are recorded, not applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.spec import RUN_TAG


class MemoryBatch:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.stops: list[tuple[str, str, str]] = []

    def submit_job(self, **request: Any) -> dict[str, Any]:
        job_id = f"{request['tags'][RUN_TAG]}-{request['jobName']}-{len(self.jobs)}"
        self.jobs[job_id] = {
            "jobId": job_id,
            "jobName": request["jobName"],
            "status": "SUBMITTED",
            "createdAt": len(self.jobs),
            "tags": dict(request["tags"]),
            "parameters": dict(request.get("parameters") or {}),
            "container": {"environment": request["containerOverrides"]["environment"]},
            **(
                {"arrayProperties": request["arrayProperties"]}
                if "arrayProperties" in request
                else {}
            ),
        }
        return {"jobId": job_id, "jobName": request["jobName"]}

    def set(self, run_id: str, **states: str) -> None:
        for job in self.jobs.values():
            if job["tags"][RUN_TAG] == run_id and job["jobName"] in states:
                job["status"] = states[job["jobName"]]

    def describe_jobs(self, *, jobs: list[str]) -> dict[str, Any]:
        return {"jobs": [self.jobs[j] for j in jobs if j in self.jobs]}

    def list_jobs(self, **request: Any) -> dict[str, Any]:
        if "arrayJobId" in request:
            return {"jobSummaryList": []}
        assert request["jobQueue"] == "ProdQueue", "the pipeline's queue is ProdQueue"
        (name,) = request["filters"][0]["values"]
        return {
            "jobSummaryList": [
                {"jobId": j["jobId"], "jobName": j["jobName"]}
                for j in self.jobs.values()
                if j["jobName"] == name
            ]
        }

    def cancel_job(self, *, jobId: str, reason: str) -> dict[str, Any]:  # noqa: N803
        self.stops.append(("cancel", jobId, reason))
        return {}

    def terminate_job(self, *, jobId: str, reason: str) -> dict[str, Any]:  # noqa: N803
        self.stops.append(("terminate", jobId, reason))
        return {}

    def describe_job_queues(self, **_: Any) -> dict[str, Any]:
        return {"jobQueues": [{"jobQueueName": "ProdQueue", "computeEnvironmentOrder": []}]}

    def describe_compute_environments(self, **_: Any) -> dict[str, Any]:
        return {"computeEnvironments": []}


@dataclass
class Session:
    batch: MemoryBatch = field(default_factory=MemoryBatch)
    settle: bool = False
    reads: list[str | None] = field(default_factory=list)

    def read_log(self, job_id: str, log_stream: str | None) -> list[str]:
        self.reads.append(job_id)
        return ["the last line"]

    def read_attempt(
        self, attempt: Any, *, cursor: Any = None, tail: int | None = None
    ) -> tuple[list[str], Any]:
        self.reads.append(attempt.job_id)
        return [], cursor
