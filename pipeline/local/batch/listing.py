"""ListJobs' filters, as the API Reference describes them (``filters`` of ListJobs):
JOB_NAME (case-insensitive, a trailing ``*`` matches a prefix), JOB_DEFINITION (a name, with
``*`` as a prefix, or a revision's ARN), BEFORE_CREATED_AT and AFTER_CREATED_AT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.batch_facts import pattern_matches
from pipeline.local.batch.exceptions import BatchClientError
from pipeline.local.batch.job import Job


def filtered(jobs: list[Job], entry: Mapping[str, Any]) -> list[Job]:
    name = entry.get("name")
    values = [str(v) for v in entry.get("values") or []]
    if name == "JOB_NAME":  # "a case-insensitive match for the job name"
        return [j for j in jobs if any(pattern_matches(v.lower(), j.name.lower()) for v in values)]
    if name == "JOB_DEFINITION":
        return [
            j
            for j in jobs
            if any(v == j.definition.arn or pattern_matches(v, j.definition.name) for v in values)
        ]
    if name in ("BEFORE_CREATED_AT", "AFTER_CREATED_AT"):
        if not all(v.isdigit() for v in values):
            raise BatchClientError(f"{name} takes milliseconds since the epoch; got {values}")
        before = name == "BEFORE_CREATED_AT"
        return [
            j
            for j in jobs
            if all((j.created_at < int(v)) if before else (j.created_at > int(v)) for v in values)
        ]
    raise BatchClientError(f"filter {name!r} is not valid")
