"""The run a job program belongs to, as its environment describes it (see
:mod:`pipeline.contract`), and which array child it is."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import contract
from pipeline.batch_facts import ARRAY_INDEX_VARIABLE, JOB_ID_VARIABLE
from pipeline.jobs.aws_calls import JobError, make_client, reporting

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class RunContext:
    """The run as the environment describes it."""

    run_id: str
    array_size: int
    input_bucket: str
    cpu_results_bucket: str
    memory_results_bucket: str
    output_bucket: str
    metadata_table: str
    notification_topic_arn: str
    max_object_bytes: int = contract.DEFAULT_MAX_OBJECT_BYTES
    input_prefix: str = ""
    """Only BucketA's objects under this prefix are the run's inputs."""
    link_expiry_seconds: int = contract.DEFAULT_LINK_EXPIRY_SECONDS
    retry_rejected: str = ""
    """The token of a retry of the run's rejected objects (``resume --rejected``), if this
    job is one's."""

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        describe_job: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> RunContext:
        """The run from the job's environment; a job submitted without the run id (a plain
        request, as the User Guide writes them) finds it with ``describe_job`` (DescribeJobs,
        by default): see :func:`run_id_of`."""
        env = os.environ if env is None else env

        def need(name: str) -> str:
            value = env.get(name, "")
            if not value:
                raise JobError(
                    f"environment variable {name} is not set; submit runs with "
                    "`python -m pipeline.submit`, which sets it"
                )
            return value

        def number(name: str, default: int) -> int:
            raw = env.get(name) or str(default)
            if not raw.isdigit() or int(raw) < 1:
                raise JobError(
                    f"environment variable {name} must be a positive whole number; got {raw!r}"
                )
            return int(raw)

        return cls(
            run_id=run_id_of(env, describe_job or _describe_job),
            array_size=number(contract.ARRAY_SIZE, 0) if need(contract.ARRAY_SIZE) else 0,
            input_bucket=need(contract.INPUT_BUCKET),
            cpu_results_bucket=need(contract.CPU_RESULTS_BUCKET),
            memory_results_bucket=need(contract.MEMORY_RESULTS_BUCKET),
            output_bucket=need(contract.OUTPUT_BUCKET),
            metadata_table=need(contract.METADATA_TABLE),
            notification_topic_arn=need(contract.NOTIFICATION_TOPIC_ARN),
            max_object_bytes=number(contract.MAX_OBJECT_BYTES, contract.DEFAULT_MAX_OBJECT_BYTES),
            input_prefix=input_prefix(env.get(contract.INPUT_PREFIX, "")),
            link_expiry_seconds=min(
                number(contract.LINK_EXPIRY_SECONDS, contract.DEFAULT_LINK_EXPIRY_SECONDS),
                contract.MAX_LINK_EXPIRY_SECONDS,
            ),
            retry_rejected=env.get(contract.RETRY_REJECTED, ""),
        )


MAX_CHAIN = 20
"""Most jobs followed back through ``dependsOn`` to find a plain request's run."""


def run_id_of(env: Mapping[str, str], describe_job: Callable[[str], Mapping[str, Any]]) -> str:
    """The run a job belongs to: the run id the submitter set (``PIPELINE_RUN_ID``), or, for a
    job submitted without it, the job ID of the first job of its ``dependsOn`` chain (JobA's),
    followed back from the job's own ID with DescribeJobs. Each plain run is so named after
    its JobA, and two at once never share a run id."""
    given = env.get(contract.RUN_ID, "")
    if given:
        return given
    job_id = env.get(JOB_ID_VARIABLE, "").split(":")[0]
    if not job_id:
        raise JobError(
            f"environment variable {contract.RUN_ID} is not set and this is not an AWS Batch "
            f"job (no {JOB_ID_VARIABLE}) to find the run from; submit runs with "
            "`python -m pipeline.submit`, which sets it"
        )
    for _ in range(MAX_CHAIN):
        earlier = [d.get("jobId", "") for d in describe_job(job_id).get("dependsOn") or []]
        earlier = [e for e in earlier if e]
        if not earlier:
            return job_id
        job_id = earlier[0].split(":")[0]  # an array child's ID is <parent>:<index>
    raise JobError(f"job {job_id}'s dependsOn chain is longer than {MAX_CHAIN} jobs")


def _describe_job(job_id: str) -> Mapping[str, Any]:
    """DescribeJobs of one job (the job role's batch:DescribeJobs)."""
    with reporting(
        f"DescribeJobs {job_id} (to find the run of a request without {contract.RUN_ID})"
    ):
        found = make_client("batch").describe_jobs(jobs=[job_id])["jobs"]
    if not found:
        raise JobError(f"DescribeJobs {job_id}: no such job, so its run cannot be found")
    return dict(found[0])


def input_prefix(value: str) -> str:
    try:
        return contract.check_input_prefix(value)
    except ValueError as error:
        raise JobError(f"environment variable {contract.INPUT_PREFIX}: {error}") from None


def array_index(env: Mapping[str, str] | None = None, *, size: int | None = None) -> int:
    """This child's index in the original array, checked against the array size.

    Normally ``AWS_BATCH_JOB_ARRAY_INDEX``. A re-run of only the failed children
    (``resume --failed-only``) is a smaller array, or a standard job for a single child, with
    ``PIPELINE_INDEX_MAP`` listing the original indices: child k does original index map[k].
    """
    env = os.environ if env is None else env
    raw = env.get(ARRAY_INDEX_VARIABLE, "")
    mapped = env.get(contract.INDEX_MAP, "")
    if mapped:
        try:
            originals = [int(i) for i in mapped.split(",")]
        except ValueError:
            raise JobError(f"{contract.INDEX_MAP}={mapped!r} is not a list of indices") from None
        if not raw and len(originals) == 1:
            index = originals[0]
        elif raw.isdigit() and int(raw) < len(originals):
            index = originals[int(raw)]
        else:
            raise JobError(
                f"{ARRAY_INDEX_VARIABLE}={raw!r} does not select one of {contract.INDEX_MAP}="
                f"{mapped!r}"
            )
    elif raw.isdigit():
        index = int(raw)
    else:
        raise JobError(
            f"{ARRAY_INDEX_VARIABLE} is {raw!r}; this program runs as an array child, whose "
            "index AWS Batch sets"
        )
    if size is not None and index >= size:
        raise JobError(f"array index {index} is outside the array of {size}")
    return index
