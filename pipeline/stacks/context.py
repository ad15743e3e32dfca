"""Reads ArrayJobPipeline props from CDK context (cdk.json, ``-c key=value``)."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from aws_cdk import RemovalPolicy, TimeZone
from aws_cdk import aws_scheduler as scheduler

from pipeline.constructs.pipeline import ArrayJobPipelineProps
from pipeline.errors import PipelineConfigError


def pipeline_props_from_context(get: Callable[[str], Any]) -> ArrayJobPipelineProps:
    """Props from ``pipeline:*`` context keys; empty or missing keys keep the defaults.

    ``-c`` values arrive as strings, cdk.json values as JSON types; both are accepted.
    """
    props: ArrayJobPipelineProps = {}
    if (prefix := get("pipeline:namePrefix")) not in (None, ""):
        props["name_prefix"] = str(prefix)
    if (size := get("pipeline:arraySize")) not in (None, ""):
        props["array_size"] = _int("pipeline:arraySize", size)
    if (vcpus := get("pipeline:maxvCpus")) not in (None, ""):
        props["max_vcpus"] = _int("pipeline:maxvCpus", vcpus)
    if (spot := get("pipeline:spot")) not in (None, ""):
        props["spot"] = _bool("pipeline:spot", spot)
    if email := get("pipeline:notificationEmail"):
        props["notification_email"] = str(email)
    if schedule := get("pipeline:runSchedule"):
        props["run_schedule"] = _schedule(str(schedule), get("pipeline:runScheduleTimeZone"))
    elif get("pipeline:runScheduleTimeZone"):
        raise PipelineConfigError(
            "context pipeline:runScheduleTimeZone needs pipeline:runSchedule; set both, or neither"
        )
    if (upload := get("pipeline:runOnUpload")) not in (None, ""):
        props["run_on_upload"] = _bool("pipeline:runOnUpload", upload)
    if (overlap := get("pipeline:allowOverlappingRuns")) not in (None, ""):
        props["allow_overlapping_runs"] = _bool("pipeline:allowOverlappingRuns", overlap)
    if (limit := get("pipeline:triggerMaxVcpuHours")) not in (None, ""):
        try:
            props["trigger_max_vcpu_hours"] = float(limit)
        except (TypeError, ValueError):
            raise PipelineConfigError(
                f"context pipeline:triggerMaxVcpuHours must be a number; got {limit!r}"
            ) from None
    if (plain := get("pipeline:plainRequests")) not in (None, ""):
        props["plain_requests"] = _bool("pipeline:plainRequests", plain)
    destroy = get("pipeline:destroyDataOnDelete")
    if destroy not in (None, "") and _bool("pipeline:destroyDataOnDelete", destroy):
        props["removal_policy"] = RemovalPolicy.DESTROY
    return props


def _int(key: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PipelineConfigError(f"context {key} must be a whole number; got {value!r}") from None


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise PipelineConfigError(f"context {key} must be true or false; got {value!r}")


_SCHEDULE = re.compile(r"^(cron|rate)\(.+\)$")


def _schedule(expression: str, time_zone: Any) -> scheduler.ScheduleExpression:
    """``cron(...)`` or ``rate(...)`` as EventBridge Scheduler writes them, in an IANA time
    zone (default UTC)."""
    if not _SCHEDULE.fullmatch(expression.strip()):
        raise PipelineConfigError(
            f"context pipeline:runSchedule must be an EventBridge Scheduler expression like "
            f"'cron(0 2 * * ? *)' or 'rate(6 hours)'; got {expression!r}"
        )
    zone = str(time_zone or "UTC")
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise PipelineConfigError(
            f"context pipeline:runScheduleTimeZone {zone!r} is not an IANA time zone (like "
            "Europe/London or America/New_York)"
        ) from None
    return scheduler.ScheduleExpression.expression(expression.strip(), TimeZone.of(zone))
