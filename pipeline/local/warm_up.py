"""What the engine's fork server loads and does before its first fork, for this pipeline's jobs:
the job programs and their libraries imported, and the clients they make built and their
first calls rehearsed, so that each of thousands of children shares them instead of building
them (a child would otherwise spend about 20 ms on its clients alone).

The local deployment hands these to the engine (:mod:`pipeline.local.deployment`); the engine
knows none of them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pipeline.local.batch.in_process import answer

PRELOADED = (
    "boto3",
    "botocore.session",
    "pipeline.jobs.aws_calls",
    "pipeline.jobs.bucket_io",
    "pipeline.jobs.program",
    "pipeline.jobs.run_context",
    "pipeline.jobs.job_a",
    "pipeline.jobs.job_b",
    "pipeline.jobs.job_c",
    "pipeline.jobs.job_d",
    "pipeline.jobs.job_e",
    "pipeline.jobs.runner",
    "pipeline.jobs.default_steps",
)
"""The modules the job programs run, imported once in the fork server."""
WARM_UP = f"{__name__}:warm_up"

Call = tuple[str, dict[str, Any], int, bytes]
REHEARSED: dict[str, tuple[Call, ...]] = {
    "s3": (
        ("get_object", {"Bucket": "b", "Key": "k"}, 404, b"<Error><Code>NoSuchKey</Code></Error>"),
        ("put_object", {"Bucket": "b", "Key": "k", "Body": b"{}"}, 200, b""),
    ),
    "dynamodb": (
        (
            "batch_write_item",
            {"RequestItems": {"t": [{"PutRequest": {"Item": {"k": {"S": "v"}}}}]}},
            200,
            b'{"UnprocessedItems": {}}',
        ),
    ),
    "sns": (),
}
"""The clients the job programs make, and the calls they make most."""


def warm_up() -> None:
    """Make the clients the job programs make (``pipeline.jobs.aws_calls.make_client``) in
    this process's environment, which is the jobs', and rehearse their first calls. A child
    asking for the same client in the same client environment gets it instead of building
    one; a client holds no connection until used, and none is used here, so every child
    opens its own."""
    from pipeline.jobs.aws_calls import make_client

    for service, calls in REHEARSED.items():
        rehearse(make_client(service), calls)


def rehearse(client: Any, calls: tuple[Call, ...]) -> None:
    """Make ``calls`` once, answered here (botocore's ``before-send`` event) instead of sent:
    what a client builds on its first call of an operation (endpoint rules, serializer,
    signer, parser) is then built once, here, and not in every child."""
    answers: list[tuple[int, bytes]] = []

    def canned(request: Any, **_: Any) -> Any:
        status, body = answers[0]
        return answer(request.url, status, {"ETag": '"r"'}, body)

    client.meta.events.register_first("before-send", canned, unique_id="fork-server-rehearsal")
    try:
        for operation, parameters, status, body in calls:
            answers[:] = [(status, body)]
            with contextlib.suppress(Exception):
                getattr(client, operation)(**parameters)
    finally:
        client.meta.events.unregister("before-send", unique_id="fork-server-rehearsal")
