"""The typed seam between the run engine and a Batch backend.

:class:`BatchApi` is the subset of boto3's Batch client the engine calls, with boto3's method
names and the request and response TypedDicts of the ``mypy-boto3-batch`` stubs. A boto3 client
satisfies it as it is; :class:`pipeline.local.LocalBatch` implements the same methods with the
same types, and mypy (strict) checks both against this protocol (see the bottom of this file),
so a local backend that drifts from boto3's shapes fails type-checking, not a production run.

The stubs are a development dependency: they are imported for type-checking only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, Unpack

if TYPE_CHECKING:
    from mypy_boto3_batch.type_defs import (
        CancelJobRequestTypeDef,
        DescribeComputeEnvironmentsRequestTypeDef,
        DescribeComputeEnvironmentsResponseTypeDef,
        DescribeJobDefinitionsRequestTypeDef,
        DescribeJobDefinitionsResponseTypeDef,
        DescribeJobQueuesRequestTypeDef,
        DescribeJobQueuesResponseTypeDef,
        DescribeJobsRequestTypeDef,
        DescribeJobsResponseTypeDef,
        GetJobQueueSnapshotRequestTypeDef,
        GetJobQueueSnapshotResponseTypeDef,
        JobDetailTypeDef,
        JobSummaryTypeDef,
        ListJobsRequestTypeDef,
        ListJobsResponseTypeDef,
        SubmitJobRequestTypeDef,
        SubmitJobResponseTypeDef,
        TerminateJobRequestTypeDef,
    )

    __all__ = [
        "BatchApi",
        "JobDetailTypeDef",
        "JobSummaryTypeDef",
        "LogReader",
        "SubmitJobRequestTypeDef",
    ]


class BatchApi(Protocol):
    """The Batch methods the run engine calls, with boto3's names and shapes."""

    def submit_job(self, **kwargs: Unpack[SubmitJobRequestTypeDef]) -> SubmitJobResponseTypeDef: ...

    def describe_jobs(
        self, **kwargs: Unpack[DescribeJobsRequestTypeDef]
    ) -> DescribeJobsResponseTypeDef: ...

    def list_jobs(self, **kwargs: Unpack[ListJobsRequestTypeDef]) -> ListJobsResponseTypeDef: ...

    def terminate_job(self, **kwargs: Unpack[TerminateJobRequestTypeDef]) -> dict[str, Any]: ...

    def cancel_job(self, **kwargs: Unpack[CancelJobRequestTypeDef]) -> dict[str, Any]: ...

    def describe_job_queues(
        self, **kwargs: Unpack[DescribeJobQueuesRequestTypeDef]
    ) -> DescribeJobQueuesResponseTypeDef: ...

    def describe_compute_environments(
        self, **kwargs: Unpack[DescribeComputeEnvironmentsRequestTypeDef]
    ) -> DescribeComputeEnvironmentsResponseTypeDef: ...

    def describe_job_definitions(
        self, **kwargs: Unpack[DescribeJobDefinitionsRequestTypeDef]
    ) -> DescribeJobDefinitionsResponseTypeDef: ...

    def get_job_queue_snapshot(
        self, **kwargs: Unpack[GetJobQueueSnapshotRequestTypeDef]
    ) -> GetJobQueueSnapshotResponseTypeDef: ...


LogReader = Callable[[str, "str | None"], list[str]]
"""(job ID, log stream name) -> the last lines of that attempt's log."""


if TYPE_CHECKING:
    from mypy_boto3_batch import BatchClient

    def _a_boto3_client_is_a_batch_api(client: BatchClient) -> BatchApi:
        """mypy checks this: boto3's Batch client, as its stubs type it, fits the protocol."""
        return client
