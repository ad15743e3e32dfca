"""Small steps over :class:`helpers.batch.EngineBatch` for the run layer's tests: submit one job
of the deployed pipeline by its key, set the test's clock in milliseconds from its start, and
see what the code under test asked of Batch. Nothing here decides how a job ends or what Batch
answers: the engine does (dependencies, array parents, retries, pages)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from helpers.batch import EPOCH, EngineBatch
from pipeline.spec import RUN_TAG


def submit(
    aws: EngineBatch,
    key: str,
    *,
    run_id: str | None = None,
    size: int | None = None,
    depends_on: Sequence[Mapping[str, str]] = (),
    queue: str | None = None,
    tags: Mapping[str, str] | None = None,
    **request: Any,
) -> str:
    """SubmitJob (through the test's own client) of a job named ``key`` on the pipeline's
    definition of it, tagged with ``run_id`` (propagated to an array's children), an array of
    ``size`` children if given; ``request`` adds SubmitJob fields. Returns the job's ID."""
    body: dict[str, Any] = {
        "jobName": key,
        "jobQueue": queue or aws.queue_arn,
        "jobDefinition": aws.definition_arns[key],
        "tags": {**({RUN_TAG: run_id} if run_id else {}), **(tags or {})},
        "propagateTags": True,
        **request,
    }
    if size is not None:
        body["arrayProperties"] = {"size": size}
    if depends_on:
        body["dependsOn"] = [dict(d) for d in depends_on]
    return str(aws.reader.submit_job(**body)["jobId"])


def at(aws: EngineBatch, ms: int) -> None:
    """The test's clock reads ``ms`` milliseconds after its start (:data:`helpers.batch.EPOCH`)."""
    # (half a millisecond more: the engine truncates seconds x 1000, and a float a little under
    # the millisecond would read one less)
    aws.clock.now = (EPOCH * 1000 + ms + 0.5) / 1000


def ms(since_start: int) -> int:
    """The time Batch reports (ms since the epoch) ``since_start`` ms after the clock's start."""
    return round(EPOCH * 1000) + since_start


def sent(client: Any, *operations: str) -> list[tuple[str, dict[str, Any]]]:
    """Every call of ``operations`` made through ``client`` from now on, as (operation,
    parameters), in a list that fills as they are made."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((str(model.name), dict(params)))

    for operation in operations:
        client.meta.events.register(f"before-parameter-build.batch.{operation}", record)
    return calls


def sizes(calls: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """How many job IDs each recorded DescribeJobs call asked for."""
    return [len(params["jobs"]) for name, params in calls if name == "DescribeJobs"]
