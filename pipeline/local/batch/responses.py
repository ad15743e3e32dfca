"""AWS Batch's wire protocol (REST-JSON) in front of the local backend, so that botocore, the
AWS CLI and any SDK talk to it unchanged: each operation is a POST of a JSON body to its
path (``/v1/submitjob``), tags are ``/v1/tags/{resourceArn}``, and an error is a 4xx with its
code in ``x-amzn-ErrorType`` and ``{"__type", "message"}`` as the body.

Paths and operation names come from botocore's model of the service, so an operation this
endpoint does not serve is answered, as AWS answers an unknown operation, with
``UnknownOperationException`` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any
from urllib.parse import parse_qs

from pipeline.local.batch.checks import check_types
from pipeline.local.batch.exceptions import BatchClientError, BatchError, UnknownOperationError
from pipeline.local.batch.journal import REGISTRY_CALLS, Journal
from pipeline.local.batch.models import LocalBatch

Handler = Callable[[dict[str, Any]], dict[str, Any]]
TAGS_PATH = "/v1/tags/"


@cache
def operations_by_path() -> dict[tuple[str, str], str]:
    """(HTTP method, path) -> operation name, from botocore's model of AWS Batch."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("batch")
    routes: dict[tuple[str, str], str] = {}
    for name in model.operation_names:
        http = model.operation_model(name).http
        routes[(http["method"], http["requestUri"].split("{")[0])] = name
    return routes


class BatchService:
    """The operations this endpoint serves, by name; each takes and returns the request and
    response JSON of the API. Registry changes are journaled (see :mod:`.journal`)."""

    def __init__(self, backend: LocalBatch, journal: Journal | None = None) -> None:
        self.backend = backend
        self.journal = journal
        registry = backend.registry
        self.handlers: dict[str, Handler] = {
            "SubmitJob": backend.submit_job,
            "DescribeJobs": backend.describe_jobs,
            "ListJobs": backend.list_jobs,
            "CancelJob": backend.cancel_job,
            "TerminateJob": backend.terminate_job,
            "GetJobQueueSnapshot": backend.get_job_queue_snapshot,
            "TagResource": backend.tag_resource,
            "UntagResource": backend.untag_resource,
            "ListTagsForResource": backend.list_tags_for_resource,
            "CreateComputeEnvironment": registry.create_compute_environment,
            "UpdateComputeEnvironment": registry.update_compute_environment,
            "DeleteComputeEnvironment": registry.delete_compute_environment,
            "DescribeComputeEnvironments": registry.describe_compute_environments,
            "CreateJobQueue": registry.create_job_queue,
            "UpdateJobQueue": registry.update_job_queue,
            "DeleteJobQueue": backend.delete_job_queue,
            "DescribeJobQueues": registry.describe_job_queues,
            "RegisterJobDefinition": registry.register_job_definition,
            "DeregisterJobDefinition": registry.deregister_job_definition,
            "DescribeJobDefinitions": registry.describe_job_definitions,
        }

    @property
    def served(self) -> list[str]:
        return sorted(self.handlers)

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        handler = self.handlers.get(operation)
        if handler is None:
            raise UnknownOperationError(
                f"The local AWS Batch endpoint does not serve {operation}; it serves "
                f"{', '.join(self.served)}"
            )
        check_types(operation, request)
        with self.backend.lock:
            response = handler(request)
            if self.journal is not None and operation in REGISTRY_CALLS:
                self.journal.append_record("call", {"operation": operation, "request": request})
        return response

    def replay(self, operation: str, request: dict[str, Any]) -> None:
        """A journaled registry call, applied again (not journaled twice)."""
        handler = self.handlers[operation]
        handler(request)

    # --- HTTP -----------------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            operation, request = self._parse(environ)
            status, body = "200 OK", self.call(operation, request)
            headers = [("Content-Type", "application/json")]
        except BatchError as error:
            status = f"{error.status} {'Not Found' if error.status == 404 else 'Bad Request'}"
            body = {"__type": error.code, "message": error.message}
            headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error.code)]
        payload = json.dumps(body, separators=(",", ":")).encode()
        start_response(status, [*headers, ("Content-Length", str(len(payload)))])
        return [payload]

    def _parse(self, environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "/"))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            request: dict[str, Any] = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise BatchClientError("The request body is not JSON") from None
        if not isinstance(request, dict):
            raise BatchClientError("The request body must be a JSON object")
        if path.startswith(TAGS_PATH):
            arn = path[len(TAGS_PATH) :]
            request["resourceArn"] = arn
            name = {"GET": "ListTagsForResource", "POST": "TagResource"}.get(method)
            if method == "DELETE":
                name = "UntagResource"
                request["tagKeys"] = parse_qs(str(environ.get("QUERY_STRING", ""))).get(
                    "tagKeys", []
                )
            if name is None:
                raise UnknownOperationError(f"No AWS Batch operation is {method} {TAGS_PATH}...")
            return name, request
        name = operations_by_path().get((method, path.rstrip("/")))
        if name is None:
            raise UnknownOperationError(f"No AWS Batch operation is {method} {path}")
        return name, request
